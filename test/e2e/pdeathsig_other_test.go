//go:build !linux

package e2e

import "os/exec"

// setPdeathsig does nothing where the kernel has no parent-death signal.
func setPdeathsig(*exec.Cmd) {}
