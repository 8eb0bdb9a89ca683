package testproc

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// MainWithCommands is a TestMain that first builds the commands ../name (the
// packages beside the test's) into a new temporary directory and sets *binDir to
// it; then it runs the tests, removes the directory and exits with their code. A
// failed build exits 1 with the compiler's output.
func MainWithCommands(m *testing.M, binDir *string, names ...string) {
	dir, err := os.MkdirTemp("", "e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, name := range names {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), "../"+name)
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", name, err, out)
			os.Exit(1)
		}
	}
	*binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Process is a started child process.
type Process struct {
	// Cmd is the started command.
	Cmd *exec.Cmd
	// Log holds its stdout and stderr, unless the command came with its own.
	Log  *Buffer
	name string
	done chan error // holds Cmd.Wait's result once it has returned
}

// ErrKilled is what Stop wraps when the process did not stop in time.
var ErrKilled = errors.New("killed")

// Start starts cmd, its stdout and stderr going to Log unless either is set
// already.
func Start(t testing.TB, cmd *exec.Cmd) *Process {
	t.Helper()
	p := &Process{Cmd: cmd, name: filepath.Base(cmd.Path), done: make(chan error, 1)}
	if cmd.Stdout == nil && cmd.Stderr == nil {
		p.Log = &Buffer{}
		cmd.Stdout, cmd.Stderr = p.Log, p.Log
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	return p
}

// Wait waits up to limit for the process to exit and returns what Cmd.Wait
// returned; exited is false when it still runs.
func (p *Process) Wait(limit time.Duration) (exited bool, err error) {
	select {
	case err := <-p.done:
		p.done <- err
		return true, err
	case <-time.After(limit):
		return false, nil
	}
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	exited, _ := p.Wait(0)
	return exited
}

// Stop sends SIGTERM and waits up to limit for the exit, returning what Cmd.Wait
// returned (nil for a clean exit). A process that does not exit in time is killed
// and the error wraps ErrKilled. A process that has exited already is left alone
// (nil).
func (p *Process) Stop(limit time.Duration) error {
	if p.Exited() {
		return nil
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	if exited, err := p.Wait(limit); exited {
		return err
	}
	_ = p.Cmd.Process.Kill()
	return fmt.Errorf("%s did not stop within %s: %w", p.name, limit, ErrKilled)
}

// WaitReady polls ready every 50ms until it holds; it fails t, printing Log,
// when the process exits first or limit passes.
func (p *Process) WaitReady(t testing.TB, limit time.Duration, ready func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ready() {
		if exited, err := p.Wait(0); exited {
			t.Fatalf("%s exited early: %v\n%s", p.name, err, p.Log)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready in %s\n%s", p.name, limit, p.Log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StatusOK reports whether a GET of url through c answers 200.
func StatusOK(c *http.Client, url string) bool {
	resp, err := c.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// WaitUntil polls cond every 50ms until it holds, failing t after limit.
func WaitUntil(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
