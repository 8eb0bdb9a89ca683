package redisstore

import (
	"context"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/safeconduct/safeconduct/internal/testredis"
	"github.com/safeconduct/safeconduct/revocation"
	"github.com/safeconduct/safeconduct/revocation/revocationtest"
)

// quietLogger drops go-redis's own log lines: the fail-closed tests provoke dial
// failures on purpose, and the assertions check the errors that matter.
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

func TestMain(m *testing.M) {
	redis.SetLogger(quietLogger{})
	os.Exit(m.Run())
}

func newTestClient(t testing.TB, cfg Config) redis.UniversalClient {
	t.Helper()
	c := NewClient(cfg)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func opener(client redis.UniversalClient) func(t *testing.T) revocation.Store {
	return func(t *testing.T) revocation.Store {
		s := New(client, Options{Prefix: testredis.Prefix(t)})
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
}

func TestConformance(t *testing.T) {
	client := newTestClient(t, Config{Addrs: []string{testredis.Start(t)}})
	revocationtest.Run(t, opener(client))
}

func TestClusterConformance(t *testing.T) {
	client := newTestClient(t, Config{Addrs: testredis.StartCluster(t), Cluster: true})
	if _, ok := client.(*redis.ClusterClient); !ok {
		t.Fatalf("NewClient with Cluster: %T, want *redis.ClusterClient", client)
	}
	revocationtest.Run(t, opener(client))
}

func TestStatusConformance(t *testing.T) {
	client := newTestClient(t, Config{Addrs: []string{testredis.Start(t)}})
	revocationtest.RunStatus(t, opener(client))
}

// TestClusterStatusConformance: on a Cluster each list's keys share one slot of
// their own ({sl:NAME}), apart from the {rev} slot.
func TestClusterStatusConformance(t *testing.T) {
	client := newTestClient(t, Config{Addrs: testredis.StartCluster(t), Cluster: true})
	revocationtest.RunStatus(t, opener(client))
	s := New(client, Options{Prefix: "p"})
	r, c := s.statusKeys("20-abc")
	if r != "p:{sl:20-abc}:r" || c != "p:{sl:20-abc}:c" {
		t.Fatalf("keys %s %s", r, c)
	}
}
