package spiffe_test

import (
	"crypto"
	"errors"
	"os"
	"testing"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/attest/spiffe"
)

// A bundle file is read again while in use: a rotation is picked up, a bad or
// missing file leaves the last good bundle in place (a local file never goes
// stale), and Close makes verification unavailable.
func TestBundleFileReload(t *testing.T) {
	k := testKeys()
	clock := newClock()
	path := writeFile(t, "bundle.json", bundleWith(t, map[string]crypto.PublicKey{"a1": k.a1.Public()}))
	v, err := spiffe.New(t.Context(), spiffe.Config{
		Name: "file", TrustDomain: tdA, Audiences: []string{aud}, BundleFile: path, Now: clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	write := func(data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := verifyKid(t, v, clock, "a1", k.a1); err != nil {
		t.Fatal(err)
	}

	// Rotation: an unknown kid re-reads the file (at most once per interval).
	write(bundleWith(t, map[string]crypto.PublicKey{"a2": k.a2.Public()}))
	if err := verifyKid(t, v, clock, "a2", k.a2); err != nil {
		t.Fatalf("rotated file not read: %v", err)
	}
	if err := verifyKid(t, v, clock, "a1", k.a1); !errors.Is(err, attest.ErrInvalid) {
		t.Fatalf("retired key: %v", err)
	}

	// A broken file, then a missing one: the last good bundle stays, for ever.
	write([]byte(`{"keys":[]}`))
	clock.Advance(spiffe.FileCheckInterval)
	if err := verifyKid(t, v, clock, "a2", k.a2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the refused re-read", func() bool { return v.Stats().Failures == 1 })
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	clock.Advance(24 * spiffe.DefaultMaxStale)
	if err := verifyKid(t, v, clock, "a2", k.a2); err != nil {
		t.Fatalf("last good bundle of a missing file: %v", err)
	}
	waitFor(t, "the failed re-read", func() bool { return v.Stats().Failures == 2 })

	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if err := verifyKid(t, v, clock, "a2", k.a2); !errors.Is(err, attest.ErrUnavailable) {
		t.Fatalf("after Close: %v", err)
	}
}
