package boltstore

import (
	"bytes"
	"errors"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/safeconduct/safeconduct/revocation"
	"github.com/safeconduct/safeconduct/revocation/revocationtest"
)

func open(t *testing.T, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	revocationtest.Run(t, func(t *testing.T) revocation.Store {
		return open(t, filepath.Join(t.TempDir(), "rev.db"), Options{})
	})
}

// TestReopen checks that what Create, Lift and Bind acknowledged survives a
// restart, and that the feed continues where it was.
func TestReopen(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "sub", "rev.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Create(ctx, revocation.Entry{Kind: revocation.KindRevoke, Selector: "sub=alice", Reason: "r", Actor: "a"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Create(ctx, revocation.Entry{Kind: revocation.KindBlock, Selector: "sub=bob", Reason: "r", Actor: "a"})
	if err != nil {
		t.Fatal(err)
	}
	gone, err := s.Create(ctx, revocation.Entry{Kind: revocation.KindBlock, Selector: "sub=carol", Reason: "r", Actor: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lift(ctx, gone.ID, "a", "r"); err != nil {
		t.Fatal(err)
	}
	w := &revocation.Facts{Upstream: "corp", Subject: "dave", Binding: "fp1"}
	if _, err := s.Bind(ctx, "inst", w, time.Hour); err != nil {
		t.Fatal(err)
	}
	_, cursor, _ := s.Snapshot(ctx)
	// A second process cannot open the file meanwhile.
	if _, err := Open(path, Options{OpenTimeout: 50 * time.Millisecond}); err == nil {
		t.Fatal("second Open of a held file succeeded")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, path, Options{})
	if e, err := s.Revoked(ctx, &revocation.Facts{Subject: "alice"}); err != nil || e == nil || e.ID != r.ID {
		t.Errorf("after reopen, Revoked = %v, %v", e, err)
	}
	var be *revocation.BlockedError
	if _, err := s.Admit(ctx, &revocation.Facts{Subject: "bob"}, ""); !errors.As(err, &be) || be.Entry.ID != b.ID {
		t.Errorf("after reopen, Admit(bob) = %v", err)
	}
	if _, err := s.Admit(ctx, &revocation.Facts{Subject: "carol"}, ""); err != nil {
		t.Errorf("after reopen, lifted block applies: %v", err)
	}
	if adm, err := s.Admit(ctx, w, "inst"); err != nil || adm.Binding != "fp1" {
		t.Errorf("after reopen, binding = %+v, %v", adm, err)
	}
	evs, _, err := s.Events(ctx, "", 100)
	if err != nil || len(evs) != 4 {
		t.Errorf("after reopen, %d events, %v; want 4", len(evs), err)
	}
	if evs, c, err := s.Events(ctx, cursor, 100); err != nil || len(evs) != 0 || c != cursor {
		t.Errorf("after reopen, Events(old cursor) = %v, %q, %v", evs, c, err)
	}
	c, err := s.Create(ctx, revocation.Entry{Kind: revocation.KindRevoke, Selector: "sub=eve", Reason: "r", Actor: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if evs, _, err := s.Events(ctx, cursor, 100); err != nil || len(evs) != 1 || evs[0].Entry.ID != c.ID {
		t.Errorf("after reopen, new event = %v, %v", evs, err)
	}
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// TestSweep checks the janitor's work with a fake clock: expired entries and
// bindings leave the file, lifted ones after their retention, and trimmed events
// expire the cursors before them.
func TestSweep(t *testing.T) {
	ctx := t.Context()
	clk := &clock{t: time.Now()}
	s := open(t, filepath.Join(t.TempDir(), "rev.db"), Options{Now: clk.now, JanitorInterval: -1, MaxEvents: 3, EventRetention: time.Hour})
	_, c0, _ := s.Snapshot(ctx)
	short, err := s.Create(ctx, revocation.Entry{Kind: revocation.KindRevoke, Selector: "sub=a", Reason: "r", Actor: "a", Expires: clk.t.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	open, err := s.Create(ctx, revocation.Entry{Kind: revocation.KindBlock, Selector: "sub=b", Reason: "r", Actor: "a"})
	if err != nil {
		t.Fatal(err)
	}
	lifted, err := s.Create(ctx, revocation.Entry{Kind: revocation.KindBlock, Selector: "sub=c", Reason: "r", Actor: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lift(ctx, lifted.ID, "a", "r"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Bind(ctx, "inst", &revocation.Facts{Upstream: "u", Subject: "s", Binding: "f"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	// Four events, MaxEvents 3: the first goes, and c0 is expired.
	if err := s.Sweep(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Events(ctx, c0, 10); !errors.Is(err, revocation.ErrCursorExpired) {
		t.Errorf("Events(c0) after trimming = %v, want ErrCursorExpired", err)
	}
	evs, _, err := s.Events(ctx, "", 10)
	if err != nil || len(evs) != 3 {
		t.Fatalf("Events after trimming: %d, %v", len(evs), err)
	}
	first, _ := strconv.ParseUint(evs[0].Cursor, 10, 64)
	if _, _, err := s.Events(ctx, strconv.FormatUint(first-1, 10), 10); err != nil {
		t.Errorf("Events(floor) = %v, want the retained events", err)
	}

	clk.t = clk.t.Add(2 * time.Minute)
	if err := s.Sweep(); err != nil {
		t.Fatal(err)
	}
	all, _ := s.List(ctx, true)
	if len(all) != 2 {
		t.Errorf("after expiry, List(inactive) = %v; want the open block and the lifted one", all)
	}
	if adm, err := s.Admit(ctx, &revocation.Facts{Subject: "s"}, "inst"); err != nil || adm.Binding != "" {
		t.Errorf("expired binding still recorded: %+v, %v", adm, err)
	}
	clk.t = clk.t.Add(25 * time.Hour)
	if err := s.Sweep(); err != nil {
		t.Fatal(err)
	}
	all, _ = s.List(ctx, true)
	if len(all) != 1 || all[0].ID != open.ID {
		t.Errorf("after the lifted retention, List(inactive) = %v; want the open block", all)
	}
	// Events older than the retention are gone too.
	if evs, _, err := s.Events(ctx, "", 10); err != nil || len(evs) != 0 {
		t.Errorf("events after retention: %d, %v", len(evs), err)
	}
	_ = short
}

// TestAdmitExtendsBinding: Admit keeps a binding record alive while it is used.
func TestAdmitExtendsBinding(t *testing.T) {
	ctx := t.Context()
	clk := &clock{t: time.Now()}
	path := filepath.Join(t.TempDir(), "rev.db")
	s := open(t, path, Options{Now: clk.now, JanitorInterval: -1})
	w := &revocation.Facts{Upstream: "u", Subject: "s", Binding: "f"}
	if _, err := s.Bind(ctx, "inst", w, time.Hour); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		clk.t = clk.t.Add(40 * time.Minute)
		if adm, err := s.Admit(ctx, w, "inst"); err != nil || adm.Binding != "f" {
			t.Fatalf("Admit = %+v, %v", adm, err)
		}
	}
	// The extension is durable.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path, Options{Now: clk.now, JanitorInterval: -1})
	clk.t = clk.t.Add(20 * time.Minute)
	if adm, err := s.Admit(ctx, w, "inst"); err != nil || adm.Binding != "f" {
		t.Fatalf("after reopen, Admit = %+v, %v", adm, err)
	}
	clk.t = clk.t.Add(2 * time.Hour)
	if adm, err := s.Admit(ctx, w, "inst"); err != nil || adm.Binding != "" {
		t.Fatalf("unused binding not expired: %+v, %v", adm, err)
	}
}

func TestStatusConformance(t *testing.T) {
	revocationtest.RunStatus(t, func(t *testing.T) revocation.Store {
		return open(t, filepath.Join(t.TempDir(), "rev.db"), Options{})
	})
}

// TestStatusSweptAndReopened: lists survive a restart, and the janitor's sweep
// deletes expired ones from the file.
func TestStatusSweptAndReopened(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "rev.db")
	now := time.Now()
	clock := func() time.Time { return now }
	s := open(t, path, Options{Now: clock, JanitorInterval: -1})
	f := revocation.Facts{Subject: "s"}
	cid, cenc := revocation.EncodeStatusClass(&f)
	rec := revocation.AppendStatusRecord(nil, revocation.StatusRecord{Index: 7, IssuedAt: now, JTI: "j", Class: cid})
	if err := s.AppendStatus(ctx, "20-keep", now.Add(time.Hour), map[string][]byte{cid: cenc}, rec, revocation.StatusMeta{}); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendStatus(ctx, "20-gone", now.Add(time.Minute), map[string][]byte{cid: cenc}, rec, revocation.StatusMeta{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	s = open(t, path, Options{Now: clock, JanitorInterval: -1})
	if err := s.Sweep(); err != nil {
		t.Fatal(err)
	}
	if recs, _, _, found, err := s.ReadStatus(ctx, "20-keep", 0); err != nil || !found || !bytes.Equal(recs, rec) {
		t.Fatalf("kept list after restart: found %v, %d bytes, err %v", found, len(recs), err)
	}
	if err := s.view(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketStatus).Bucket([]byte("20-gone")) != nil {
			return errors.New("expired list still in the file")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
