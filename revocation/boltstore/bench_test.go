package boltstore

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/safeconduct/safeconduct/revocation"
	"github.com/safeconduct/safeconduct/revocation/internal/backend"
)

// benchSizes are the numbers of active entries the benchmarks run with: the cost
// of Admit and Revoked must not grow with them.
var benchSizes = []int{0, 10_000, 1_000_000}

// benchFacts are the facts of a typical token: 15 anchors.
func benchFacts(i int) *revocation.Facts {
	return &revocation.Facts{
		JTI:         fmt.Sprintf("tok-%d", i),
		Subject:     fmt.Sprintf("spiffe://corp.example/ns/load/sa/w-%d", i),
		Upstream:    "corp",
		TrustDomain: "corp.example",
		ClientID:    "client",
		Audiences:   []string{"https://api.example"},
		Attributes:  map[string]string{"team": "blue", "image": "sha256:abc", "node": "n1"},
		Binding:     "fp",
		IssuedAt:    time.Now().Add(-time.Minute),
	}
}

// bulkLoad writes n entries straight into the file and the index, 10,000 per
// transaction (Create syncs each one, which would take hours for a million):
// revokes by jti for even i, blocks by subject for odd i.
func bulkLoad(tb testing.TB, s *Store, n int) {
	tb.Helper()
	now := time.Now()
	for start := 0; start < n; start += 10_000 {
		var batch []revocation.Entry
		for i := start; i < min(n, start+10_000); i++ {
			e := revocation.Entry{ID: backend.NewID(), Reason: "load", Actor: "bench", Created: now, Expires: now.Add(time.Hour)}
			if i%2 == 0 {
				e.Kind, e.Selector = revocation.KindRevoke, fmt.Sprintf("jti=tok-%d", i)
			} else {
				e.Kind, e.Selector = revocation.KindBlock, fmt.Sprintf("sub=spiffe://corp.example/ns/load/sa/w-%d", i)
			}
			batch = append(batch, e)
		}
		err := s.db.Update(func(tx *bolt.Tx) error {
			for _, e := range batch {
				if err := putJSON(tx.Bucket(bucketEntries), []byte(e.ID), record{Entry: e}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			tb.Fatal(err)
		}
		for _, e := range batch {
			if err := s.index.Put(e); err != nil {
				tb.Fatal(err)
			}
		}
	}
}

func benchStores(b *testing.B, run func(b *testing.B, s *Store, n int)) {
	for _, n := range benchSizes {
		s, err := Open(filepath.Join(b.TempDir(), "rev.db"), Options{JanitorInterval: -1})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		bulkLoad(b, s, n)
		b.Logf("loaded %d entries in %s", n, time.Since(start).Round(time.Millisecond))
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) { run(b, s, n) })
		_ = s.Close()
	}
}

func BenchmarkRevoked(b *testing.B) {
	benchStores(b, func(b *testing.B, s *Store, n int) {
		ctx := b.Context()
		miss, hit := benchFacts(-1), benchFacts(0)
		if e, err := s.Revoked(ctx, hit); n > 0 && (err != nil || e == nil) {
			b.Fatalf("Revoked(loaded jti) = %v, %v", e, err)
		}
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			f := miss
			if i%2 == 0 {
				f = hit
			}
			if _, err := s.Revoked(ctx, f); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkAdmit(b *testing.B) {
	benchStores(b, func(b *testing.B, s *Store, n int) {
		ctx := b.Context()
		f := benchFacts(-2) // an even i: no block
		if _, err := s.Bind(ctx, "inst", f, time.Hour); err != nil {
			b.Fatal(err)
		}
		if n > 0 {
			if _, err := s.Admit(ctx, benchFacts(1), ""); err == nil {
				b.Fatal("loaded block does not apply")
			}
		}
		b.ResetTimer()
		for b.Loop() {
			if _, err := s.Admit(ctx, f, "inst"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
