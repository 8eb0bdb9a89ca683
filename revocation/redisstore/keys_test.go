package redisstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/safeconduct/safeconduct/internal/testredis"
	"github.com/safeconduct/safeconduct/revocation"
)

// scanKeys lists the keys under prefix on every master.
func scanKeys(t *testing.T, client redis.UniversalClient, prefix string) []string {
	t.Helper()
	ctx := t.Context()
	var (
		mu   sync.Mutex
		keys []string
	)
	scan := func(ctx context.Context, c *redis.Client) error {
		it := c.Scan(ctx, 0, prefix+":*", 100).Iterator()
		for it.Next(ctx) {
			mu.Lock()
			keys = append(keys, it.Val())
			mu.Unlock()
		}
		return it.Err()
	}
	var err error
	switch c := client.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, scan)
	case *redis.Client:
		err = scan(ctx, c)
	default:
		t.Fatalf("unsupported client %T", client)
	}
	if err != nil {
		t.Fatalf("SCAN: %v", err)
	}
	return keys
}

// writeSample exercises every kind of key: revokes, expiring and open-ended
// blocks (one lifted), a binding that fired, and the feed.
func writeSample(t *testing.T, s *Store) (openBlock revocation.Entry) {
	t.Helper()
	ctx := t.Context()
	mk := func(kind revocation.Kind, sel string, expires time.Time) revocation.Entry {
		t.Helper()
		e, err := s.Create(ctx, revocation.Entry{Kind: kind, Selector: sel, Reason: "r", Actor: "a", Expires: expires})
		if err != nil {
			t.Fatalf("Create(%q): %v", sel, err)
		}
		return e
	}
	mk(revocation.KindRevoke, "sub=alice", time.Time{})
	mk(revocation.KindRevoke, `sub="{bob},x",aud=*`, time.Time{})
	mk(revocation.KindRevoke, "sub=spiffe://corp/ns/*", time.Now().Add(time.Hour))
	mk(revocation.KindBlock, "jti=sc:{rev}:e:x", time.Now().Add(time.Hour))
	openBlock = mk(revocation.KindBlock, "upstream=corp,attr.team=red", time.Time{})
	lifted := mk(revocation.KindBlock, "sub=carol", time.Time{})
	if _, err := s.Lift(ctx, lifted.ID, "a", "r"); err != nil {
		t.Fatal(err)
	}
	f := &revocation.Facts{Upstream: "corp", Subject: "\"q,{x}:alice", Binding: "fp1"}
	if _, err := s.Bind(ctx, "instance-1", f, time.Hour); err != nil {
		t.Fatal(err)
	}
	f.Binding = "fp2"
	if e, err := s.Bind(ctx, "instance-1", f, time.Hour); err != nil || e == nil {
		t.Fatalf("Bind = %v, %v; want a fired entry", e, err)
	}
	if _, _, err := s.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Admit(ctx, f, "instance-1"); err != nil {
		t.Fatal(err)
	}
	return openBlock
}

// checkKeys: every key shares the hash tag and carries no subject in clear, and
// every key expires except those holding only the open-ended block.
func checkKeys(t *testing.T, client redis.UniversalClient, prefix string, open revocation.Entry) {
	t.Helper()
	ctx := t.Context()
	keys := scanKeys(t, client, prefix)
	if len(keys) < 10 {
		t.Fatalf("only %d keys: %q", len(keys), keys)
	}
	s := New(client, Options{Prefix: prefix})
	openKeys := map[string]bool{
		s.entryKey(open.ID): true,
		s.openIndexKey():    true,
		s.bucketKey(revocation.KindBlock, true, revocation.MustParseSelector(open.Selector).Anchor()): true,
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, prefix+":"+hashTag+":") {
			t.Errorf("key %q does not start with %s:%s:", k, prefix, hashTag)
		}
		// The hash tag is the first {...}: the same for every key.
		if i := strings.IndexByte(k, '{'); k[i:i+strings.IndexByte(k[i:], '}')+1] != hashTag {
			t.Errorf("key %q has a hash tag other than %s", k, hashTag)
		}
		for _, sub := range []string{"alice", "bob", "\t", "\n", "instance"} {
			if strings.Contains(k, sub) {
				t.Errorf("key %q contains %q in clear", k, sub)
			}
		}
		ttl, err := client.PTTL(ctx, k).Result()
		if err != nil {
			t.Fatalf("PTTL %q: %v", k, err)
		}
		switch {
		case openKeys[k] && ttl != -1:
			t.Errorf("key %q of the open-ended block expires in %v", k, ttl)
		case !openKeys[k] && ttl <= 0:
			t.Errorf("key %q has no TTL (%v)", k, ttl)
		}
	}
	if cc, ok := client.(*redis.ClusterClient); ok {
		slots := map[int64]bool{}
		for _, k := range keys {
			slot, err := cc.ClusterKeySlot(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			slots[slot] = true
		}
		if len(slots) != 1 {
			t.Errorf("keys span slots %v, want one", slots)
		}
	}
	// Lifting the open-ended block leaves no key without expiry.
	if _, err := s.Lift(ctx, open.ID, "a", "r"); err != nil {
		t.Fatal(err)
	}
	for _, k := range scanKeys(t, client, prefix) {
		if ttl, err := client.PTTL(ctx, k).Result(); err != nil || ttl <= 0 {
			t.Errorf("after lifting, key %q has TTL %v, %v", k, ttl, err)
		}
	}
}

