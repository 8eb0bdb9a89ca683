package testredis

import (
	"bufio"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// setAcked writes key on c and asks, on the same connection (a pipeline), that one
// replica confirm it (WAIT 1): WAIT counts the replicas that have the writes of
// its own connection, so it must follow the write on the connection that made it.
func setAcked(ctx context.Context, c *redis.Client, key, value string) (int64, error) {
	pipe := c.Pipeline()
	pipe.Set(ctx, key, value, 0)
	wait := pipe.Do(ctx, "WAIT", 1, 1000)
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, err
	}
	return wait.Int64()
}

// eventually retries f until it succeeds or within passes, and returns how long it took.
func eventually(t *testing.T, within time.Duration, what string, f func(ctx context.Context) error) time.Duration {
	t.Helper()
	begin := time.Now()
	deadline := begin.Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := f(ctx)
		cancel()
		if err == nil {
			return time.Since(begin)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %s: %v", what, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func getEquals(c redis.Cmdable, key, want string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		got, err := c.Get(ctx, key).Result()
		if err != nil {
			return err
		}
		if got != want {
			return errors.New("GET " + key + " = " + got + ", want " + want)
		}
		return nil
	}
}

func TestSentinelReplicationFailoverAndWait(t *testing.T) {
	t.Parallel()
	s := StartSentinel(t)
	if got := len(s.SentinelAddrs()); got != 3 {
		t.Fatalf("SentinelAddrs: %d sentinels, want 3", got)
	}
	if s.MasterName() != "sc" {
		t.Fatalf("MasterName = %q", s.MasterName())
	}
	first := s.Primary()
	replicas := s.Replicas()
	if len(replicas) != 1 || replicas[0] == first {
		t.Fatalf("Primary %s, Replicas %v; want one other replica", first, replicas)
	}
	ctx := context.Background()

	// A write on the primary appears on the replica.
	if _, err := Do(first, time.Second, "SET", "direct", "1"); err != nil {
		t.Fatalf("SET on primary: %v", err)
	}
	eventually(t, 5*time.Second, "replica GET", func(context.Context) error {
		got, err := Do(replicas[0], time.Second, "GET", "direct")
		if err == nil && got != "1" {
			err = errors.New("GET direct = " + got)
		}
		return err
	})
	// The replica refuses writes: only the primary is written to.
	if _, err := Do(replicas[0], time.Second, "SET", "direct", "2"); err == nil || !strings.Contains(err.Error(), "READONLY") {
		t.Fatalf("SET on replica: err = %v, want READONLY", err)
	}

	fc := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:    s.MasterName(),
		SentinelAddrs: s.SentinelAddrs(),
		DialTimeout:   500 * time.Millisecond,
		ReadTimeout:   2 * time.Second,
		WriteTimeout:  time.Second,
	})
	t.Cleanup(func() { fc.Close() })
	if n, err := setAcked(ctx, fc, "acked", "v1"); err != nil || n != 1 {
		t.Fatalf("SET+WAIT 1 through the Sentinel client = %d, %v; want 1 replica", n, err)
	}

	killed := s.FailoverByKill(t)
	if killed != first || s.Primary() != replicas[0] {
		t.Fatalf("FailoverByKill killed %s and promoted %s; want %s -> %s", killed, s.Primary(), first, replicas[0])
	}
	// The Sentinel client finds the new primary by itself, and the acknowledged
	// write survived the loss of the primary.
	took := eventually(t, 10*time.Second, "FailoverClient GET after failover", getEquals(fc, "acked", "v1"))
	t.Logf("FailoverClient read again %s after FailoverByKill returned", took.Round(time.Millisecond))
	eventually(t, 5*time.Second, "FailoverClient SET after failover", func(ctx context.Context) error {
		return fc.Set(ctx, "after", "v2", 0).Err()
	})
	if got, err := Do(s.Primary(), time.Second, "GET", "after"); err != nil || got != "v2" {
		t.Fatalf("GET after on the new primary = %q, %v", got, err)
	}
	// With its only replica gone, the new primary cannot confirm a write.
	if n, err := setAcked(ctx, fc, "unconfirmed", "v3"); err != nil || n != 0 {
		t.Fatalf("SET+WAIT 1 with no replica = %d, %v; want 0", n, err)
	}

	// The killed primary comes back as a replica of the new one, with the data.
	s.Restart(t, killed)
	if got := s.Replicas(); !slices.Equal(got, []string{killed}) {
		t.Fatalf("Replicas after Restart = %v, want [%s]", got, killed)
	}
	if got, err := Do(killed, time.Second, "GET", "acked"); err != nil || got != "v1" {
		t.Fatalf("GET acked on the restarted replica = %q, %v", got, err)
	}
	if n, err := setAcked(ctx, fc, "acked2", "v4"); err != nil || n != 1 {
		t.Fatalf("SET+WAIT 1 after Restart = %d, %v; want 1", n, err)
	}

	// WAIT only vouches for the writes of its own connection: on a connection that
	// wrote nothing it returns at once, whatever the replica has. A store must
	// send WAIT on the connection that wrote (a pipeline or a dedicated conn).
	if got, err := Do(s.Primary(), time.Second, "WAIT", "1", "100"); err != nil || got != "1" {
		t.Fatalf("WAIT 1 100 on a fresh connection = %q, %v; want 1", got, err)
	}

	// A primary that hangs and comes back after the failover still takes writes,
	// but no replica confirms them: WAIT is what tells a store its write is lost.
	paused, resume := s.FailoverByPause(t)
	if paused != replicas[0] || s.Primary() != killed {
		t.Fatalf("FailoverByPause paused %s and promoted %s", paused, s.Primary())
	}
	resume()
	stale := redis.NewClient(&redis.Options{Addr: paused, DialTimeout: 500 * time.Millisecond})
	t.Cleanup(func() { stale.Close() })
	n, err := setAcked(ctx, stale, "lost", "v5")
	if err != nil && !strings.Contains(err.Error(), "READONLY") {
		t.Fatalf("SET+WAIT on the resumed old primary: %v", err)
	}
	if err == nil && n != 0 {
		t.Fatalf("SET+WAIT 1 on the resumed old primary = %d, want 0 (its replica was promoted)", n)
	}
	t.Logf("resumed old primary: SET+WAIT 1 = %d, %v (accepted but unconfirmed, or already demoted)", n, err)
	eventually(t, 10*time.Second, "FailoverClient GET after the second failover", getEquals(fc, "acked2", "v4"))
}

