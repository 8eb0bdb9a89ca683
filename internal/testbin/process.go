package testbin

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// StopGrace is how long Stop waits after SIGTERM before SIGKILL.
	StopGrace    = 5 * time.Second
	pollInterval = 100 * time.Millisecond
)

// Proc is a running child process whose output goes to a log file.
type Proc struct {
	// Name names the process in messages: "spire-server".
	Name string
	// LogPath is the file receiving its stdout and stderr.
	LogPath string

	cmd     *exec.Cmd
	exited  chan struct{} // closed once the process has been waited for
	waitErr error         // set before exited is closed
	once    sync.Once
}

// Start runs bin with args in dir, in a process group of its own, its stdout and
// stderr going to logPath, which is emptied first.
func Start(name, bin, dir, logPath string, args ...string) (*Proc, error) {
	return start(os.O_TRUNC, name, bin, dir, logPath, args)
}

// StartAppend is Start keeping what logPath holds: a restarted process's log
// follows the earlier run's.
func StartAppend(name, bin, dir, logPath string, args ...string) (*Proc, error) {
	return start(os.O_APPEND, name, bin, dir, logPath, args)
}

func start(logFlag int, name, bin, dir, logPath string, args []string) (*Proc, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|logFlag, 0o600)
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
	p := &Proc{Name: name, LogPath: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	return p, nil
}

// Stop sends SIGTERM to the process group, then SIGKILL after StopGrace, and
// waits for the process to exit. It is idempotent.
func (p *Proc) Stop() {
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
		case <-time.After(StopGrace):
		}
		if err := signalGroup(pid, syscall.SIGKILL); err != nil {
			_ = p.cmd.Process.Kill()
		}
		<-p.exited
	})
}

// Kill sends SIGKILL to the process group (no clean shutdown, as a crash would
// end it) and waits for the process to exit. It does nothing once the process
// has exited, and may be called with or after Stop.
func (p *Proc) Kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	if err := signalGroup(p.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		_ = p.cmd.Process.Kill()
	}
	<-p.exited
}

// Signal sends sig to the process alone (not its group), for example SIGSTOP and
// SIGCONT to freeze and thaw it. It returns os.ErrProcessDone once the process
// has exited.
func (p *Proc) Signal(sig os.Signal) error {
	return p.cmd.Process.Signal(sig)
}

// Exited is closed once the process has exited (and been waited for).
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// WaitHealthy polls check every 100ms until it succeeds, the process exits or
// within has passed.
func (p *Proc) WaitHealthy(within time.Duration, check func() error) error {
	err := Poll(within, pollInterval, p.exited, check)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrQuit):
		return fmt.Errorf("%s exited before becoming healthy: %v", p.Name, p.waitErr)
	default:
		return fmt.Errorf("%s not healthy after %s: %w", p.Name, within, err)
	}
}

// ErrQuit is what Poll returns when its quit channel is closed first.
var ErrQuit = errors.New("testbin: quit before the check succeeded")

// Poll calls check, then again every interval, until it returns nil (Poll
// returns nil), within has passed (Poll returns check's last error) or quit is
// closed (Poll returns ErrQuit; a nil quit never is). check runs at least once,
// and is not called again once quit is closed.
func Poll(within, interval time.Duration, quit <-chan struct{}, check func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-quit:
			return ErrQuit
		case <-time.After(interval):
		}
	}
}

// LogTail returns the last n lines of the process's log.
func (p *Proc) LogTail(n int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("[%v]", err)
	}
	if len(b) == 0 {
		return "[empty]"
	}
	return tail(string(b), n)
}

// LogTails prints with t.Log the last 40 lines of each process's log (nil ones,
// not started, are passed over); harness prefixes the lines.
func LogTails(t testing.TB, harness string, procs ...*Proc) {
	t.Helper()
	for _, p := range procs {
		if p != nil {
			t.Logf("%s: %s log (%s), last lines:\n%s", harness, p.Name, p.LogPath, p.LogTail(40))
		}
	}
}
