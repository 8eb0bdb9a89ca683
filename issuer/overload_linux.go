//go:build linux

package issuer

import (
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// processCPUTime is the CPU time the process has used (all its threads, user and
// system).
func processCPUTime() (time.Duration, bool) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_PROCESS_CPUTIME_ID, &ts); err != nil {
		return 0, false
	}
	return time.Duration(ts.Nano()), true
}

// cgroupCPUQuota is the CPU quota of the process's cgroup and its ancestors, the
// least of them, in cores, and its period; 0 when there is none. It reads cgroup
// v2's cpu.max or v1's cpu.cfs_quota_us and cpu.cfs_period_us under the
// conventional mount points; a path that does not exist there (a container
// without its own cgroup namespace) falls back to its ancestors, down to the
// mount's root, which is then the container's own cgroup.
func cgroupCPUQuota() (float64, time.Duration) {
	return cgroupCPUQuotaAt("/proc/self/cgroup", "/sys/fs/cgroup")
}

// cgroupCPUQuotaAt is cgroupCPUQuota with the process's cgroup file and the
// cgroup mount root as arguments (tests).
func cgroupCPUQuotaAt(self, root string) (float64, time.Duration) {
	data, err := os.ReadFile(self)
	if err != nil {
		return 0, 0
	}
	best, bestPeriod := 0.0, time.Duration(0)
	consider := func(quota, period int64) {
		if quota <= 0 || period <= 0 {
			return
		}
		if cores := float64(quota) / float64(period); best == 0 || cores < best {
			best, bestPeriod = cores, time.Duration(period)*time.Microsecond
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		id, rest, _ := strings.Cut(line, ":")
		controllers, dir, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		if id == "0" && controllers == "" {
			forAncestors(dir, func(d string) {
				fields := strings.Fields(readCgroupFile(root + d + "/cpu.max"))
				if len(fields) == 2 {
					consider(cgroupInt(fields[0]), cgroupInt(fields[1]))
				}
			})
			continue
		}
		for _, c := range strings.Split(controllers, ",") {
			if c != "cpu" {
				continue
			}
			for _, mount := range []string{root + "/cpu", root + "/cpu,cpuacct", root + "/cpuacct,cpu"} {
				forAncestors(dir, func(d string) {
					consider(cgroupInt(readCgroupFile(mount+d+"/cpu.cfs_quota_us")), cgroupInt(readCgroupFile(mount+d+"/cpu.cfs_period_us")))
				})
			}
		}
	}
	return best, bestPeriod
}

// forAncestors calls f with dir and each of its ancestors, up to "/" ("" for the
// root, so that f can append a file name).
func forAncestors(dir string, f func(string)) {
	for d := path.Clean("/" + dir); ; d = path.Dir(d) {
		if d == "/" {
			f("")
			return
		}
		f(d)
	}
}

// readCgroupFile is the trimmed content of a small file, "" when it cannot be read.
func readCgroupFile(name string) string {
	b, err := os.ReadFile(name)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// cgroupInt is s as an integer; -1 when it is not one ("max", "").
func cgroupInt(s string) int64 {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return -1
	}
	return n
}
