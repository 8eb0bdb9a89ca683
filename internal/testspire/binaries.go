package testspire

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

const (
	// EnvSPIREDir names a directory holding spire-server and spire-agent, used
	// instead of running scripts/spire-install.sh.
	EnvSPIREDir = "SAFECONDUCT_SPIRE_DIR"

	installScript  = "scripts/spire-install.sh"
	installTimeout = 20 * time.Minute
)

// install remembers, per test binary, the outcome of running the install script, so
// parallel tests wait for one run and a failure is not retried for every test.
var install struct {
	mu       sync.Mutex
	done     bool
	dir      string
	progress string
	err      error
}

// binaries returns the paths of spire-server and spire-agent, or skips t (fails it
// when CI=true) when they cannot be had.
func binaries(t testing.TB) (server, agent string) {
	t.Helper()
	if dir := os.Getenv(EnvSPIREDir); dir != "" {
		server, agent, err := binariesIn(dir)
		if err != nil {
			t.Fatalf("testspire: %s=%q: %v", EnvSPIREDir, dir, err)
		}
		return server, agent
	}
	if os.Getenv("CI") == "true" {
		// In CI the prerequisites are built before the tests (.ci/run, make tools),
		// never inside a test binary's time limit: use a finished build or fail
		// saying how to make one.
		dir, err := cachedInstall()
		if err == nil {
			server, agent, err = binariesIn(dir)
		}
		if err != nil {
			t.Fatalf("testspire: %s is unset and SPIRE is not built (%v). CI=true, so the tests do not build it inside their time limit: "+
				"run `make tools` (or bash %s) before the tests and export %s=$(bash %s)",
				EnvSPIREDir, err, installScript, EnvSPIREDir, installScript)
		}
		return server, agent
	}
	dir, progress, err := runInstall(t)
	if err == nil {
		server, agent, err = binariesIn(dir)
	}
	if err != nil {
		if progress != "" {
			t.Logf("testspire: %s progress (last lines):\n%s", installScript, tail(progress, 60))
		}
		unavailable(t, fmt.Sprintf("SPIRE binaries unavailable: %v (run %s beforehand, or set %s to a directory holding spire-server and spire-agent)",
			err, installScript, EnvSPIREDir))
	}
	return server, agent
}

// unavailable skips t, or fails it when CI=true (where a skip would hide that the
// tests needing SPIRE never ran).
func unavailable(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal("testspire: " + msg + "; CI=true, so failing instead of skipping")
	}
	t.Skip("testspire: " + msg + "; skipping")
}

func binariesIn(dir string) (server, agent string, err error) {
	server, agent = filepath.Join(dir, "spire-server"), filepath.Join(dir, "spire-agent")
	for _, p := range []string{server, agent} {
		fi, err := os.Stat(p)
		if err != nil {
			return "", "", err
		}
		if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return "", "", fmt.Errorf("%s is not an executable file", p)
		}
	}
	return server, agent, nil
}

// cachedInstall asks scripts/spire-install.sh --cached for a finished build; it
// builds nothing.
func cachedInstall() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, installScript), "--cached")
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s --cached: %w: %s", installScript, err, strings.TrimSpace(stderr.String()))
	}
	dir := strings.TrimSpace(stdout.String())
	if dir == "" {
		return "", fmt.Errorf("%s --cached printed no directory", installScript)
	}
	return dir, nil
}

// runInstall runs scripts/spire-install.sh once per test binary and returns the
// directory it printed, with its progress output (stderr) for reporting a failure.
func runInstall(t testing.TB) (dir, progress string, err error) {
	install.mu.Lock()
	defer install.mu.Unlock()
	if install.done {
		return install.dir, install.progress, install.err
	}
	install.dir, install.progress, install.err = runInstallScript(installBound(t))
	install.done = true
	return install.dir, install.progress, install.err
}

// installBound is installTimeout, shortened to end 30s before the test binary's
// deadline (go test -timeout) so a long build fails with a message rather than the
// test binary panicking on its timeout.
func installBound(t testing.TB) time.Duration {
	bound := installTimeout
	if dt, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if d, ok := dt.Deadline(); ok {
			if left := time.Until(d) - 30*time.Second; left < bound {
				bound = max(left, 5*time.Second)
			}
		}
	}
	return bound
}

func runInstallScript(bound time.Duration) (dir, progress string, err error) {
	root, err := moduleRoot()
	if err != nil {
		return "", "", err
	}
	script := filepath.Join(root, installScript)
	if _, err := os.Stat(script); err != nil {
		return "", "", fmt.Errorf("no %s in module root %s: %w", installScript, root, err)
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
			installScript, time.Since(start).Round(time.Second), installTimeout)
	}
	if err != nil {
		return "", progress, fmt.Errorf("%s: %w", installScript, err)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	dir = strings.TrimSpace(lines[len(lines)-1])
	if dir == "" {
		return "", progress, fmt.Errorf("%s printed no directory", installScript)
	}
	return dir, progress, nil
}

// moduleRoot walks up from the working directory (a package directory under go
// test) to the directory holding go.mod.
func moduleRoot() (string, error) {
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
