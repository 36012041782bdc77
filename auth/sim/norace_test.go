//go:build !race

package sim

// ciSeeds: the schedules CI explores (issue 21: at least 2,000).
const ciSeeds = 2000

// raceBuild: built with the race detector.
const raceBuild = false
