package issuer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// TestKidRegistry: key_dir/kids remembers every kid found or created there, the
// key an emergency rotation deletes included, so a restart still knows it; a
// truncated kid is recognised; a registry that is not one stops the start and
// check-config.
func TestKidRegistry(t *testing.T) {
	dir := t.TempDir()
	first, err := RotateKey(dir, jose.ES256, t0.Add(-time.Hour), true)
	if err != nil {
		t.Fatal(err)
	}
	// A key put there by hand is registered when the STS starts.
	byHand, err := generateKey(t.TempDir(), jose.EdDSA, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(byHand.file, filepath.Join(dir, "by-hand.pem")); err != nil {
		t.Fatal(err)
	}
	if _, err := loadKeyRing(dir, jose.ES256, t0, defaultKeyOptions); err != nil {
		t.Fatal(err)
	}
	second, err := RotateKey(dir, jose.ES256, t0, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(second.Removed) != 1 || second.Previous != first.KeyID {
		t.Fatalf("emergency rotation: %+v", second)
	}
	r, err := loadKeyRing(dir, jose.ES256, t0.Add(time.Second), defaultKeyOptions)
	if err != nil {
		t.Fatal(err)
	}
	for _, kid := range []string{first.KeyID, second.KeyID, byHand.kid} {
		if p := r.kidProblem(kid); p != "" {
			t.Errorf("kid %s: %s", kid, p)
		}
	}
	if p := r.kidProblem(first.KeyID[:8]); !strings.Contains(p, "looks truncated") || !strings.Contains(p, first.KeyID) {
		t.Errorf("truncated kid: %q", p)
	}
	if p := r.kidProblem("never-seen"); !strings.Contains(p, "stsctl keys list") {
		t.Errorf("unknown kid: %q", p)
	}
	if data, _ := os.ReadFile(filepath.Join(dir, kidsFile)); strings.Count(string(data), "\n") != 3 {
		t.Errorf("the registry lists each kid once:\n%s", data)
	}

	if err := appendKids(dir, "\x01\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := loadKeyRing(dir, jose.ES256, t0, defaultKeyOptions); err == nil || !strings.Contains(err.Error(), "kids:4: not a key ID") {
		t.Errorf("start with a broken registry: %v", err)
	}
	if err := CheckKeyDir(dir, jose.ES256); err == nil || !strings.Contains(err.Error(), "kids:4") {
		t.Errorf("check with a broken registry: %v", err)
	}
}
