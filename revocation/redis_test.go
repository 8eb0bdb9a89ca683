package revocation

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/safeconduct/safeconduct/internal/testredis"
)

// redisOpener returns an opener of stores with a fresh random prefix each, all on
// client, so the subtests share one server without seeing each other's keys.
func redisOpener(client redis.UniversalClient) opener {
	return func(t *testing.T, now func() time.Time) Store {
		s := NewRedis(client, RedisOptions{Prefix: testredis.Prefix(t), Now: now})
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
}

func newTestClient(t testing.TB, cfg RedisConfig) redis.UniversalClient {
	t.Helper()
	c := NewRedisClient(cfg)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestRedisConformance(t *testing.T) {
	client := newTestClient(t, RedisConfig{Addrs: []string{testredis.Start(t)}})
	runConformance(t, redisOpener(client))
}

func TestRedisClusterConformance(t *testing.T) {
	addrs := testredis.StartCluster(t)
	client := newTestClient(t, RedisConfig{Addrs: addrs, Cluster: true})
	if _, ok := client.(*redis.ClusterClient); !ok {
		t.Fatalf("NewRedisClient with Cluster: %T, want *redis.ClusterClient", client)
	}
	runConformance(t, redisOpener(client))

	// Every key of a store hashes to one slot, so Admit's MGET never gets CROSSSLOT.
	ctx := t.Context()
	prefix := testredis.Prefix(t)
	s := NewRedis(client, RedisOptions{Prefix: prefix})
	writeSample(t, s)
	cc := client.(*redis.ClusterClient)
	keys := scanKeys(t, client, prefix)
	if len(keys) == 0 {
		t.Fatal("no keys written")
	}
	slots := map[int64]bool{}
	for _, k := range keys {
		slot, err := cc.ClusterKeySlot(ctx, k).Result()
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT %q: %v", k, err)
		}
		slots[slot] = true
	}
	if len(slots) != 1 {
		t.Errorf("keys span slots %v, want one", slots)
	}
}

// writeSample writes a few entries with a real clock and returns their expiry.
func writeSample(t *testing.T, s Store) time.Time {
	t.Helper()
	ctx := t.Context()
	until := time.Now().Add(10 * time.Minute)
	for _, jti := range []string{"jti-1", "jti-2", "{jti}:3"} {
		if err := s.RevokeToken(ctx, jti, until, "r"); err != nil {
			t.Fatalf("RevokeToken: %v", err)
		}
	}
	for _, sub := range []string{"alice", "{bob}", "sc:{rev}:jti:jti-1", "tab\tnl\n"} {
		if err := s.BlockSubject(ctx, "corp", sub, until, "r"); err != nil {
			t.Fatalf("BlockSubject: %v", err)
		}
	}
	return until
}

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

func TestRedisKeysHaveTTLAndLayout(t *testing.T) {
	ctx := t.Context()
	client := newTestClient(t, RedisConfig{Addrs: []string{testredis.Start(t)}})
	prefix := testredis.Prefix(t)
	s := NewRedis(client, RedisOptions{Prefix: prefix})
	until := writeSample(t, s)

	keys := scanKeys(t, client, prefix)
	if len(keys) != 7 {
		t.Fatalf("%d keys under %s: %q; want 7", len(keys), prefix, keys)
	}
	layout := regexp.MustCompile(`^` + prefix + `:\{rev\}:(jti:[\x21-\x7e]+|block:[0-9a-f]{64})$`)
	for _, k := range keys {
		if !layout.MatchString(k) {
			t.Errorf("key %q does not follow the layout", k)
		}
		// The hash tag is the first {...}: the same for every key.
		if i := strings.IndexByte(k, '{'); k[i:i+strings.IndexByte(k[i:], '}')+1] != hashTag {
			t.Errorf("key %q has hash tag other than %s", k, hashTag)
		}
		for _, sub := range []string{"alice", "bob", "\t", "\n"} {
			if strings.Contains(k, sub) {
				t.Errorf("key %q contains subject %q in clear", k, sub)
			}
		}
		// PEXPIRETIME (Redis 7) gives the absolute expiry: exactly until, rounded up to
		// the millisecond.
		at, err := client.Do(ctx, "PEXPIRETIME", k).Int64()
		if err != nil {
			t.Fatalf("PEXPIRETIME %q: %v", k, err)
		}
		if at != untilMillis(until) {
			t.Errorf("key %q expires at %d, want %d", k, at, untilMillis(until))
		}
		if ttl, err := client.PTTL(ctx, k).Result(); err != nil || ttl <= 0 {
			t.Errorf("PTTL %q = %v, %v; want > 0", k, ttl, err)
		}
	}
}

// TestRedisEntriesExpireInRedis uses the real clock: the key is gone from Redis once
// until has passed, not only hidden by the store's clock check.
func TestRedisEntriesExpireInRedis(t *testing.T) {
	ctx := t.Context()
	client := newTestClient(t, RedisConfig{Addrs: []string{testredis.Start(t)}})
	prefix := testredis.Prefix(t)
	s := NewRedis(client, RedisOptions{Prefix: prefix})
	until := time.Now().Add(300 * time.Millisecond)
	if err := s.RevokeToken(ctx, "jti-1", until, "r"); err != nil {
		t.Fatal(err)
	}
	if err := s.BlockSubject(ctx, "corp", "alice", until, "r"); err != nil {
		t.Fatal(err)
	}
	assertRevoked(t, s, "jti-1", true)
	assertAdmit(t, s, "corp", "alice", true)
	// Same machine, same clock: once until has passed (plus the rounding to the
	// millisecond), Redis's lazy expiry hides the keys on access.
	time.Sleep(time.Until(until) + 10*time.Millisecond)
	if n := len(scanKeys(t, client, prefix)); n != 0 {
		t.Errorf("%d keys left after until", n)
	}
	rs := s.(*redisStore)
	if n, err := client.Exists(ctx, rs.jtiKey("jti-1"), rs.blockKey("corp", "alice")).Result(); err != nil || n != 0 {
		t.Errorf("EXISTS after until = %d, %v; want 0", n, err)
	}
	assertRevoked(t, s, "jti-1", false)
	assertAdmit(t, s, "corp", "alice", false)
}

// assertFailsClosed checks every operation returns an error (never an admission or a
// "not revoked") within bound.
func assertFailsClosed(t *testing.T, s Store, bound time.Duration) {
	t.Helper()
	ctx := t.Context()
	later := time.Now().Add(time.Hour)
	ops := map[string]func() error{
		"Admit": func() error { return s.Admit(ctx, Query{Upstream: "corp", Subject: "alice"}) },
		"TokenRevoked": func() error {
			revoked, err := s.TokenRevoked(ctx, "jti-1")
			if err == nil && !revoked {
				return nil
			}
			if revoked {
				return fmt.Errorf("revoked=true with err %w", err)
			}
			return err
		},
		"RevokeToken":  func() error { return s.RevokeToken(ctx, "jti-2", later, "r") },
		"BlockSubject": func() error { return s.BlockSubject(ctx, "corp", "bob", later, "r") },
		"Ping":         func() error { return s.Ping(ctx) },
	}
	for name, op := range ops {
		start := time.Now()
		err := op()
		elapsed := time.Since(start)
		if err == nil {
			t.Errorf("%s: nil error with Redis unreachable", name)
		} else if errors.Is(err, ErrBlocked) || errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want a store error", name, err)
		} else if !strings.HasPrefix(err.Error(), "revocation: redis: ") {
			t.Errorf("%s: %q lacks the revocation: redis: prefix", name, err)
		}
		if elapsed > bound {
			t.Errorf("%s took %v, want at most %v", name, elapsed, bound)
		}
	}
}