func TestKeysHaveTTLAndHashTag(t *testing.T) {
	client := newTestClient(t, Config{Addrs: []string{testredis.Start(t)}})
	prefix := testredis.Prefix(t)
	open := writeSample(t, New(client, Options{Prefix: prefix}))
	checkKeys(t, client, prefix, open)
}

func TestClusterKeysInOneSlot(t *testing.T) {
	client := newTestClient(t, Config{Addrs: testredis.StartCluster(t), Cluster: true})
	prefix := testredis.Prefix(t)
	open := writeSample(t, New(client, Options{Prefix: prefix}))
	checkKeys(t, client, prefix, open)
}

// assertFailsClosed checks every operation returns an error (never an admission or
// a "not revoked") within bound.
func assertFailsClosed(t *testing.T, s revocation.Store, bound time.Duration) {
	t.Helper()
	ctx := t.Context()
	f := &revocation.Facts{Upstream: "corp", Subject: "alice", Binding: "fp"}
	ops := map[string]func() error{
		"Admit": func() error { _, err := s.Admit(ctx, f, "inst"); return err },
		"Revoked": func() error {
			e, err := s.Revoked(ctx, f)
			if err == nil && e == nil {
				return nil
			}
			return err
		},
		"Create": func() error {
			_, err := s.Create(ctx, revocation.Entry{Kind: revocation.KindRevoke, Selector: "sub=a", Reason: "r", Actor: "a"})
			return err
		},
		"Lift":   func() error { _, err := s.Lift(ctx, "someid", "a", "r"); return err },
		"Bind":   func() error { _, err := s.Bind(ctx, "inst", f, time.Hour); return err },
		"List":   func() error { _, err := s.List(ctx, true); return err },
		"Events": func() error { _, _, err := s.Events(ctx, "", 10); return err },
		"Snapshot": func() error {
			_, _, err := s.Snapshot(ctx)
			return err
		},
		"Wait": func() error { return s.Wait(ctx, "") },
		"Ping": func() error { return s.Ping(ctx) },
	}
	for name, op := range ops {
		start := time.Now()
		err := op()
		elapsed := time.Since(start)
		if err == nil {
			t.Errorf("%s: nil error with Redis unreachable", name)
		} else if errors.Is(err, revocation.ErrBlocked) || errors.Is(err, revocation.ErrInvalid) || errors.Is(err, revocation.ErrNotFound) {
			t.Errorf("%s: %v, want a store error", name, err)
		} else if !strings.HasPrefix(err.Error(), "revocation: redisstore: ") {
			t.Errorf("%s: %q lacks the revocation: redisstore: prefix", name, err)
		}
		if elapsed > bound {
			t.Errorf("%s took %v, want at most %v", name, elapsed, bound)
		}
	}
}

func TestUnreachableFailsClosed(t *testing.T) {
	client := newTestClient(t, Config{Addrs: []string{testredis.ClosedAddr(t)}})
	const timeout = 200 * time.Millisecond
	s := New(client, Options{Prefix: testredis.Prefix(t), Timeout: timeout, WaitBlock: timeout})
	assertFailsClosed(t, s, 2*timeout+300*time.Millisecond)
}

func TestNoAddressFailsClosed(t *testing.T) {
	client := newTestClient(t, Config{})
	s := New(client, Options{Prefix: testredis.Prefix(t), Timeout: 100 * time.Millisecond, WaitBlock: 100 * time.Millisecond})
	assertFailsClosed(t, s, time.Second)
}

