//go:build !linux

package issuer

import "time"

// processCPUTime is not read on this platform: the overload gate steers by the
// queue signals alone.
func processCPUTime() (time.Duration, bool) { return 0, false }

// cgroupCPUQuota: no cgroups here.
func cgroupCPUQuota() (float64, time.Duration) { return 0, 0 }
