package testbin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Set is a set of binaries a harness needs, all in one directory.
type Set struct {
	// Harness prefixes messages: "testspire".
	Harness string
	// What names the set in messages: "SPIRE".
	What string
	// Names are the binaries' file names.
	Names []string
	// EnvDir is the environment variable naming a directory that holds them,
	// used instead of running Script.
	EnvDir string
	// Script is the install script, relative to the module root: it builds the
	// binaries if needed and prints their directory on its last line of output.
	Script string
	// Timeout bounds one run of Script (and the test's -timeout bounds it too).
	Timeout time.Duration
	// CICached: when CI=true, ask only `Script --cached` for a finished build and
	// fail without building when there is none.
	CICached bool

	// The outcome of running Script, kept for the test binary's life, so that
	// parallel tests wait for one run and a failure is not retried for every test.
	mu       sync.Mutex
	done     bool
	dir      string
	progress string
	err      error
}

// Paths returns the paths of the binaries, in the order of Names, or skips t
// (fails it when CI=true) when they cannot be had.
func (s *Set) Paths(t testing.TB) []string {
	t.Helper()
	if dir := os.Getenv(s.EnvDir); dir != "" {
		paths, err := s.in(dir)
		if err != nil {
			t.Fatalf("%s: %s=%q: %v", s.Harness, s.EnvDir, dir, err)
		}
		return paths
	}
	if s.CICached && os.Getenv("CI") == "true" {
		// In CI the prerequisites are built before the tests (.ci/run, make tools),
		// never inside a test binary's time limit: use a finished build or fail
		// saying how to make one.
		dir, err := s.cached()
		var paths []string
		if err == nil {
			paths, err = s.in(dir)
		}
		if err != nil {
			t.Fatalf("%s: %s is unset and %s is not built (%v). CI=true, so the tests do not build it inside their time limit: "+
				"run `make tools` (or bash %s) before the tests and export %s=$(bash %s)",
				s.Harness, s.EnvDir, s.What, err, s.Script, s.EnvDir, s.Script)
		}
		return paths
	}
	dir, progress, err := s.install(t)
	var paths []string
	if err == nil {
		paths, err = s.in(dir)
	}
	if err != nil {
		if progress != "" {
			t.Logf("%s: %s progress (last lines):\n%s", s.Harness, s.Script, tail(progress, 60))
		}
		Unavailable(t, s.Harness, fmt.Sprintf("%s binaries unavailable: %v (run %s beforehand, or set %s to a directory holding %s)",
			s.What, err, s.Script, s.EnvDir, strings.Join(s.Names, " and ")))
	}
	return paths
}

// Unavailable skips t, or fails it when CI=true (where a skip would hide that the
// tests needing the harness never ran); harness prefixes the message.
func Unavailable(t testing.TB, harness, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(harness + ": " + msg + "; CI=true, so failing instead of skipping")
	}
	t.Skip(harness + ": " + msg + "; skipping")
}

// in returns the paths of the binaries in dir, or why they are not usable.
func (s *Set) in(dir string) ([]string, error) {
	paths := make([]string, len(s.Names))
	for i, name := range s.Names {
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return nil, fmt.Errorf("%s is not an executable file", p)
		}
		paths[i] = p
	}
	return paths, nil
}

// cached asks `Script --cached` for a finished build; it builds nothing.
func (s *Set) cached() (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, s.Script), "--cached")
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s --cached: %w: %s", s.Script, err, strings.TrimSpace(stderr.String()))
	}
	dir := strings.TrimSpace(stdout.String())
	if dir == "" {
		return "", fmt.Errorf("%s --cached printed no directory", s.Script)
	}
	return dir, nil
}

// install runs Script once per Set and test binary and returns the directory it
// printed, with its progress output (stderr) for reporting a failure.
func (s *Set) install(t testing.TB) (dir, progress string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.done {
		s.dir, s.progress, s.err = s.runScript(s.bound(t))
		s.done = true
	}
	return s.dir, s.progress, s.err
}

// bound is Timeout, shortened to end 30s before the test binary's deadline (go
// test -timeout) so a long build fails with a message rather than the test binary
// panicking on its timeout.
func (s *Set) bound(t testing.TB) time.Duration {
	bound := s.Timeout
	if dt, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if d, ok := dt.Deadline(); ok {
			if left := time.Until(d) - 30*time.Second; left < bound {
				bound = max(left, 5*time.Second)
			}
		}
	}
	return bound
}

func (s *Set) runScript(bound time.Duration) (dir, progress string, err error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", "", err
	}
	script := filepath.Join(root, s.Script)
	if _, err := os.Stat(script); err != nil {
		return "", "", fmt.Errorf("no %s in module root %s: %w", s.Script, root, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Dir = root
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.SysProcAttr = sysProcAttr()
	// On timeout kill the whole group: the script's go build children too.
	cmd.Cancel = func() error { return signalGroup(cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	err = cmd.Run()
	progress = stderr.String()
	if ctx.Err() != nil {
		return "", progress, fmt.Errorf("%s did not finish within %s (bounded by %s and the test's -timeout)",
			s.Script, time.Since(start).Round(time.Second), s.Timeout)
	}
	if err != nil {
		return "", progress, fmt.Errorf("%s: %w", s.Script, err)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	dir = strings.TrimSpace(lines[len(lines)-1])
	if dir == "" {
		return "", progress, fmt.Errorf("%s printed no directory", s.Script)
	}
	return dir, progress, nil
}

// ModuleRoot walks up from the working directory (a package directory under go
// test) to the directory holding go.mod.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[... %d earlier lines]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