func TestCluster6RevKeyFailover(t *testing.T) {
	t.Parallel()
	c := StartCluster6(t)
	if got := len(c.Addrs()); got != 6 {
		t.Fatalf("Addrs: %d nodes, want 6", got)
	}
	masters := c.Masters()
	if len(masters) != 3 {
		t.Fatalf("Masters = %v, want 3", masters)
	}
	ctx := context.Background()

	// Keys sharing the {rev} hash tag live in one slot, on one master.
	m := c.MasterForKey("{rev}a")
	if m == "" || m != c.MasterForKey("{rev}b") || m != c.MasterForKey("{rev}") {
		t.Fatalf("{rev} keys on %q, %q, %q; want one master", m, c.MasterForKey("{rev}b"), c.MasterForKey("{rev}"))
	}
	if !slices.Contains(masters, m) {
		t.Fatalf("MasterForKey = %s, not among Masters %v", m, masters)
	}
	if got := c.MasterForSlot(0); got == "" || !slices.Contains(masters, got) {
		t.Fatalf("MasterForSlot(0) = %q", got)
	}

	cc := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:                      c.Addrs(),
		ClusterStateReloadInterval: time.Second, // the default (60 s) keeps routing to a dead master
		DialTimeout:                500 * time.Millisecond,
		ReadTimeout:                2 * time.Second,
		WriteTimeout:               time.Second,
	})
	t.Cleanup(func() { cc.Close() })
	if err := cc.MSet(ctx, "{rev}a", "1", "{rev}b", "2").Err(); err != nil {
		t.Fatalf("MSET of two {rev} keys: %v", err)
	}
	if err := cc.Do(ctx, "MSET", "{rev}c", "1", "{other}c", "2").Err(); err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Fatalf("MSET across hash tags: err = %v, want CROSSSLOT", err)
	}
	if got, err := Do(m, time.Second, "GET", "{rev}a"); err != nil || got != "1" {
		t.Fatalf("GET {rev}a on its master %s = %q, %v", m, got, err)
	}
	for _, other := range masters {
		if other == m {
			continue
		}
		if _, err := Do(other, time.Second, "GET", "{rev}a"); err == nil || !strings.HasPrefix(err.Error(), "MOVED ") {
			t.Fatalf("GET {rev}a on master %s: err = %v, want MOVED", other, err)
		}
	}

	// An acknowledged write: SET and WAIT 1 on one connection of the key's master.
	node, err := cc.MasterForKey(ctx, "{rev}acked")
	if err != nil {
		t.Fatalf("MasterForKey: %v", err)
	}
	if n, err := setAcked(ctx, node, "{rev}acked", "v1"); err != nil || n != 1 {
		t.Fatalf("SET+WAIT 1 on the {rev} master = %d, %v; want 1 replica", n, err)
	}

	promoted := c.KillMaster(t, m)
	if promoted == m || c.MasterForKey("{rev}a") != promoted {
		t.Fatalf("after KillMaster(%s): {rev} on %s, promoted %s", m, c.MasterForKey("{rev}a"), promoted)
	}
	if got := c.Masters(); len(got) != 3 || slices.Contains(got, m) {
		t.Fatalf("Masters after KillMaster = %v", got)
	}
	// With a short ClusterStateReloadInterval, the client routes to the promoted
	// replica within a few seconds, and the acknowledged write survived.
	took := eventually(t, 5*time.Second, "ClusterClient GET after failover", getEquals(cc, "{rev}acked", "v1"))
	t.Logf("ClusterClient read again %s after KillMaster returned", took.Round(time.Millisecond))
	eventually(t, 5*time.Second, "ClusterClient SET after failover", func(ctx context.Context) error {
		return cc.Set(ctx, "{rev}after", "v2", 0).Err()
	})
	if got, err := Do(promoted, time.Second, "GET", "{rev}after"); err != nil || got != "v2" {
		t.Fatalf("GET {rev}after on the promoted master = %q, %v", got, err)
	}
	node, err = cc.MasterForKey(ctx, "{rev}acked")
	if err != nil {
		t.Fatalf("MasterForKey: %v", err)
	}
	if n, err := setAcked(ctx, node, "{rev}unconfirmed", "v3"); err != nil || n != 0 {
		t.Fatalf("SET+WAIT 1 on the promoted master without replica = %d, %v; want 0", n, err)
	}

	// The killed master rejoins as the promoted one's replica, with the data.
	c.Restart(t, m)
	if got, err := Do(m, time.Second, "INFO", "replication"); err != nil || parseInfo(got)["role"] != "slave" {
		t.Fatalf("restarted %s: INFO replication %q, %v; want a replica", m, got, err)
	}
	if n, err := setAcked(ctx, node, "{rev}acked2", "v4"); err != nil || n != 1 {
		t.Fatalf("SET+WAIT 1 after Restart = %d, %v; want 1", n, err)
	}
}

