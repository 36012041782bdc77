package testredis

import (
	"os/exec"
	"syscall"
)

// setPdeathsig makes the kernel kill redis-server if the test binary dies
// without running its cleanups (e.g. a timeout panic or SIGKILL).
func setPdeathsig(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
