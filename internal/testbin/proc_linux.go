package testbin

import "syscall"

const (
	// ProcessGroups reports whether Stop can signal a process's whole group.
	ProcessGroups = true
	// DiesWithParent reports whether a child dies with the test binary (for
	// example on a test timeout).
	DiesWithParent = true
)

// sysProcAttr puts a process in its own process group (so Stop can signal the
// group) and kills it when the test binary dies, so nothing outlives the test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// signalGroup sends sig to the process group led by pid.
func signalGroup(pid int, sig syscall.Signal) error {
	return syscall.Kill(-pid, sig)
}
