package testspire

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/safeconduct/safeconduct/internal/testbin"
)

// callBinaries runs binaries with a testing.TB that records how it would have
// failed or skipped.
func callBinaries(t *testing.T) (server, agent string, out testbin.Outcome) {
	out = testbin.Try(t, func(tb testing.TB) { server, agent = binaries(tb) })
	return server, agent, out
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
	if rec.Skipped || !strings.Contains(rec.Msg, "make tools") || !strings.Contains(rec.Msg, installScript) ||
		!strings.Contains(rec.Msg, EnvSPIREDir) || !strings.Contains(rec.Msg, "not built") {
		t.Fatalf("binaries in CI without a build: skipped=%v %q", rec.Skipped, rec.Msg)
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
	if rec.Msg != "" || server != filepath.Join(dir, "spire-server") || agent != filepath.Join(dir, "spire-agent") {
		t.Fatalf("binaries with a finished build: %q %q (%q)", server, agent, rec.Msg)
	}
}
