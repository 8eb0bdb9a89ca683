//go:build !unix

package testredis

import "os"

// pauseSignals returns nil: processes cannot be frozen on this platform.
func pauseSignals() (stop, cont os.Signal) { return nil, nil }
