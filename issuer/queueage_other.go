//go:build !linux

package issuer

import (
	"syscall"
	"time"
)

// kernelQueueAge is not known on this platform: the overload gate relies on the
// scheduling delay alone.
func kernelQueueAge(syscall.Conn) (time.Duration, bool) { return 0, false }
