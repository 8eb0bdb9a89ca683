//go:build unix && !linux

package testspire

import "syscall"

// supported reports whether Start can run SPIRE here (unix sockets, process groups).
const supported = true

// sysProcAttr puts a SPIRE process in its own process group, so stop can signal the
// group. Without Pdeathsig outside Linux, a killed test binary can leave it running.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// signalGroup sends sig to the process group led by pid.
func signalGroup(pid int, sig syscall.Signal) error {
	return syscall.Kill(-pid, sig)
}
