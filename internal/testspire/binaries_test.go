package testspire

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// fatalRecorder is a testing.TB whose Fatal/Skip record the message and end the
// goroutine, so that a test can check what binaries would have failed with.
type fatalRecorder struct {
	testing.TB
	msg     string
	skipped bool
}

func (r *fatalRecorder) Helper() {}
func (r *fatalRecorder) Fatal(args ...any) {
	r.msg = fmt.Sprint(args...)
	runtime.Goexit()
}
func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *fatalRecorder) Skip(args ...any) {
	r.msg, r.skipped = fmt.Sprint(args...), true
	runtime.Goexit()
}
func (r *fatalRecorder) Logf(string, ...any) {}

// callBinaries runs binaries with a recorder in its own goroutine.
func callBinaries(t *testing.T) (server, agent string, rec *fatalRecorder) {
	rec = &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		server, agent = binaries(rec)
	}()
	<-done
	return server, agent, rec
}

// TestBinariesInCIBuildsNothing: with CI=true and SAFECONDUCT_SPIRE_DIR unset,
// an empty cache fails at once, naming make tools and the install script, and
// builds nothing (the cache stays empty); a finished build in the cache is used.
func TestBinariesInCIBuildsNothing(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("CI", "true")
	t.Setenv(EnvSPIREDir, "")
	t.Setenv("SAFECONDUCT_CACHE", cache)
	t.Setenv("SPIRE_VERSION", "v0.0.0-test")

	_, _, rec := callBinaries(t)
	if rec.skipped || !strings.Contains(rec.msg, "make tools") || !strings.Contains(rec.msg, installScript) ||
		!strings.Contains(rec.msg, EnvSPIREDir) || !strings.Contains(rec.msg, "not built") {
		t.Fatalf("binaries in CI without a build: skipped=%v %q", rec.skipped, rec.msg)
	}
	if entries, _ := os.ReadDir(cache); len(entries) != 0 {
		t.Fatalf("the cache is not empty after a CI run without a build: %v", entries)
	}

	// A finished build (executables where the script puts them) is used.
	dir := filepath.Join(cache, "spire", "v0.0.0-test")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"spire-server", "spire-agent"} {
		if err := os.WriteFile(filepath.Join(dir, b), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	server, agent, rec := callBinaries(t)
	if rec.msg != "" || server != filepath.Join(dir, "spire-server") || agent != filepath.Join(dir, "spire-agent") {
		t.Fatalf("binaries with a finished build: %q %q (%q)", server, agent, rec.msg)
	}
}
