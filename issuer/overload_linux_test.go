//go:build linux

package issuer

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestCgroupCPUQuota reads the least quota of the process's cgroup and its
// ancestors, under cgroup v2 and v1 layouts.
func TestCgroupCPUQuota(t *testing.T) {
	write := func(name, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name, self string
		files      map[string]string
		cores      float64
		period     time.Duration
	}{
		{"v2", "0::/kubepods/pod1/c1\n", map[string]string{
			"kubepods/cpu.max":         "max 100000\n",
			"kubepods/pod1/cpu.max":    "150000 100000\n",
			"kubepods/pod1/c1/cpu.max": "50000 100000\n",
		}, 0.5, 100 * time.Millisecond},
		{"v2 unlimited", "0::/a\n", map[string]string{"a/cpu.max": "max 100000\n"}, 0, 0},
		{"v2 without a namespace: the mount root is the container's", "0::/host/path\n", map[string]string{
			"cpu.max": "200000 100000\n",
		}, 2, 100 * time.Millisecond},
		{"v1", "4:memory:/x\n1:cpu,cpuacct:/overload\n0::/\n", map[string]string{
			"cpu,cpuacct/cpu.cfs_quota_us":           "-1\n",
			"cpu,cpuacct/cpu.cfs_period_us":          "100000\n",
			"cpu,cpuacct/overload/cpu.cfs_quota_us":  "5000\n",
			"cpu,cpuacct/overload/cpu.cfs_period_us": "10000\n",
		}, 0.5, 10 * time.Millisecond},
		{"none", "0::/\n", nil, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			write(filepath.Join(dir, "self"), c.self)
			for name, content := range c.files {
				write(filepath.Join(dir, "fs", name), content)
			}
			cores, period := cgroupCPUQuotaAt(filepath.Join(dir, "self"), filepath.Join(dir, "fs"))
			if cores != c.cores || period != c.period {
				t.Fatalf("got %v cores per %v, want %v per %v", cores, period, c.cores, c.period)
			}
		})
	}
	if _, ok := processCPUTime(); !ok {
		t.Fatal("no process CPU time")
	}
}