func TestParseClusterNodes(t *testing.T) {
	const nodes = `07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host1 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master,fail? - 0 1426238318243 3 connected 10923-16383
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 7000 [5461->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
`
	es, err := parseClusterNodes(nodes)
	if err != nil || len(es) != 4 {
		t.Fatalf("parseClusterNodes: %d entries, %v", len(es), err)
	}
	if es[0].addr != "127.0.0.1:30004" || es[0].master() || es[0].masterID != es[3].id {
		t.Errorf("replica entry: %+v", es[0])
	}
	if !es[1].master() || !es[1].serves(5461) || !es[1].serves(10922) || es[1].serves(10923) {
		t.Errorf("master entry: %+v", es[1])
	}
	if es[2].master() || !es[2].failed() {
		t.Errorf("failing master counts as a master: %+v", es[2])
	}
	if !es[3].serves(7000) || es[3].serves(5461) || len(es[3].slots) != 2 {
		t.Errorf("myself entry: %+v", es[3])
	}
	if _, err := parseClusterNodes("short line"); err == nil {
		t.Error("parseClusterNodes(short line): want error")
	}
}

func TestReadReplyTypes(t *testing.T) {
	in := "*5\r\n+OK\r\n:42\r\n$-1\r\n-ERR nested\r\n*1\r\n$3\r\nabc\r\n"
	v, err := readReply(bufio.NewReader(strings.NewReader(in)))
	if err != nil {
		t.Fatalf("readReply: %v", err)
	}
	a, ok := v.([]any)
	if !ok || len(a) != 5 {
		t.Fatalf("readReply = %#v", v)
	}
	if a[0] != "OK" || a[1] != int64(42) || a[2] != nil {
		t.Errorf("scalars = %#v", a[:3])
	}
	if e, ok := a[3].(redisError); !ok || e.Error() != "ERR nested" {
		t.Errorf("nested error = %#v", a[3])
	}
	if inner, ok := a[4].([]any); !ok || len(inner) != 1 || inner[0] != "abc" {
		t.Errorf("nested array = %#v", a[4])
	}
	if _, err := readReply(bufio.NewReader(strings.NewReader("-WRONGTYPE x\r\n"))); err == nil || err.Error() != "WRONGTYPE x" {
		t.Errorf("error reply: %v", err)
	}
	if got := pairs([]any{"name", "a", "flags", "slave", "odd"}); got["name"] != "a" || got["flags"] != "slave" || len(got) != 2 {
		t.Errorf("pairs = %v", got)
	}
}
