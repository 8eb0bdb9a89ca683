//go:build unix && !linux

package testbin

import "syscall"

const (
	// ProcessGroups reports whether Stop can signal a process's whole group.
	ProcessGroups = true
	// DiesWithParent reports whether a child dies with the test binary: there is
	// no Pdeathsig outside Linux, so a killed test binary can leave it running.
	DiesWithParent = false
)

// sysProcAttr puts a process in its own process group, so Stop can signal the
// group.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// signalGroup sends sig to the process group led by pid.
func signalGroup(pid int, sig syscall.Signal) error {
	return syscall.Kill(-pid, sig)
}
