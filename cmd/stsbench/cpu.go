package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is the unit of utime and stime in /proc/PID/stat (USER_HZ, which Linux
// fixes at 100 for user space on every architecture Go supports).
const clockTick = 10 * time.Millisecond

// procCPU reads the CPU time (user + system, all threads) of another process.
type procCPU struct {
	pid  int
	name string
}

func newProcCPU(pid int) (*procCPU, error) {
	p := &procCPU{pid: pid}
	name, _, err := p.readStat()
	if err != nil {
		return nil, err
	}
	p.name = name
	return p, nil
}

// cpu returns the process's CPU time so far.
func (p *procCPU) cpu() (time.Duration, error) {
	_, d, err := p.readStat()
	return d, err
}

func (p *procCPU) readStat() (string, time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
	if err != nil {
		return "", 0, err
	}
	name, utime, stime, err := parseStat(string(data))
	if err != nil {
		return "", 0, fmt.Errorf("/proc/%d/stat: %w", p.pid, err)
	}
	return name, time.Duration(utime+stime) * clockTick, nil
}

// parseStat extracts the command name and the utime and stime fields (clock ticks)
// from a /proc/PID/stat line: "pid (comm) state ppid ... utime stime ...". comm may
// contain spaces and parentheses, so it runs from the first "(" to the last ")";
// utime and stime are the 14th and 15th fields, the 12th and 13th after comm.
func parseStat(line string) (name string, utime, stime uint64, err error) {
	open := strings.IndexByte(line, '(')
	end := strings.LastIndexByte(line, ')')
	if open < 0 || end < open {
		return "", 0, 0, errors.New("malformed: no (comm)")
	}
	fields := strings.Fields(line[end+1:])
	if len(fields) < 13 {
		return "", 0, 0, fmt.Errorf("malformed: %d fields after comm, want at least 13", len(fields))
	}
	if utime, err = strconv.ParseUint(fields[11], 10, 64); err != nil {
		return "", 0, 0, fmt.Errorf("malformed utime: %w", err)
	}
	if stime, err = strconv.ParseUint(fields[12], 10, 64); err != nil {
		return "", 0, 0, fmt.Errorf("malformed stime: %w", err)
	}
	return line[open+1 : end], utime, stime, nil
}

// selfCPU is this process's CPU time so far (user + system, all threads).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// percentile is the nearest-rank p-th percentile (0 < p <= 100) of sorted: the
// smallest value such that at least p% of the values are at most it. It is 0 for
// no values.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	// The epsilon absorbs float error such as 99.9/100*1000 = 999.0000000000001.
	rank := int(math.Ceil(p/100*float64(n) - 1e-9))
	rank = max(1, min(rank, n))
	return sorted[rank-1]
}
