//go:build linux

package issuer

import (
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// kernelQueueAge is how long ago the last data arrived on c's TCP socket
// (TCP_INFO last_data_recv, millisecond resolution): for a request just read, how
// long it waited in the kernel before the server got to it.
func kernelQueueAge(c syscall.Conn) (time.Duration, bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || gerr != nil {
		return 0, false
	}
	return time.Duration(info.Last_data_recv) * time.Millisecond, true
}
