package testredis

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// SentinelMasterName is the name under which the sentinels of StartSentinel monitor
// the primary.
const SentinelMasterName = "sc"

// Sentinel is a private Redis Sentinel deployment: a primary, one replica and three
// sentinels (quorum 2, down-after-milliseconds 1000, failover-timeout 5000), each a
// redis-server on a free loopback port. Everything is killed when the test that
// started it ends.
type Sentinel struct {
	t         testing.TB
	bin       string
	base      string
	sentinels []*node

	mu      sync.Mutex
	data    []*node // primary and replicas, in start order
	primary *node
}

// StartSentinel starts a Sentinel deployment for t and waits (bounded) until the
// replica is in sync and every sentinel sees the primary, the replica and the two
// other sentinels, so that a failover can be authorized at once. Without
// redis-server on PATH, t is skipped (failed when CI=true).
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	s := &Sentinel{t: t, bin: lookRedisBinary(t, "redis-server", ""), base: t.TempDir()}
	t.Cleanup(s.killAll) // registered after TempDir, so it runs before the removal
	begin := time.Now()

	primary, err := launchNode(s.bin, s.base, "primary", func(port int, dir string) ([]string, error) {
		return dataArgs(port, dir), nil
	})
	if err != nil {
		t.Fatalf("testredis: sentinel: %v", err)
	}
	s.data, s.primary = []*node{primary}, primary
	replica, err := launchNode(s.bin, s.base, "replica", func(port int, dir string) ([]string, error) {
		return append(dataArgs(port, dir), "--replicaof", "127.0.0.1", strconv.Itoa(primary.port)), nil
	})
	if err != nil {
		t.Fatalf("testredis: sentinel: %v", err)
	}
	s.data = append(s.data, replica)
	if err := waitFor(topologyTimeout, "replica sync", func() error {
		return replicaInSync(primary.addr, replica.addr)
	}); err != nil {
		t.Fatalf("testredis: sentinel: %v; replica log:\n%s", err, replica.logTail())
	}
	// The sentinels start after the replica is in sync, so their first INFO of the
	// primary already lists it (they would otherwise re-read INFO only every 10 s).
	for i := range 3 {
		sn, err := launchNode(s.bin, s.base, "sentinel"+strconv.Itoa(i), func(port int, dir string) ([]string, error) {
			conf := filepath.Join(dir, "sentinel.conf")
			text := fmt.Sprintf(`port %d
bind 127.0.0.1
daemonize no
dir %s
loglevel notice
sentinel monitor %s 127.0.0.1 %d 2
sentinel down-after-milliseconds %[3]s 1000
sentinel failover-timeout %[3]s 5000
sentinel parallel-syncs %[3]s 1
`, port, dir, SentinelMasterName, primary.port)
			if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
				return nil, err
			}
			return []string{conf, "--sentinel"}, nil
		})
		if err != nil {
			t.Fatalf("testredis: sentinel: %v", err)
		}
		s.sentinels = append(s.sentinels, sn)
	}
	if err := waitFor(topologyTimeout, "sentinels acquainted", func() error {
		_, err := s.agreedPrimary(1, 3)
		return err
	}); err != nil {
		t.Fatalf("testredis: sentinel: %v", err)
	}
	t.Logf("testredis: sentinel deployment up in %s (primary %s, replica %s)", time.Since(begin).Round(time.Millisecond), primary.addr, replica.addr)
	return s
}

// SentinelAddrs returns the addresses of the three sentinels.
func (s *Sentinel) SentinelAddrs() []string {
	addrs := make([]string, len(s.sentinels))
	for i, n := range s.sentinels {
		addrs[i] = n.addr
	}
	return addrs
}

// MasterName returns the name the sentinels monitor the primary under ("sc").
func (s *Sentinel) MasterName() string { return SentinelMasterName }

// Primary returns the address of the current primary (as of the last start,
// FailoverByKill or Restart).
func (s *Sentinel) Primary() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.primary.addr
}

// Replicas returns the addresses of the running data nodes, other than the
// primary, that answer as replicas.
func (s *Sentinel) Replicas() []string {
	s.mu.Lock()
	data, primary := s.data, s.primary
	s.mu.Unlock()
	var addrs []string
	for _, n := range data {
		if n == primary || !n.running() {
			continue
		}
		if i, err := n.info("replication"); err == nil && i["role"] == "slave" {
			addrs = append(addrs, n.addr)
		}
	}
	return addrs
}

// FailoverByKill kills the primary's process and waits (bounded, 15 s) until every
// sentinel reports a new primary and that primary answers as a master. It returns
// the address of the killed primary, which Restart brings back as a replica.
// The new primary has no replica until then.
func (s *Sentinel) FailoverByKill(t testing.TB) (killed string) {
	t.Helper()
	s.mu.Lock()
	old := s.primary
	s.mu.Unlock()
	begin := time.Now()
	old.kill()
	s.awaitFailover(t, old, begin)
	return old.addr
}

// FailoverByPause freezes the primary's process (SIGSTOP), as a primary that hangs
// would be, and waits (bounded, 15 s) until every sentinel reports a new primary.
// resume thaws the old primary (SIGCONT; idempotent, also run when t ends): it
// comes back still believing it is the primary and accepts writes, with no
// replica, until the sentinels demote it some seconds later. Skips t where
// processes cannot be frozen.
func (s *Sentinel) FailoverByPause(t testing.TB) (paused string, resume func()) {
	t.Helper()
	stop, cont := pauseSignals()
	if stop == nil {
		t.Skip("testredis: cannot pause a process on this platform")
	}
	s.mu.Lock()
	old := s.primary
	s.mu.Unlock()
	begin := time.Now()
	if err := old.signal(stop); err != nil {
		t.Fatalf("testredis: pause %s: %v", old, err)
	}
	var once sync.Once
	resume = func() { once.Do(func() { _ = old.signal(cont) }) }
	t.Cleanup(resume)
	s.awaitFailover(t, old, begin)
	return old.addr, resume
}

