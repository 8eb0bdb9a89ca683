package redisstore

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/safeconduct/safeconduct/internal/testredis"
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

// bulkLoad writes n entries with the layout createScript writes (entry key,
// bucket, index; not the feed, which is capped anyway), in pipelines of 10,000:
// revokes by jti for even i, blocks by subject for odd i.
func bulkLoad(tb testing.TB, s *Store, n int) {
	tb.Helper()
	ctx := tb.Context()
	now := time.Now()
	exp := now.Add(time.Hour).UnixMilli()
	for start := 0; start < n; start += 10_000 {
		pipe := s.client.Pipeline()
		for i := start; i < min(n, start+10_000); i++ {
			e := revocation.Entry{ID: backend.NewID(), Reason: "load", Actor: "bench", Created: now, Expires: time.UnixMilli(exp)}
			if i%2 == 0 {
				e.Kind, e.Selector = revocation.KindRevoke, fmt.Sprintf("jti=tok-%d", i)
			} else {
				e.Kind, e.Selector = revocation.KindBlock, fmt.Sprintf("sub=spiffe://corp.example/ns/load/sa/w-%d", i)
			}
			js, err := e.MarshalJSON()
			if err != nil {
				tb.Fatal(err)
			}
			bucket := s.bucketKey(e.Kind, false, revocation.MustParseSelector(e.Selector).Anchor())
			pipe.Set(ctx, s.entryKey(e.ID), js, 0)
			pipe.PExpireAt(ctx, s.entryKey(e.ID), time.UnixMilli(exp))
			pipe.HSet(ctx, bucket, e.ID, js)
			pipe.PExpireAt(ctx, bucket, time.UnixMilli(exp))
			pipe.ZAdd(ctx, s.indexKey(), redis.Z{Score: float64(exp), Member: e.ID})
		}
		pipe.PExpireAt(ctx, s.indexKey(), time.UnixMilli(exp))
		if _, err := pipe.Exec(ctx); err != nil {
			tb.Fatal(err)
		}
	}
}

// usedMemory returns INFO memory's used_memory.
func usedMemory(tb testing.TB, client redis.UniversalClient) int64 {
	tb.Helper()
	info, err := client.Info(tb.Context(), "memory").Result()
	if err != nil {
		tb.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return n
		}
	}
	tb.Fatal("no used_memory in INFO memory")
	return 0
}

func benchStores(b *testing.B, run func(b *testing.B, s *Store, n int)) {
	// A private server per benchmark, flushed between sizes, so memory and timing
	// are not shared with anything else.
	addr, _ := testredis.StartProcess(b)
	client := newTestClient(b, Config{Addrs: []string{addr}, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second})
	sizes := benchSizes
	if env := os.Getenv("REVOCATION_BENCH_SIZES"); env != "" {
		sizes = nil
		for f := range strings.SplitSeq(env, ",") {
			n, err := strconv.Atoi(f)
			if err != nil {
				b.Fatalf("REVOCATION_BENCH_SIZES: %v", err)
			}
			sizes = append(sizes, n)
		}
	}
	for _, n := range sizes {
		if err := client.FlushAll(b.Context()).Err(); err != nil {
			b.Fatal(err)
		}
		s := New(client, Options{Prefix: "bench", Timeout: 10 * time.Second})
		before := usedMemory(b, client)
		start := time.Now()
		bulkLoad(b, s, n)
		if n > 0 {
			b.Logf("loaded %d entries in %s: %d bytes per entry (INFO used_memory)", n, time.Since(start).Round(time.Millisecond), (usedMemory(b, client)-before)/int64(n))
		}
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) { run(b, s, n) })
	}
}

func BenchmarkRevoked(b *testing.B) {
	benchStores(b, func(b *testing.B, s *Store, n int) {
		ctx := b.Context()
		miss, hit := benchFacts(-1), benchFacts(0)
		if e, err := s.Revoked(ctx, hit); n > 0 && (err != nil || e == nil) {
			b.Fatalf("Revoked(loaded jti) = %v, %v", e, err)
		}
		for _, c := range []struct {
			name string
			f    *revocation.Facts
		}{{"miss", miss}, {"hit", hit}} {
			b.Run(c.name, func(b *testing.B) {
				for b.Loop() {
					if _, err := s.Revoked(ctx, c.f); err != nil {
						b.Fatal(err)
					}
				}
			})
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

// TestMemoryPerEntry creates entries through Create (entry key, bucket, index and
// a feed event each) and logs Redis's memory per entry.
func TestMemoryPerEntry(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	addr, _ := testredis.StartProcess(t)
	client := newTestClient(t, Config{Addrs: []string{addr}})
	s := New(client, Options{Prefix: testredis.Prefix(t)})
	ctx := t.Context()
	// The first write creates the index, feed and meta keys: not per entry.
	if _, err := s.Create(ctx, revocation.Entry{Kind: revocation.KindRevoke, Selector: "jti=first", Reason: "r", Actor: "a"}); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	before := usedMemory(t, client)
	for i := range n {
		sel := fmt.Sprintf("jti=tok-%d", i)
		if _, err := s.Create(ctx, revocation.Entry{Kind: revocation.KindRevoke, Selector: sel, Reason: "compromised", Actor: "admin@example"}); err != nil {
			t.Fatal(err)
		}
	}
	perEntry := (usedMemory(t, client) - before) / n
	t.Logf("Redis memory per revoke entry created with Create: %d bytes (entry key, bucket, index and its feed event)", perEntry)
	if perEntry > 4096 {
		t.Errorf("%d bytes per entry: the layout grew", perEntry)
	}
}
