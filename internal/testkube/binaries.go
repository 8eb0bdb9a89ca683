package testkube

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
	// EnvKubeDir names a directory holding kube-apiserver and etcd, used instead
	// of running scripts/kube-install.sh.
	EnvKubeDir = "SAFECONDUCT_KUBE_DIR"

	installScript  = "scripts/kube-install.sh"
	installTimeout = 40 * time.Minute
)

// install remembers, per test binary, the outcome of running the install script.
var install struct {
	mu       sync.Mutex
	done     bool
	dir      string
	progress string
	err      error
}

// binaries returns the paths of kube-apiserver and etcd, or skips t (fails it when
// CI=true) when they cannot be had.
func binaries(t testing.TB) (apiserver, etcd string) {
	t.Helper()
	if dir := os.Getenv(EnvKubeDir); dir != "" {
		a, e, err := binariesIn(dir)
		if err != nil {
			t.Fatalf("testkube: %s=%q: %v", EnvKubeDir, dir, err)
		}
		return a, e
	}
	install.mu.Lock()
	if !install.done {
		install.dir, install.progress, install.err = runInstallScript(installBound(t))
		install.done = true
	}
	dir, progress, err := install.dir, install.progress, install.err
	install.mu.Unlock()
	if err == nil {
		apiserver, etcd, err = binariesIn(dir)
	}
	if err != nil {
		if progress != "" {
			t.Logf("testkube: %s progress (last lines):\n%s", installScript, tail(progress, 60))
		}
		unavailable(t, fmt.Sprintf("kube-apiserver/etcd unavailable: %v (run %s beforehand, or set %s to a directory holding kube-apiserver and etcd)",
			err, installScript, EnvKubeDir))
	}
	return apiserver, etcd
}

// unavailable skips t, or fails it when CI=true.
func unavailable(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal("testkube: " + msg + "; CI=true, so failing instead of skipping")
	}
	t.Skip("testkube: " + msg + "; skipping")
}

func binariesIn(dir string) (apiserver, etcd string, err error) {
	apiserver, etcd = filepath.Join(dir, "kube-apiserver"), filepath.Join(dir, "etcd")
	for _, p := range []string{apiserver, etcd} {
		fi, err := os.Stat(p)
		if err != nil {
			return "", "", err
		}
		if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return "", "", fmt.Errorf("%s is not an executable file", p)
		}
	}
	return apiserver, etcd, nil
}

// installBound is installTimeout, shortened to end 30s before the test binary's
// deadline.
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
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Dir = root
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.SysProcAttr = sysProcAttr()
	cmd.Cancel = func() error { return signalGroup(cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	err = cmd.Run()
	progress = stderr.String()
	if ctx.Err() != nil {
		return "", progress, fmt.Errorf("%s did not finish within %s", installScript, bound)
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
