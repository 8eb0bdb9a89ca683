package testspire

import "syscall"

// supported reports whether Start can run SPIRE here (unix sockets, process groups).
const supported = true

// sysProcAttr puts a SPIRE process in its own process group (so stop can signal
// the group) and kills it when the test binary dies (for example on a test timeout),
// so nothing outlives the test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// signalGroup sends sig to the process group led by pid.
func signalGroup(pid int, sig syscall.Signal) error {
	return syscall.Kill(-pid, sig)
}