// awaitFailover waits until every sentinel reports a primary other than old that
// answers as a master, and records it.
func (s *Sentinel) awaitFailover(t testing.TB, old *node, begin time.Time) {
	t.Helper()
	var addr string
	err := waitFor(failoverTimeout, "sentinel failover", func() error {
		a, err := s.agreedPrimary(-1, 3)
		if err != nil {
			return err
		}
		if a == old.addr {
			return fmt.Errorf("sentinels still report %s", a)
		}
		i, err := info(a, "replication")
		if err != nil {
			return fmt.Errorf("new primary %s: %w", a, err)
		}
		if i["role"] != "master" {
			return fmt.Errorf("new primary %s: role %s", a, i["role"])
		}
		addr = a
		return nil
	})
	if err != nil {
		t.Fatalf("testredis: %v; sentinel0 log:\n%s", err, s.sentinels[0].logTail())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.data {
		if n.addr == addr {
			s.primary = n
		}
	}
	if s.primary == old {
		t.Fatalf("testredis: sentinels promoted %s, which this deployment did not start", addr)
	}
	t.Logf("testredis: sentinel failover %s -> %s in %s", old.addr, addr, time.Since(begin).Round(time.Millisecond))
}

// Restart restarts the killed data node addr. A former primary comes back as a
// replica of the current primary (as an operator would restart it, and as the
// sentinels would reconfigure it anyway); Restart waits (bounded, 15 s) until it is
// in sync and every sentinel sees it as a healthy replica, so that WAIT 1 on the
// primary succeeds again and a further failover can promote it.
func (s *Sentinel) Restart(t testing.TB, addr string) {
	t.Helper()
	s.mu.Lock()
	var n *node
	for _, d := range s.data {
		if d.addr == addr {
			n = d
		}
	}
	primary := s.primary
	s.mu.Unlock()
	if n == nil {
		t.Fatalf("testredis: Restart(%s): not a data node of this deployment", addr)
	}
	if n.running() {
		t.Fatalf("testredis: Restart(%s): still running", addr)
	}
	begin := time.Now()
	args := dataArgs(n.port, n.dir)
	if n != primary {
		args = append(args, "--replicaof", "127.0.0.1", strconv.Itoa(primary.port))
	}
	if err := n.start(args); err != nil {
		t.Fatalf("testredis: %v", err)
	}
	if err := n.waitUp(); err != nil {
		t.Fatalf("testredis: Restart(%s): %v; log:\n%s", addr, err, n.logTail())
	}
	if n == primary {
		return
	}
	if err := waitFor(failoverTimeout, "restarted replica in sync", func() error {
		if err := replicaInSync(primary.addr, n.addr); err != nil {
			return err
		}
		return s.sentinelsSeeReplica(n.addr)
	}); err != nil {
		t.Fatalf("testredis: Restart(%s): %v; log:\n%s", addr, err, n.logTail())
	}
	t.Logf("testredis: sentinel replica %s back in %s", addr, time.Since(begin).Round(time.Millisecond))
}

// agreedPrimary returns the primary every sentinel reports, checking that each
// reports status ok, the given number of replicas (any if negative) and sentinels.
func (s *Sentinel) agreedPrimary(replicas, sentinels int) (string, error) {
	var addr string
	for _, sn := range s.sentinels {
		i, err := sn.info("sentinel")
		if err != nil {
			return "", fmt.Errorf("%s: %w", sn, err)
		}
		f := parseFields(i["master0"])
		if f["name"] != SentinelMasterName || f["status"] != "ok" {
			return "", fmt.Errorf("%s: master0 %q", sn, i["master0"])
		}
		if replicas >= 0 && f["slaves"] != strconv.Itoa(replicas) || f["sentinels"] != strconv.Itoa(sentinels) {
			return "", fmt.Errorf("%s: master0 %q, want slaves=%d,sentinels=%d", sn, i["master0"], replicas, sentinels)
		}
		if addr != "" && f["address"] != addr {
			return "", fmt.Errorf("sentinels disagree: %s and %s", addr, f["address"])
		}
		addr = f["address"]
	}
	return addr, nil
}

// sentinelsSeeReplica checks that every sentinel lists addr as a replica that is
// up and linked to its primary.
func (s *Sentinel) sentinelsSeeReplica(addr string) error {
	for _, sn := range s.sentinels {
		v, err := command(sn.addr, time.Second, "SENTINEL", "REPLICAS", SentinelMasterName)
		if err != nil {
			return fmt.Errorf("%s: SENTINEL REPLICAS: %w", sn, err)
		}
		list, _ := v.([]any)
		found := false
		for _, r := range list {
			f := pairs(r)
			if f["name"] != addr {
				continue
			}
			found = true
			if f["flags"] != "slave" || f["master-link-status"] != "ok" {
				return fmt.Errorf("%s sees replica %s with flags %q, master-link-status %q", sn, addr, f["flags"], f["master-link-status"])
			}
		}
		if !found {
			return fmt.Errorf("%s does not list replica %s", sn, addr)
		}
	}
	return nil
}

func (s *Sentinel) killAll() {
	s.mu.Lock()
	nodes := append(append([]*node(nil), s.sentinels...), s.data...)
	s.mu.Unlock()
	for _, n := range nodes {
		n.kill()
	}
}
