package revocationtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/revocation"
)

// RunStatus is the conformance suite of revocation.StatusStore: appends (with
// concurrent writers), incremental reads, classes written once, unknown and
// expired lists, argument checks. open returns a fresh store as for Run.
func RunStatus(t *testing.T, open func(t *testing.T) revocation.Store) {
	t.Run("AppendRead", func(t *testing.T) { testStatusAppendRead(t, open(t).(revocation.StatusStore)) })
	t.Run("Expiry", func(t *testing.T) { testStatusExpiry(t, open(t).(revocation.StatusStore)) })
	t.Run("Invalid", func(t *testing.T) { testStatusInvalid(t, open(t).(revocation.StatusStore)) })
	t.Run("Meta", func(t *testing.T) { testStatusMeta(t, open(t).(revocation.StatusStore)) })
}

func statusRecords(from, n int, class string) []byte {
	var b []byte
	for i := from; i < from+n; i++ {
		b = revocation.AppendStatusRecord(b, revocation.StatusRecord{Index: uint32(i), IssuedAt: time.Unix(1_800_000_000, 0), JTI: fmt.Sprint("jti-", i), Class: class})
	}
	return b
}

func testStatusAppendRead(t *testing.T, s revocation.StatusStore) {
	ctx := context.Background()
	f := revocation.Facts{Subject: "spiffe://prod/a", Upstream: "spire", Audiences: []string{"x"}, KeyID: "k"}
	cid, cenc := revocation.EncodeStatusClass(&f)
	exp := time.Now().Add(time.Hour)
	if _, _, _, found, err := s.ReadStatus(ctx, "20-unknown", 0); err != nil || found {
		t.Fatalf("unknown list: found %v, err %v", found, err)
	}
	if err := s.AppendStatus(ctx, "20-list", exp, map[string][]byte{cid: cenc}, statusRecords(0, 10, cid), revocation.StatusMeta{}); err != nil {
		t.Fatal(err)
	}
	// Concurrent writers (the STS's batch writers, other replicas).
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			errs <- s.AppendStatus(ctx, "20-list", exp, map[string][]byte{cid: []byte(`{"changed":true}`)}, statusRecords(10+w*5, 5, cid), revocation.StatusMeta{})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	recs, classes, _, found, err := s.ReadStatus(ctx, "20-list", 0)
	if err != nil || !found {
		t.Fatalf("read: found %v, err %v", found, err)
	}
	if len(recs) != 50*revocation.StatusRecordSize {
		t.Fatalf("%d bytes of records, want 50 records", len(recs))
	}
	if !bytes.Equal(classes[cid], cenc) || len(classes) != 1 {
		t.Fatalf("classes %q: a class is written once, never replaced", classes)
	}
	seen := map[uint32]bool{}
	for i := 0; i < len(recs); i += revocation.StatusRecordSize {
		idx := uint32(recs[i])<<24 | uint32(recs[i+1])<<16 | uint32(recs[i+2])<<8 | uint32(recs[i+3])
		seen[idx] = true
	}
	if len(seen) != 50 {
		t.Fatalf("%d distinct indices read back, want 50", len(seen))
	}
	// Incremental: from what the reader holds.
	if err := s.AppendStatus(ctx, "20-list", exp, nil, statusRecords(50, 3, cid), revocation.StatusMeta{}); err != nil {
		t.Fatal(err)
	}
	tail, _, _, _, err := s.ReadStatus(ctx, "20-list", len(recs))
	if err != nil || !bytes.Equal(tail, statusRecords(50, 3, cid)) {
		t.Fatalf("tail: %d bytes, err %v", len(tail), err)
	}
	if none, _, _, found, err := s.ReadStatus(ctx, "20-list", len(recs)+len(tail)); err != nil || !found || len(none) != 0 {
		t.Fatalf("read at the end: %d bytes, found %v, err %v", len(none), found, err)
	}
}

func testStatusExpiry(t *testing.T, s revocation.StatusStore) {
	ctx := context.Background()
	f := revocation.Facts{Subject: "s"}
	cid, cenc := revocation.EncodeStatusClass(&f)
	if err := s.AppendStatus(ctx, "20-short", time.Now().Add(1500*time.Millisecond), map[string][]byte{cid: cenc}, statusRecords(0, 1, cid), revocation.StatusMeta{}); err != nil {
		t.Fatal(err)
	}
	if _, _, _, found, err := s.ReadStatus(ctx, "20-short", 0); err != nil || !found {
		t.Fatalf("fresh list: found %v, err %v", found, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, _, _, found, err := s.ReadStatus(ctx, "20-short", 0)
		if err != nil {
			t.Fatal(err)
		}
		if !found {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("an expired list is still found")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func testStatusInvalid(t *testing.T, s revocation.StatusStore) {
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	for name, err := range map[string]error{
		"bad name":        s.AppendStatus(ctx, "a/b", exp, nil, nil, revocation.StatusMeta{}),
		"long name":       s.AppendStatus(ctx, string(bytes.Repeat([]byte("a"), revocation.MaxStatusListName+1)), exp, nil, nil, revocation.StatusMeta{}),
		"partial record":  s.AppendStatus(ctx, "20-x", exp, nil, make([]byte, revocation.StatusRecordSize+1), revocation.StatusMeta{}),
		"bad class id":    s.AppendStatus(ctx, "20-x", exp, map[string][]byte{"short": []byte("{}")}, nil, revocation.StatusMeta{}),
		"read bad name":   func() error { _, _, _, _, err := s.ReadStatus(ctx, "", 0); return err }(),
		"read bad offset": func() error { _, _, _, _, err := s.ReadStatus(ctx, "20-x", 5); return err }(),
	} {
		if !errors.Is(err, revocation.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

func testStatusMeta(t *testing.T, s revocation.StatusStore) {
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	hb := time.UnixMilli(time.Now().UnixMilli())
	read := func() revocation.StatusMeta {
		t.Helper()
		_, _, m, found, err := s.ReadStatus(ctx, "20-meta", 0)
		if err != nil || !found {
			t.Fatalf("read: found %v, err %v", found, err)
		}
		return m
	}
	if err := s.AppendStatus(ctx, "20-meta", exp, nil, nil, revocation.StatusMeta{Heartbeat: hb}); err != nil {
		t.Fatal(err)
	}
	if m := read(); !m.Heartbeat.Equal(hb) || m.Sealed {
		t.Fatalf("meta %+v, want heartbeat %s, not sealed", m, hb)
	}
	// An older heartbeat (a late writer) does not move it back.
	if err := s.AppendStatus(ctx, "20-meta", exp, nil, nil, revocation.StatusMeta{Heartbeat: hb.Add(-time.Second)}); err != nil {
		t.Fatal(err)
	}
	if m := read(); !m.Heartbeat.Equal(hb) {
		t.Fatalf("heartbeat moved back to %s", m.Heartbeat)
	}
	if err := s.AppendStatus(ctx, "20-meta", exp, nil, nil, revocation.StatusMeta{Heartbeat: hb.Add(time.Second), Sealed: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendStatus(ctx, "20-meta", exp, nil, nil, revocation.StatusMeta{}); err != nil {
		t.Fatal(err)
	}
	if m := read(); !m.Heartbeat.Equal(hb.Add(time.Second)) || !m.Sealed {
		t.Fatalf("meta %+v, want the later heartbeat and sealed for good", m)
	}
}
