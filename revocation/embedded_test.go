package revocation

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func openEmbedded(t *testing.T, now func() time.Time) Store {
	t.Helper()
	s, err := OpenEmbedded(filepath.Join(t.TempDir(), "revocation.db"), EmbeddedOptions{Now: now})
	if err != nil {
		t.Fatalf("OpenEmbedded: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestEmbeddedConformance(t *testing.T) {
	runConformance(t, openEmbedded)
}

// TestEmbeddedReopenedConformance runs the suite against a store that is closed and
// reopened from its file before every read, so each check also proves that what was
// acknowledged was on disk.
func TestEmbeddedReopenedConformance(t *testing.T) {
	runConformance(t, func(t *testing.T, now func() time.Time) Store {
		r := &reopeningStore{
			path: filepath.Join(t.TempDir(), "sub", "dir", "revocation.db"),
			opts: EmbeddedOptions{Now: now, JanitorInterval: -1},
		}
		var err error
		if r.s, err = OpenEmbedded(r.path, r.opts); err != nil {
			t.Fatalf("OpenEmbedded: %v", err)
		}
		t.Cleanup(func() { _ = r.Close() })
		return r
	})
}

// reopeningStore closes and reopens the embedded store before every read.
type reopeningStore struct {
	path   string
	opts   EmbeddedOptions
	mu     sync.RWMutex
	s      Store
	closed bool
}

// read reopens the store (unless closed) and runs f under the read lock.
func (r *reopeningStore) read(f func(Store) error) error {
	r.mu.Lock()
	if !r.closed {
		if err := r.s.Close(); err != nil {
			r.mu.Unlock()
			return err
		}
		s, err := OpenEmbedded(r.path, r.opts)
		if err != nil {
			r.mu.Unlock()
			return err
		}
		r.s = s
	}
	r.mu.Unlock()
	r.mu.RLock()
	defer r.mu.RUnlock()
	return f(r.s)
}

func (r *reopeningStore) write(f func(Store) error) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return f(r.s)
}

func (r *reopeningStore) Admit(ctx context.Context, q Query) error {
	return r.read(func(s Store) error { return s.Admit(ctx, q) })
}

func (r *reopeningStore) TokenRevoked(ctx context.Context, jti string) (revoked bool, err error) {
	err = r.read(func(s Store) error {
		revoked, err = s.TokenRevoked(ctx, jti)
		return err
	})
	return revoked, err
}

func (r *reopeningStore) RevokeToken(ctx context.Context, jti string, until time.Time, reason string) error {
	return r.write(func(s Store) error { return s.RevokeToken(ctx, jti, until, reason) })
}

func (r *reopeningStore) BlockSubject(ctx context.Context, upstream, subject string, until time.Time, reason string) error {
	return r.write(func(s Store) error { return s.BlockSubject(ctx, upstream, subject, until, reason) })
}

func (r *reopeningStore) Ping(ctx context.Context) error {
	return r.read(func(s Store) error { return s.Ping(ctx) })
}

func (r *reopeningStore) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return r.s.Close()
}

// TestEmbeddedExpiresExactlyAtUntil: the embedded store keeps nanoseconds.
func TestEmbeddedExpiresExactlyAtUntil(t *testing.T) {
	clock := newFakeClock()
	s := openEmbedded(t, clock.Now)
	until := clock.Now().Add(time.Minute + 123456*time.Nanosecond)
	if err := s.RevokeToken(t.Context(), "jti-1", until, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.BlockSubject(t.Context(), "corp", "alice", until, ""); err != nil {
		t.Fatal(err)
	}
	clock.Advance(until.Sub(clock.Now()) - time.Nanosecond)
	assertRevoked(t, s, "jti-1", true)
	assertAdmit(t, s, "corp", "alice", true)
	clock.Advance(time.Nanosecond)
	assertRevoked(t, s, "jti-1", false)
	assertAdmit(t, s, "corp", "alice", false)
}

func TestEmbeddedSurvivesRestart(t *testing.T) {
	ctx := t.Context()
	clock := newFakeClock()
	path := filepath.Join(t.TempDir(), "revocation.db")
	s, err := OpenEmbedded(path, EmbeddedOptions{Now: clock.Now})
	if err != nil {
		t.Fatalf("OpenEmbedded: %v", err)
	}
	if err := s.RevokeToken(ctx, "jti-1", clock.Now().Add(time.Hour), "r"); err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	if err := s.BlockSubject(ctx, "corp", "alice", clock.Now().Add(time.Hour), "stolen"); err != nil {
		t.Fatalf("BlockSubject: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s, err = OpenEmbedded(path, EmbeddedOptions{Now: clock.Now})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	assertRevoked(t, s, "jti-1", true)
	if reason := assertAdmit(t, s, "corp", "alice", true); reason != "stolen" {
		t.Errorf("reason after restart = %q, want %q", reason, "stolen")
	}
}

func TestEmbeddedFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "sc")
	path := filepath.Join(dir, "revocation.db")
	s, err := OpenEmbedded(path, EmbeddedOptions{})
	if err != nil {
		t.Fatalf("OpenEmbedded: %v", err)
	}
	defer s.Close()
	for p, want := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, path: 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		// The umask can only remove bits: check nothing beyond want is set.
		if fi.Mode()&^want != 0 {
			t.Errorf("%s: mode %v, want at most %v", p, fi.Mode(), want)
		}
	}
}

func TestEmbeddedLockedFileFailsFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "revocation.db")
	s, err := OpenEmbedded(path, EmbeddedOptions{})
	if err != nil {
		t.Fatalf("OpenEmbedded: %v", err)
	}
	defer s.Close()
	// flock conflicts between two opens even within one process, as with two
	// processes.
	start := time.Now()
	s2, err := OpenEmbedded(path, EmbeddedOptions{OpenTimeout: 100 * time.Millisecond})
	if err == nil {
		s2.Close()
		t.Fatal("second OpenEmbedded of a locked file succeeded")
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("second open took %v", elapsed)
	}
	if want := "locked by another process"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
}

func TestEmbeddedEmptyPath(t *testing.T) {
	if _, err := OpenEmbedded("", EmbeddedOptions{}); err == nil {
		t.Fatal("OpenEmbedded(\"\"): nil error")
	}
}

func TestEmbeddedCloseIsIdempotent(t *testing.T) {
	s := openEmbedded(t, time.Now)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func countEntries(t *testing.T, s Store) (n int) {
	t.Helper()
	err := s.(*embeddedStore).db.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketJTI, bucketBlock} {
			n += tx.Bucket(b).Stats().KeyN
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestEmbeddedSweepDeletesOnlyExpired(t *testing.T) {
	ctx := t.Context()
	clock := newFakeClock()
	s, err := OpenEmbedded(filepath.Join(t.TempDir(), "r.db"), EmbeddedOptions{Now: clock.Now, JanitorInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := clock.Now()
	// More than one sweep batch of short entries, and some long ones.
	for i := range sweepBatch + 10 {
		if err := s.RevokeToken(ctx, "short-"+strconv.Itoa(i), now.Add(time.Minute), ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RevokeToken(ctx, "long", now.Add(time.Hour), ""); err != nil {
		t.Fatal(err)
	}
	if err := s.BlockSubject(ctx, "corp", "short", now.Add(time.Minute), ""); err != nil {
		t.Fatal(err)
	}
	if err := s.BlockSubject(ctx, "corp", "long", now.Add(time.Hour), ""); err != nil {
		t.Fatal(err)
	}
	es := s.(*embeddedStore)
	if n, err := es.sweep(); err != nil || n != 0 {
		t.Fatalf("sweep before expiry = %d, %v; want 0", n, err)
	}
	clock.Advance(time.Minute)
	if n, err := es.sweep(); err != nil || n != sweepBatch+11 {
		t.Fatalf("sweep = %d, %v; want %d", n, err, sweepBatch+11)
	}
	if n := countEntries(t, s); n != 2 {
		t.Errorf("%d entries left, want 2", n)
	}
	assertRevoked(t, s, "long", true)
	assertAdmit(t, s, "corp", "long", true)
}

func TestEmbeddedJanitorRunsAndStops(t *testing.T) {
	ctx := t.Context()
	clock := newFakeClock()
	s, err := OpenEmbedded(filepath.Join(t.TempDir(), "r.db"), EmbeddedOptions{Now: clock.Now, JanitorInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeToken(ctx, "jti-1", clock.Now().Add(time.Minute), ""); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	deadline := time.Now().Add(5 * time.Second)
	for countEntries(t, s) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("janitor did not delete the expired entry within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Close waits for the janitor; a leaked janitor would make -race or the bbolt
	// close hang.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestEmbeddedCorruptEntryFailsClosed(t *testing.T) {
	s := openEmbedded(t, time.Now)
	err := s.(*embeddedStore).db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketJTI).Put([]byte("bad"), []byte{1, 2}); err != nil {
			return err
		}
		return tx.Bucket(bucketBlock).Put(workloadKey("corp", "bad"), []byte{1})
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.TokenRevoked(t.Context(), "bad"); err == nil {
		t.Error("TokenRevoked on a corrupt entry: nil error")
	}
	if err := s.Admit(t.Context(), Query{Upstream: "corp", Subject: "bad"}); err == nil || errors.Is(err, ErrBlocked) {
		t.Errorf("Admit on a corrupt entry = %v, want a store error", err)
	}
	if n, err := s.(*embeddedStore).sweep(); err != nil || n != 0 {
		t.Errorf("sweep deleted %d corrupt entries (err %v), want them kept", n, err)
	}
}
