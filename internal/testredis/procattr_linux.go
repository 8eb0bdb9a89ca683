package testredis

import "syscall"

// sysProcAttr kills redis-server when the test binary dies (for example on a test
// timeout), so no server outlives its test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