func TestStoppedMidTestFailsClosed(t *testing.T) {
	addr, stop := testredis.StartProcess(t)
	client := newTestClient(t, Config{Addrs: []string{addr}})
	const timeout = 200 * time.Millisecond
	s := New(client, Options{Prefix: testredis.Prefix(t), Timeout: timeout, WaitBlock: timeout})
	e, err := s.Create(t.Context(), revocation.Entry{Kind: revocation.KindRevoke, Selector: "sub=alice", Reason: "r", Actor: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Revoked(t.Context(), &revocation.Facts{Subject: "alice"}); err != nil || got == nil || got.ID != e.ID {
		t.Fatalf("Revoked = %v, %v", got, err)
	}
	stop() // pooled connections now point at a dead server
	assertFailsClosed(t, s, 2*timeout+300*time.Millisecond)
}

// TestSlowServerHitsDeadline pauses Redis: every call gives up at Timeout, a small
// pool does not run dry for good, and calls succeed again afterwards.
func TestSlowServerHitsDeadline(t *testing.T) {
	addr, _ := testredis.StartProcess(t)
	client := newTestClient(t, Config{Addrs: []string{addr}, PoolSize: 2})
	const timeout = 100 * time.Millisecond
	s := New(client, Options{Prefix: testredis.Prefix(t), Timeout: timeout})
	f := func(i int) *revocation.Facts { return &revocation.Facts{Upstream: "corp", Subject: fmt.Sprint("w", i)} }
	if _, err := s.Admit(t.Context(), f(0), ""); err != nil {
		t.Fatal(err)
	}
	const pause = 700 * time.Millisecond
	if _, err := testredis.Do(addr, time.Second, "CLIENT", "PAUSE", fmt.Sprint(pause.Milliseconds()), "ALL"); err != nil {
		t.Fatalf("CLIENT PAUSE: %v", err)
	}
	paused := time.Now()
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			start := time.Now()
			_, err := s.Admit(t.Context(), f(i), "")
			if err == nil || errors.Is(err, revocation.ErrInvalid) {
				t.Errorf("Admit during pause = %v, want a store error", err)
			}
			if elapsed := time.Since(start); elapsed > timeout+250*time.Millisecond {
				t.Errorf("Admit during pause took %v, want about %v", elapsed, timeout)
			}
		})
	}
	wg.Wait()
	if time.Since(paused) >= pause {
		t.Skip("the machine was too slow to observe the pause; nothing checked")
	}
	time.Sleep(time.Until(paused.Add(pause + 100*time.Millisecond)))
	deadline := time.Now().Add(2 * time.Second)
	for {
		_, err := s.Admit(t.Context(), f(0), "")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Admit after the pause: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestConfirmReplicas: with no replica, a write is reported as not confirmed; with
// one, it succeeds.
func TestConfirmReplicas(t *testing.T) {
	ctx := t.Context()
	primary, _ := testredis.StartProcess(t)
	client := newTestClient(t, Config{Addrs: []string{primary}})
	s := New(client, Options{Prefix: testredis.Prefix(t), ConfirmReplicas: true, ReplicaTimeout: 100 * time.Millisecond})
	e := revocation.Entry{Kind: revocation.KindRevoke, Selector: "sub=alice", Reason: "r", Actor: "a"}
	if _, err := s.Create(ctx, e); err == nil || !strings.Contains(err.Error(), "replica") {
		t.Errorf("Create without a replica = %v, want a replica error", err)
	}

	// Start the full sync at once (diskless sync otherwise waits 5 s for more replicas).
	if _, err := testredis.Do(primary, time.Second, "CONFIG", "SET", "repl-diskless-sync-delay", "0"); err != nil {
		t.Fatal(err)
	}
	replica, _ := testredis.StartProcess(t)
	host, port, _ := net.SplitHostPort(primary)
	if _, err := testredis.Do(replica, time.Second, "REPLICAOF", host, port); err != nil {
		t.Fatalf("REPLICAOF: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		info, err := testredis.Do(replica, time.Second, "INFO", "replication")
		if err == nil && strings.Contains(info, "master_link_status:up") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica not in sync: %q, %v", info, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The first acknowledgement after a full sync may wait for the replica's
	// periodic ACK (up to a second): allow for it, as the STS does (1 s).
	s = New(client, Options{Prefix: testredis.Prefix(t), ConfirmReplicas: true, ReplicaTimeout: 2 * time.Second})
	got, err := s.Create(ctx, e)
	if err != nil {
		t.Fatalf("Create with a replica: %v", err)
	}
	if _, err := s.Lift(ctx, got.ID, "a", "r"); err != nil {
		t.Errorf("Lift with a replica: %v", err)
	}
	f := &revocation.Facts{Upstream: "corp", Subject: "alice", Binding: "fp1"}
	if _, err := s.Bind(ctx, "i", f, time.Hour); err != nil {
		t.Errorf("Bind with a replica: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	ctx := t.Context()
	plain := redis.NewClient(&redis.Options{Addr: testredis.ClosedAddr(t)})
	t.Cleanup(func() { _ = plain.Close() })
	good := newTestClient(t, Config{Addrs: []string{testredis.ClosedAddr(t)}})
	for name, s := range map[string]*Store{
		"nil client":      New(nil, Options{}),
		"no ctx timeouts": New(plain, Options{}),
		"brace in prefix": New(good, Options{Prefix: "a{b}"}),
		"long prefix":     New(good, Options{Prefix: strings.Repeat("p", 65)}),
		"space in prefix": New(good, Options{Prefix: "a b"}),
	} {
		if err := s.Ping(ctx); err == nil {
			t.Errorf("%s: Ping succeeded", name)
		}
		if _, err := s.Admit(ctx, &revocation.Facts{Subject: "a"}, ""); err == nil {
			t.Errorf("%s: Admit succeeded", name)
		}
	}
}
