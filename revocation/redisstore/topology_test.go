package redisstore_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/safeconduct/safeconduct/internal/testredis"
	"github.com/safeconduct/safeconduct/revocation"
	"github.com/safeconduct/safeconduct/revocation/redisstore"
	"github.com/safeconduct/safeconduct/revocation/revocationtest"
)

// These tests run the store on real replicated topologies (testredis starts a
// Sentinel deployment and a six-node Cluster) with ConfirmReplicas, and check the
// promise that option makes: a write Create acknowledged survives the loss of the
// primary (or Cluster master) that took it.

// topologyClient returns redisstore.NewClient(cfg), closed when t ends.
func topologyClient(t *testing.T, cfg redisstore.Config) redis.UniversalClient {
	t.Helper()
	c := redisstore.NewClient(cfg)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// topologyStore returns a store with ConfirmReplicas on client, closed when t ends.
// The replica gets 1 s rather than the default 250 ms to acknowledge a write: with
// -race on a small machine running a dozen redis-servers, an acknowledgement once
// took longer than 250 ms.
func topologyStore(t *testing.T, client redis.UniversalClient, prefix string) *redisstore.Store {
	t.Helper()
	s := redisstore.New(client, redisstore.Options{Prefix: prefix, ConfirmReplicas: true, ReplicaTimeout: time.Second})
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func sentinelConfig(s *testredis.Sentinel) redisstore.Config {
	return redisstore.Config{Addrs: s.SentinelAddrs(), MasterName: s.MasterName()}
}

func clusterConfig(c *testredis.Cluster) redisstore.Config {
	return redisstore.Config{Addrs: c.Addrs(), Cluster: true, ClusterStateReloadInterval: time.Second}
}

func TestSentinelConformance(t *testing.T) {
	s := testredis.StartSentinel(t)
	client := topologyClient(t, sentinelConfig(s))
	if _, ok := client.(*redis.Client); !ok {
		t.Fatalf("NewClient with MasterName: %T, want the *redis.Client of a FailoverClient", client)
	}
	revocationtest.Run(t, func(t *testing.T) revocation.Store {
		return topologyStore(t, client, testredis.Prefix(t))
	})
}

func TestCluster6Conformance(t *testing.T) {
	c := testredis.StartCluster6(t)
	client := topologyClient(t, clusterConfig(c))
	if _, ok := client.(*redis.ClusterClient); !ok {
		t.Fatalf("NewClient with Cluster: %T, want *redis.ClusterClient", client)
	}
	revocationtest.Run(t, func(t *testing.T) revocation.Store {
		return topologyStore(t, client, testredis.Prefix(t))
	})
}

func TestSentinelFailoverKeepsAcknowledgedRevocations(t *testing.T) {
	s := testredis.StartSentinel(t)
	var killed string
	testFailover(t, sentinelConfig(s),
		func(t *testing.T) {
			killed = s.FailoverByKill(t)
		},
		func(t *testing.T) {
			s.Restart(t, killed)
		})
}

func TestCluster6FailoverKeepsAcknowledgedRevocations(t *testing.T) {
	c := testredis.StartCluster6(t)
	// Every key of the store shares the {rev} hash tag: one slot, one master.
	master := c.MasterForKey("{rev}")
	testFailover(t, clusterConfig(c),
		func(t *testing.T) {
			if promoted := c.KillMaster(t, master); c.MasterForKey("{rev}") != promoted {
				t.Fatalf("{rev} is served by %s, not the promoted %s", c.MasterForKey("{rev}"), promoted)
			}
		},
		func(t *testing.T) {
			c.Restart(t, master)
		})
}

const (
	// failoverRevocations is how many revocations are acknowledged before the
	// failover.
	failoverRevocations = 25
	// recoverWithin bounds how long after the topology has failed over (and,
	// for writes, after the old node is back as a replica) the store must work.
	recoverWithin = 10 * time.Second
)

// revocationFacts returns the facts of a token matching the revocation "jti=<jti>",
// issued before it.
func revocationFacts(jti string) *revocation.Facts {
	return &revocation.Facts{JTI: jti, Subject: "spiffe://corp.example/ns/prod/sa/" + jti, IssuedAt: time.Now().Add(-time.Hour)}
}

// testFailover acknowledges revocations (some of them while the primary dies),
// fails the primary over with fail, then checks with a fresh client, and with the
// original one, that every acknowledged revocation is still there (Revoked and
// List); that no write is acknowledged while no replica can confirm it; and, once
// restore has brought the old node back as a replica, that new revocations are
// created again.
func testFailover(t *testing.T, cfg redisstore.Config, fail, restore func(t *testing.T)) {
	ctx := t.Context()
	prefix := testredis.Prefix(t)
	store := topologyStore(t, topologyClient(t, cfg), prefix)

	var (
		mu    sync.Mutex
		acked = map[string]string{} // jti -> entry ID
	)
	createRevoke := func(ctx context.Context, st *redisstore.Store, jti string) error {
		e, err := st.Create(ctx, revocation.Entry{Kind: revocation.KindRevoke, Selector: "jti=" + jti, Reason: "failover test", Actor: "tester"})
		if err != nil {
			return err
		}
		mu.Lock()
		acked[jti] = e.ID
		mu.Unlock()
		return nil
	}
	for i := range failoverRevocations {
		if err := createRevoke(ctx, store, fmt.Sprintf("before-%d", i)); err != nil {
			t.Fatalf("Create before the failover: %v", err)
		}
	}

	// A writer keeps creating while the primary dies: its acknowledged writes must
	// survive too; the others failed (and may or may not exist).
	stop := make(chan struct{})
	var (
		writer         sync.WaitGroup
		during, failed int
	)
	writer.Add(1)
	go func() {
		defer writer.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := createRevoke(ctx, store, fmt.Sprintf("during-%d", i)); err != nil {
				failed++
				time.Sleep(20 * time.Millisecond)
			} else {
				during++
			}
		}
	}()
	time.Sleep(200 * time.Millisecond)
	begin := time.Now()
	fail(t)
	t.Logf("failover took %s", time.Since(begin).Round(time.Millisecond))
	close(stop)
	writer.Wait()
	t.Logf("writer during the failover: %d acknowledged, %d failed", during, failed)
	mu.Lock()
	want := maps.Clone(acked)
	mu.Unlock()

	// Every acknowledged revocation is still there, for a fresh client and for the
	// one that lived through the failover.
	fresh := topologyStore(t, topologyClient(t, cfg), prefix)
	for name, st := range map[string]*redisstore.Store{"fresh client": fresh, "original client": store} {
		took := topologyEventually(t, recoverWithin, name+": List", func(ctx context.Context) error {
			return wantListed(ctx, st, want)
		})
		t.Logf("%s: all %d acknowledged revocations listed %s after the failover", name, len(want), took.Round(time.Millisecond))
		for jti, id := range want {
			topologyEventually(t, recoverWithin, name+": Revoked("+jti+")", func(ctx context.Context) error {
				e, err := st.Revoked(ctx, revocationFacts(jti))
				if err != nil {
					return err
				}
				if e == nil || e.ID != id {
					return fmt.Errorf("Revoked(%s) = %+v, want entry %s", jti, e, id)
				}
				return nil
			})
		}
	}

	// The promoted node has no replica yet: nothing can be confirmed, so nothing
	// is acknowledged (fail closed).
	if _, err := fresh.Create(ctx, revocation.Entry{Kind: revocation.KindRevoke, Selector: "jti=unconfirmable", Reason: "failover test", Actor: "tester"}); err == nil {
		t.Fatal("Create with no replica to confirm it succeeded; want an error")
	}

	// Once the old node is back as a replica, writes are acknowledged again.
	restore(t)
	for name, st := range map[string]*redisstore.Store{"fresh": fresh, "original": store} {
		took := topologyEventually(t, recoverWithin, name+" client: Create after restore", func(ctx context.Context) error {
			return createRevoke(ctx, st, "after-"+name)
		})
		t.Logf("%s client: Create acknowledged %s after the replica came back", name, took.Round(time.Millisecond))
	}
	mu.Lock()
	want = maps.Clone(acked)
	mu.Unlock()
	if err := wantListed(ctx, fresh, want); err != nil {
		t.Fatal(err)
	}
}

// wantListed checks that List returns (at least) the entries of want, each with its ID.
func wantListed(ctx context.Context, st *redisstore.Store, want map[string]string) error {
	entries, err := st.List(ctx, false)
	if err != nil {
		return err
	}
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i] = e.ID
	}
	for jti, id := range want {
		if !slices.Contains(ids, id) {
			return fmt.Errorf("List lacks acknowledged revocation %s (jti=%s); %d listed", id, jti, len(ids))
		}
	}
	return nil
}

// eventually retries f (each try bounded to 2 s) until it succeeds or within
// passes, and returns how long it took.
func topologyEventually(t *testing.T, within time.Duration, what string, f func(ctx context.Context) error) time.Duration {
	t.Helper()
	begin := time.Now()
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		err := f(ctx)
		cancel()
		if err == nil {
			return time.Since(begin)
		}
		if time.Since(begin) > within {
			t.Fatalf("%s: still failing after %s: %v", what, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
