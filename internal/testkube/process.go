package testkube

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	healthTimeout = 60 * time.Second
	stopGrace     = 5 * time.Second
	pollInterval  = 100 * time.Millisecond
)

// proc is a running etcd or kube-apiserver whose output goes to a log file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	waitErr error
	once    sync.Once
}

func startProc(name, bin, dir, logPath string, args ...string) (*proc, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	return p, nil
}

// stop sends SIGTERM to the process group, then SIGKILL after stopGrace, and waits
// for the process to exit. It is idempotent.
func (p *proc) stop() {
	p.once.Do(func() {
		select {
		case <-p.exited:
			return
		default:
		}
		pid := p.cmd.Process.Pid
		if err := signalGroup(pid, syscall.SIGTERM); err != nil {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
		select {
		case <-p.exited:
			return
		case <-time.After(stopGrace):
		}
		if err := signalGroup(pid, syscall.SIGKILL); err != nil {
			_ = p.cmd.Process.Kill()
		}
		<-p.exited
	})
}

// waitHealthy polls check until it succeeds, the process exits or healthTimeout
// passes.
func (p *proc) waitHealthy(check func() error) error {
	deadline := time.Now().Add(healthTimeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not healthy after %s: %w", p.name, healthTimeout, err)
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited before becoming healthy: %v", p.name, p.waitErr)
		case <-time.After(pollInterval):
		}
	}
}

// logTail returns the last n lines of the process's log.
func (p *proc) logTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("[%v]", err)
	}
	return tail(string(b), n)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[... %d earlier lines]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
