package e2e

import (
	"os/exec"
	"syscall"
)

// setPdeathsig makes the kernel kill lsproxy if the test binary dies without
// running its cleanups (a timeout panic or SIGKILL).
func setPdeathsig(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
