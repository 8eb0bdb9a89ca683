package storeguard_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/testproc"
	"github.com/safeconduct/safeconduct/internal/testredis"
	"github.com/safeconduct/safeconduct/revocation"
	"github.com/safeconduct/safeconduct/revocation/boltstore"
	"github.com/safeconduct/safeconduct/revocation/redisstore"
	"github.com/safeconduct/safeconduct/revocation/storeguard"
)

func logger() (*slog.Logger, *testproc.Buffer) {
	buf := &testproc.Buffer{}
	return slog.New(slog.NewJSONHandler(buf, nil)), buf
}

func guard(t *testing.T, st revocation.Store, opts storeguard.Options) *storeguard.Guard {
	t.Helper()
	if opts.Interval == 0 {
		opts.Interval = time.Hour // the tests call Check themselves
	}
	g, err := storeguard.New(st, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	return g
}

func openBolt(t *testing.T, path string, buf *slog.Logger) *storeguard.Guard {
	t.Helper()
	st, err := boltstore.Open(path, boltstore.Options{JanitorInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	return guard(t, st, storeguard.Options{Name: "embedded " + path, IdentityFile: path + ".id", Logger: buf})
}

var facts = &revocation.Facts{Upstream: "u", Subject: "blocked-workload"}

// wantLost checks that every kind of operation fails with ErrStoreLost.
func wantLost(t *testing.T, g *storeguard.Guard) {
	t.Helper()
	ctx := t.Context()
	if h := g.Health(); !h.Lost {
		t.Fatalf("Health = %+v, want Lost", h)
	}
	if err := g.Ping(ctx); !errors.Is(err, revocation.ErrStoreLost) {
		t.Fatalf("Ping = %v, want ErrStoreLost", err)
	}
	if _, err := g.Admit(ctx, facts, ""); !errors.Is(err, revocation.ErrStoreLost) {
		t.Fatalf("Admit = %v, want ErrStoreLost", err)
	}
	if _, err := g.Revoked(ctx, facts); !errors.Is(err, revocation.ErrStoreLost) {
		t.Fatalf("Revoked = %v, want ErrStoreLost", err)
	}
	if _, _, err := g.Snapshot(ctx); !errors.Is(err, revocation.ErrStoreLost) {
		t.Fatalf("Snapshot = %v, want ErrStoreLost", err)
	}
	if _, err := g.Create(ctx, revocation.Entry{Kind: revocation.KindRevoke, Selector: "sub=x", Reason: "r", Actor: "a"}); !errors.Is(err, revocation.ErrStoreLost) {
		t.Fatalf("Create = %v, want ErrStoreLost", err)
	}
}

func wantInOrder(t *testing.T, g *storeguard.Guard) {
	t.Helper()
	if h := g.Health(); h.Lost || !h.Writable {
		t.Fatalf("Health = %+v, want in order and writable", h)
	}
	if err := g.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func block(t *testing.T, g revocation.Store) {
	t.Helper()
	if _, err := g.Create(t.Context(), revocation.Entry{Kind: revocation.KindBlock, Selector: "sub=blocked-workload", Reason: "incident", Actor: "sec"}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Admit(t.Context(), facts, ""); !errors.Is(err, revocation.ErrBlocked) {
		t.Fatalf("Admit = %v, want ErrBlocked", err)
	}
}

// TestBoltLoss: a bbolt file truncated to zero length or deleted, while the
// identity file next to it remembers the store, is loss (not a new store) until
// the operator accepts it; a brand-new store is initialised and logged.
func TestBoltLoss(t *testing.T) {
	for _, damage := range []string{"truncated", "deleted"} {
		t.Run(damage, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "rev.db")
			log, buf := logger()
			g := openBolt(t, path, log)
			wantInOrder(t, g)
			if !strings.Contains(buf.String(), "revocation store initialised") {
				t.Fatalf("a new store is not logged as such:\n%s", buf)
			}
			block(t, g)
			_ = g.Close()

			if damage == "truncated" {
				if err := os.Truncate(path, 0); err != nil {
					t.Fatal(err)
				}
			} else if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			log, buf = logger()
			g = openBolt(t, path, log)
			wantLost(t, g)
			out := buf.String()
			if strings.Count(out, "REVOCATION STORE LOST") != 1 || !strings.Contains(out, "accept-loss") || !strings.Contains(out, path) {
				t.Fatalf("want one loss line naming the store and the command:\n%s", out)
			}
			g.Check(t.Context())
			wantLost(t, g) // still, and not logged again
			if n := strings.Count(buf.String(), "REVOCATION STORE LOST"); n != 1 {
				t.Fatalf("loss logged %d times", n)
			}

			// The operator accepts while the STS runs (it holds the file).
			if _, err := storeguard.AcceptLoss(t.Context(), nil, path+".id", time.Now()); err != nil {
				t.Fatal(err)
			}
			g.Check(t.Context())
			wantInOrder(t, g)
			if _, err := g.Admit(t.Context(), facts, ""); err != nil {
				t.Fatalf("after accept-loss Admit = %v (the block is gone with the data)", err)
			}
			_ = g.Close()

			// A restart is in order: the acceptance is not replayed on a later loss.
			g = openBolt(t, path, log)
			wantInOrder(t, g)
			_ = g.Close()
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
			g = openBolt(t, path, log)
			wantLost(t, g)
		})
	}
}

// TestBoltReplacedIsLoss: another store's file put in place is loss too.
func TestBoltReplacedIsLoss(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")
	log, _ := logger()
	_ = openBolt(t, a, log).Close()
	_ = openBolt(t, b, log).Close()
	if err := os.Rename(b, a); err != nil {
		t.Fatal(err)
	}
	wantLost(t, openBolt(t, a, log))
}

func openRedis(t *testing.T, addr, prefix, idFile string, log *slog.Logger, interval time.Duration) *storeguard.Guard {
	t.Helper()
	client := redisstore.NewClient(redisstore.Config{Addrs: []string{addr}})
	t.Cleanup(func() { _ = client.Close() })
	st := redisstore.New(client, redisstore.Options{Prefix: prefix})
	return guard(t, st, storeguard.Options{Name: "redis " + addr, IdentityFile: idFile, Logger: log, Interval: interval})
}

// TestRedisFlushed: replicas running against a Redis that is flushed (or
// restarted empty) notice it at their next check and refuse service; a replica
// starting against it whose identity file remembers the store does too; the
// operator's accept-loss, written into Redis, is adopted by every replica
// without a restart.
func TestRedisFlushed(t *testing.T) {
	addr, _ := testredis.StartProcess(t)
	prefix := testredis.Prefix(t)
	idFile := filepath.Join(t.TempDir(), "rev.id")
	log, buf := logger()
	r1 := openRedis(t, addr, prefix, idFile, log, 100*time.Millisecond) // checks on its own
	r2 := openRedis(t, addr, prefix, "", log, time.Hour)
	wantInOrder(t, r1)
	wantInOrder(t, r2)
	block(t, r1)

	if _, err := testredis.Do(addr, time.Second, "FLUSHALL"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !r1.Health().Lost && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	wantLost(t, r1)
	r2.Check(t.Context())
	wantLost(t, r2)
	if !strings.Contains(buf.String(), "REVOCATION STORE LOST") {
		t.Fatalf("no loss line:\n%s", buf)
	}
	// A replica (re)starting with the identity file still refuses.
	r3 := openRedis(t, addr, prefix, idFile, log, time.Hour)
	wantLost(t, r3)

	ctx := context.Background()
	client := redisstore.NewClient(redisstore.Config{Addrs: []string{addr}})
	defer client.Close()
	st := redisstore.New(client, redisstore.Options{Prefix: prefix})
	id, err := storeguard.AcceptLoss(ctx, st, "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*storeguard.Guard{r2, r3} {
		r.Check(t.Context())
		wantInOrder(t, r)
	}
	deadline = time.Now().Add(10 * time.Second)
	for r1.Health().Lost && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	wantInOrder(t, r1)
	if b, err := os.ReadFile(idFile); err != nil || !strings.Contains(string(b), id.ID) || strings.Contains(string(b), "accepted") {
		t.Fatalf("identity file = %s, %v; want %s, not marked accepted", b, err, id.ID)
	}
}

// TestRedisNew: a brand-new Redis (no identity anywhere) is initialised, and a
// second replica joins it.
func TestRedisNew(t *testing.T) {
	addr := testredis.Start(t)
	prefix := testredis.Prefix(t)
	log, buf := logger()
	wantInOrder(t, openRedis(t, addr, prefix, filepath.Join(t.TempDir(), "a.id"), log, time.Hour))
	wantInOrder(t, openRedis(t, addr, prefix, filepath.Join(t.TempDir(), "b.id"), log, time.Hour))
	if n := strings.Count(buf.String(), "revocation store initialised"); n != 1 {
		t.Fatalf("initialised logged %d times:\n%s", n, buf)
	}
}

// TestNotWritable: a Redis whose writes are not confirmed by a replica (a master
// left without replica, as after a failover with one replica per master) makes
// Ping fail with ErrNotWritable, while reads (admission) go on.
func TestNotWritable(t *testing.T) {
	addr := testredis.Start(t)
	client := redisstore.NewClient(redisstore.Config{Addrs: []string{addr}})
	t.Cleanup(func() { _ = client.Close() })
	st := redisstore.New(client, redisstore.Options{Prefix: testredis.Prefix(t), ConfirmReplicas: true, ReplicaTimeout: 50 * time.Millisecond})
	log, buf := logger()
	g := guard(t, st, storeguard.Options{Name: "redis " + addr, Logger: log})
	if h := g.Health(); h.Writable || h.Lost {
		t.Fatalf("Health = %+v, want not writable, not lost", h)
	}
	if err := g.Ping(t.Context()); !errors.Is(err, revocation.ErrNotWritable) {
		t.Fatalf("Ping = %v, want ErrNotWritable", err)
	}
	if !strings.Contains(buf.String(), "cannot record revocations") {
		t.Fatalf("no warning:\n%s", buf)
	}
}

// TestRedisConcurrentInit: replicas starting at once against a new Redis agree
// on one identity (none of them then sees "another identity" as a loss).
func TestRedisConcurrentInit(t *testing.T) {
	addr := testredis.Start(t)
	prefix := testredis.Prefix(t)
	log, _ := logger()
	gs := make([]*storeguard.Guard, 4)
	var wg sync.WaitGroup
	for i := range gs {
		wg.Go(func() { gs[i] = openRedis(t, addr, prefix, "", log, time.Hour) })
	}
	wg.Wait()
	for _, g := range gs {
		g.Check(t.Context())
		wantInOrder(t, g)
	}
}