func TestRedisUnreachableFailsClosed(t *testing.T) {
	client := newTestClient(t, RedisConfig{Addrs: []string{testredis.ClosedAddr(t)}})
	const timeout = 200 * time.Millisecond
	s := NewRedis(client, RedisOptions{Prefix: testredis.Prefix(t), Timeout: timeout})
	assertFailsClosed(t, s, timeout+300*time.Millisecond)
}

func TestRedisStoppedMidTestFailsClosed(t *testing.T) {
	addr, stop := testredis.StartProcess(t)
	client := newTestClient(t, RedisConfig{Addrs: []string{addr}})
	const timeout = 200 * time.Millisecond
	s := NewRedis(client, RedisOptions{Prefix: testredis.Prefix(t), Timeout: timeout})
	if err := s.RevokeToken(t.Context(), "jti-1", time.Now().Add(time.Hour), "r"); err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	assertRevoked(t, s, "jti-1", true)
	stop() // pooled connections now point at a dead server
	assertFailsClosed(t, s, timeout+300*time.Millisecond)
}

// TestRedisSlowServerHitsDeadline pauses Redis: every call must give up at Timeout,
// a small pool must not run dry for good, and calls succeed again afterwards.
func TestRedisSlowServerHitsDeadline(t *testing.T) {
	addr, _ := testredis.StartProcess(t)
	client := newTestClient(t, RedisConfig{Addrs: []string{addr}, PoolSize: 2})
	const timeout = 100 * time.Millisecond
	s := NewRedis(client, RedisOptions{Prefix: testredis.Prefix(t), Timeout: timeout})
	assertAdmit(t, s, "corp", "alice", false)

	const pause = 700 * time.Millisecond
	if _, err := testredis.Do(addr, time.Second, "CLIENT", "PAUSE", fmt.Sprint(pause.Milliseconds()), "ALL"); err != nil {
		t.Fatalf("CLIENT PAUSE: %v", err)
	}
	paused := time.Now()
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			start := time.Now()
			err := s.Admit(t.Context(), Query{Upstream: "corp", Subject: fmt.Sprint("w", i)})
			if err == nil || errors.Is(err, ErrInvalid) {
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
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := s.Admit(t.Context(), Query{Upstream: "corp", Subject: "alice"})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Admit still failing 5s after the pause: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRedisCorruptEntryFailsClosed(t *testing.T) {
	ctx := t.Context()
	client := newTestClient(t, RedisConfig{Addrs: []string{testredis.Start(t)}})
	s := NewRedis(client, RedisOptions{Prefix: testredis.Prefix(t)}).(*redisStore)
	for _, k := range []string{s.jtiKey("bad"), s.blockKey("corp", "bad")} {
		if err := client.Set(ctx, k, "garbage", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.TokenRevoked(ctx, "bad"); err == nil {
		t.Error("TokenRevoked on a corrupt entry: nil error")
	}
	if err := s.Admit(ctx, Query{Upstream: "corp", Subject: "bad"}); err == nil || errors.Is(err, ErrBlocked) {
		t.Errorf("Admit on a corrupt entry = %v, want a store error", err)
	}
}

func TestRedisConfigErrorsFailClosed(t *testing.T) {
	plain := redis.NewClient(&redis.Options{Addr: testredis.ClosedAddr(t)})
	t.Cleanup(func() { _ = plain.Close() })
	good := newTestClient(t, RedisConfig{Addrs: []string{testredis.ClosedAddr(t)}})
	cases := []struct {
		name   string
		store  func() Store
		reason string
	}{
		{"nil client", func() Store { return NewRedis(nil, RedisOptions{}) }, "nil client"},
		{"hash tag in prefix", func() Store { return NewRedis(good, RedisOptions{Prefix: "a{b}"}) }, "prefix"},
		{"space in prefix", func() Store { return NewRedis(good, RedisOptions{Prefix: "a b"}) }, "prefix"},
		{"long prefix", func() Store { return NewRedis(good, RedisOptions{Prefix: strings.Repeat("p", 65)}) }, "prefix"},
		{"no context timeouts", func() Store { return NewRedis(plain, RedisOptions{}) }, "ContextTimeoutEnabled"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.store()
			ctx := t.Context()
			errs := []error{
				s.Ping(ctx),
				s.Admit(ctx, Query{Upstream: "corp", Subject: "alice"}),
				s.RevokeToken(ctx, "j", time.Now().Add(time.Hour), ""),
				s.BlockSubject(ctx, "corp", "alice", time.Now().Add(time.Hour), ""),
			}
			_, err := s.TokenRevoked(ctx, "j")
			errs = append(errs, err)
			for i, err := range errs {
				if err == nil || !strings.Contains(err.Error(), tc.reason) {
					t.Errorf("call %d: err = %v, want one mentioning %q", i, err, tc.reason)
				}
			}
		})
	}
}

func TestNewRedisClientWithoutAddressNeverDials(t *testing.T) {
	c := newTestClient(t, RedisConfig{})
	err := c.Ping(t.Context()).Err()
	if err == nil || !strings.Contains(err.Error(), "no Redis address configured") {
		t.Fatalf("Ping = %v, want the no-address error", err)
	}
}

func TestNewRedisClientDefaults(t *testing.T) {
	c := newTestClient(t, RedisConfig{Addrs: []string{"127.0.0.1:1"}})
	o := c.(*redis.Client).Options()
	if o.DialTimeout != time.Second || o.ReadTimeout != 500*time.Millisecond || o.WriteTimeout != 500*time.Millisecond || !o.ContextTimeoutEnabled {
		t.Errorf("options: dial %v read %v write %v ctx %v", o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.ContextTimeoutEnabled)
	}
	if _, ok := newTestClient(t, RedisConfig{Addrs: []string{"127.0.0.1:1", "127.0.0.1:2"}}).(*redis.ClusterClient); !ok {
		t.Error("two addresses: want a Cluster client")
	}
}

func TestUntilMillisRoundsUp(t *testing.T) {
	base := time.UnixMilli(1_700_000_000_000)
	for _, tc := range []struct {
		d    time.Duration
		want int64
	}{
		{0, 1_700_000_000_000},
		{time.Nanosecond, 1_700_000_000_001},
		{999 * time.Microsecond, 1_700_000_000_001},
		{time.Millisecond, 1_700_000_000_001},
		{time.Millisecond + 1, 1_700_000_000_002},
	} {
		if got := untilMillis(base.Add(tc.d)); got != tc.want {
			t.Errorf("untilMillis(base+%v) = %d, want %d", tc.d, got, tc.want)
		}
	}
}
