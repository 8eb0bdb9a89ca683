package revocation

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/testredis"
)

// BenchmarkAdmit measures the per-exchange check on the common path (not blocked) and
// on a blocked workload.
func BenchmarkAdmit(b *testing.B) {
	backends := []struct {
		name string
		open func(b *testing.B) Store
	}{
		{"embedded", func(b *testing.B) Store {
			s, err := OpenEmbedded(filepath.Join(b.TempDir(), "r.db"), EmbeddedOptions{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = s.Close() })
			return s
		}},
		{"redis", func(b *testing.B) Store {
			client := NewRedisClient(RedisConfig{Addrs: []string{testredis.Start(b)}})
			b.Cleanup(func() { _ = client.Close() })
			s := NewRedis(client, RedisOptions{Prefix: testredis.Prefix(b)})
			b.Cleanup(func() { _ = s.Close() })
			return s
		}},
	}
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			s := be.open(b)
			ctx := b.Context()
			if err := s.BlockSubject(ctx, "corp", "blocked", time.Now().Add(time.Hour), "bench"); err != nil {
				b.Fatal(err)
			}
			for _, tc := range []struct {
				name    string
				subject string
				blocked bool
			}{{"admitted", "spiffe://example.org/ns/prod/sa/api", false}, {"blocked", "blocked", true}} {
				b.Run(tc.name, func(b *testing.B) {
					q := Query{Upstream: "corp", Subject: tc.subject}
					b.ReportAllocs()
					for b.Loop() {
						if err := s.Admit(ctx, q); (err != nil) != tc.blocked {
							b.Fatalf("Admit = %v", err)
						}
					}
				})
			}
		})
	}
}
