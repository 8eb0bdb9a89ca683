package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/issuer"
)

// TestE2EKeyFilePermissions: a signing key others can read (0644) stops both `sts
// check-config` and `sts serve`, with a message naming the file and the fix; the
// same key at 0600 passes and serves.
func TestE2EKeyFilePermissions(t *testing.T) {
	e := setup(t, "")
	keyDir := e.path("keys")
	if err := os.Mkdir(keyDir, 0o755); err != nil {
		t.Fatal(err)
	}
	res, err := issuer.RotateKey(keyDir, jose.ES256, time.Now().Add(-time.Minute), true)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(res.File, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"check-config", "--config", e.cfg}, {"serve", "--config", e.cfg}} {
		out := runBin(t, 1, "sts", args...)
		for _, want := range []string{res.File, "mode 0644", "chmod 600 " + res.File} {
			if !strings.Contains(out, want) {
				t.Errorf("sts %s with a 0644 key: output lacks %q:\n%s", args[0], want, out)
			}
		}
	}
	if err := os.Chmod(res.File, 0o600); err != nil {
		t.Fatal(err)
	}
	if out := runBin(t, 0, "sts", "check-config", "--config", e.cfg); !strings.Contains(out, ": ok") {
		t.Fatalf("check-config with a 0600 key:\n%s", out)
	}
	e.start()
	if r, err := e.exchange(e.a.Token(t, payments)); err != nil || !strings.Contains(r.AccessToken, ".") {
		t.Fatalf("exchange with a 0600 key: %+v, %v", r, err)
	}
}
