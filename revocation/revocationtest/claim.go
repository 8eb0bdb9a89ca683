package revocationtest

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/revocation"
)

// testClaim: the first Claim of a key is fresh, every later one until it expires
// is a replay, keys are independent, concurrent claims of one key have exactly
// one winner, and bad arguments are ErrInvalid.
func testClaim(t *testing.T, s revocation.Store) {
	ctx := context.Background()
	until := time.Now().Add(time.Minute)
	claim := func(key string, until time.Time) bool {
		t.Helper()
		fresh, err := s.Claim(ctx, key, until)
		if err != nil {
			t.Fatalf("Claim(%q): %v", key, err)
		}
		return fresh
	}
	if !claim("upstream\x00ci\x00jti-1", until) {
		t.Fatal("first claim of a key is not fresh")
	}
	if claim("upstream\x00ci\x00jti-1", until) {
		t.Fatal("second claim of a key is fresh: a replay would pass")
	}
	if claim("upstream\x00ci\x00jti-1", until.Add(time.Hour)) {
		t.Fatal("a claim with a later expiry reset the record")
	}
	if !claim("upstream\x00ci\x00jti-2", until) || !claim("upstream\x00other\x00jti-1", until) {
		t.Fatal("claims of other keys are not fresh")
	}
	// Keys are arbitrary bytes, up to the limit.
	long := strings.Repeat("\xff", revocation.MaxClaimKeyLen)
	if !claim(long, until) || claim(long, until) {
		t.Fatal("a maximal key is not claimed once")
	}

	// One winner among concurrent claims.
	var wg sync.WaitGroup
	var winners atomic.Int32
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fresh, err := s.Claim(ctx, "race", until)
			if err != nil {
				t.Errorf("concurrent Claim: %v", err)
			}
			if fresh {
				winners.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := winners.Load(); n != 1 {
		t.Fatalf("%d concurrent claims of one key were fresh, want exactly 1", n)
	}

	// A claim is forgotten after it expires.
	if !claim("short", time.Now().Add(1200*time.Millisecond)) {
		t.Fatal("short claim not fresh")
	}
	if claim("short", until) {
		t.Fatal("short claim replayed before its expiry")
	}
	deadline := time.Now().Add(maxSkew)
	for !claim("short", until) {
		if time.Now().After(deadline) {
			t.Fatal("an expired claim is still remembered")
		}
		time.Sleep(200 * time.Millisecond)
	}

	for name, c := range map[string]struct {
		key   string
		until time.Time
	}{
		"empty key":     {"", until},
		"key too long":  {long + "x", until},
		"no expiry":     {"k", time.Time{}},
		"too far ahead": {"k", time.Now().Add(revocation.MaxClaimTTL + time.Hour)},
	} {
		if _, err := s.Claim(ctx, c.key, c.until); !errors.Is(err, revocation.ErrInvalid) {
			t.Errorf("%s: Claim error %v, want ErrInvalid", name, err)
		}
	}
}
