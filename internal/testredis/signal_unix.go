//go:build unix

package testredis

import (
	"os"
	"syscall"
)

// pauseSignals returns the signals that freeze and thaw a process.
func pauseSignals() (stop, cont os.Signal) { return syscall.SIGSTOP, syscall.SIGCONT }
