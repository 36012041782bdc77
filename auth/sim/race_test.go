//go:build race

package sim

// ciSeeds under the race detector: it slows a schedule down about five
// times, so `go test -race ./...` explores a tenth of the CI budget (the
// data-race check needs interleavings, not thousands of schedules);
// scripts/test runs this package without -race for the full 2,000.
const ciSeeds = 200

// raceBuild: built with the race detector.
const raceBuild = true
