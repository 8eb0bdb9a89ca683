package testkube

import "syscall"

// supported reports whether Start can run the control plane here.
const supported = true

// sysProcAttr puts a process in its own process group (so stop can signal the
// group) and kills it when the test binary dies, so nothing outlives the test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

func signalGroup(pid int, sig syscall.Signal) error { return syscall.Kill(-pid, sig) }
