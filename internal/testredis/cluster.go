package testredis

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Cluster is a private six-node Redis Cluster: three masters, each with one
// replica, every node a redis-server on a free loopback port with
// cluster-node-timeout 1000. Everything is killed when the test that started it
// ends.
//
// The methods that read the live topology (Masters, MasterForSlot, MasterForKey)
// fail the test that started the cluster if no node answers; call them from that
// test's goroutine.
type Cluster struct {
	t     testing.TB
	nodes []*node
}

// StartCluster6 starts a six-node cluster for t with
// `redis-cli --cluster create ... --cluster-replicas 1` and waits (bounded) until
// every node reports cluster_state:ok and every master has a replica in sync, so
// that WAIT 1 succeeds at once. Unlike StartCluster, it ignores
// SAFECONDUCT_TEST_REDIS_CLUSTER: its nodes are there to be killed. Without
// redis-server and redis-cli on PATH, t is skipped (failed when CI=true).
func StartCluster6(t testing.TB) *Cluster {
	t.Helper()
	bin := lookRedisBinary(t, "redis-server", "")
	cli := lookRedisBinary(t, "redis-cli", "")
	base := t.TempDir()
	c := &Cluster{t: t}
	t.Cleanup(c.killAll) // registered after TempDir, so it runs before the removal
	begin := time.Now()
	for i := range 6 {
		n, err := launchNode(bin, base, "node"+strconv.Itoa(i), func(port int, dir string) ([]string, error) {
			busPort, err := freePort()
			if err != nil {
				return nil, err
			}
			return append(dataArgs(port, dir),
				"--cluster-enabled", "yes",
				"--cluster-config-file", "nodes.conf", // in dir, the working directory
				"--cluster-node-timeout", "1000",
				"--cluster-port", strconv.Itoa(busPort),
			), nil
		})
		if err != nil {
			t.Fatalf("testredis: cluster: %v", err)
		}
		c.nodes = append(c.nodes, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), topologyTimeout)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("testredis: redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if err := waitFor(topologyTimeout, "cluster formed", c.healthy); err != nil {
		t.Fatalf("testredis: cluster: %v", err)
	}
	t.Logf("testredis: 6-node cluster up in %s", time.Since(begin).Round(time.Millisecond))
	return c
}

// Addrs returns the addresses of all six nodes, running or not, in start order.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.addr
	}
	return addrs
}

// Masters returns the addresses of the masters that serve slots, as the first
// running node sees them.
func (c *Cluster) Masters() []string {
	c.t.Helper()
	var addrs []string
	for _, e := range c.view() {
		if e.master() && len(e.slots) > 0 {
			addrs = append(addrs, e.addr)
		}
	}
	return addrs
}

// MasterForSlot returns the address of the master serving slot, as the first
// running node sees it ("" if none does).
func (c *Cluster) MasterForSlot(slot int) string {
	c.t.Helper()
	for _, e := range c.view() {
		if e.master() && e.serves(slot) {
			return e.addr
		}
	}
	return ""
}

// MasterForKey returns the address of the master serving key's slot (CLUSTER
// KEYSLOT, so hash tags count).
func (c *Cluster) MasterForKey(key string) string {
	c.t.Helper()
	for _, n := range c.nodes {
		if !n.running() {
			continue
		}
		s, err := Do(n.addr, time.Second, "CLUSTER", "KEYSLOT", key)
		if err != nil {
			continue
		}
		slot, err := strconv.Atoi(s)
		if err != nil {
			c.t.Fatalf("testredis: CLUSTER KEYSLOT %q = %q", key, s)
		}
		return c.MasterForSlot(slot)
	}
	c.t.Fatalf("testredis: cluster: no node answers CLUSTER KEYSLOT")
	return ""
}

// KillMaster kills the master addr and waits (bounded, 15 s) until its replica
// has been promoted, every running node maps the master's slots to it and reports
// cluster_state:ok. It returns the promoted replica's address. The promoted master
// has no replica until Restart(addr) brings the killed node back.
func (c *Cluster) KillMaster(t testing.TB, addr string) (promoted string) {
	t.Helper()
	view, err := c.viewFrom(addr)
	if err != nil {
		t.Fatalf("testredis: KillMaster(%s): %v", addr, err)
	}
	var master *clusterEntry
	for i, e := range view {
		if e.addr == addr {
			master = &view[i]
		}
	}
	if master == nil || !master.master() || len(master.slots) == 0 {
		t.Fatalf("testredis: KillMaster(%s): not a master serving slots", addr)
	}
	for _, e := range view {
		if e.masterID == master.id && !e.failed() {
			promoted = e.addr
		}
	}
	if promoted == "" {
		t.Fatalf("testredis: KillMaster(%s): no healthy replica to promote", addr)
	}
	slot := master.slots[0][0]
	begin := time.Now()
	c.node(t, addr).kill()
	err = waitFor(failoverTimeout, "cluster failover", func() error {
		i, err := info(promoted, "replication")
		if err != nil {
			return err
		}
		if i["role"] != "master" {
			return fmt.Errorf("%s: role %s", promoted, i["role"])
		}
		if err := c.healthyExcept(); err != nil {
			return err
		}
		return c.agree(slot, promoted)
	})
	if err != nil {
		t.Fatalf("testredis: KillMaster(%s): %v; %s log:\n%s", addr, err, promoted, c.node(t, promoted).logTail())
	}
	t.Logf("testredis: cluster failover %s -> %s in %s", addr, promoted, time.Since(begin).Round(time.Millisecond))
	return promoted
}

// Restart restarts the killed node addr with its cluster configuration; a former
// master finds its slots taken over and rejoins as a replica of the new master.
// Restart waits (bounded, 15 s) until the node is a replica in sync, no running
// node flags it as failed, and cluster_state is ok everywhere.
func (c *Cluster) Restart(t testing.TB, addr string) {
	t.Helper()
	n := c.node(t, addr)
	if n.running() {
		t.Fatalf("testredis: Restart(%s): still running", addr)
	}
	begin := time.Now()
	n.mu.Lock()
	args := n.args
	n.mu.Unlock()
	if err := n.start(args); err != nil {
		t.Fatalf("testredis: %v", err)
	}
	if err := n.waitUp(); err != nil {
		t.Fatalf("testredis: Restart(%s): %v; log:\n%s", addr, err, n.logTail())
	}
	if err := waitFor(failoverTimeout, "restarted node rejoined", c.healthy); err != nil {
		t.Fatalf("testredis: Restart(%s): %v; log:\n%s", addr, err, n.logTail())
	}
	t.Logf("testredis: cluster node %s back in %s", addr, time.Since(begin).Round(time.Millisecond))
}

// healthy checks that all nodes run, report cluster_state:ok, flag no node as
// failed, and that every master serving slots has a replica in sync.
func (c *Cluster) healthy() error {
	for _, n := range c.nodes {
		if !n.running() {
			return fmt.Errorf("%s is not running", n)
		}
	}
	if err := c.healthyExcept(); err != nil {
		return err
	}
	view, err := c.viewFrom(c.nodes[0].addr)
	if err != nil {
		return err
	}
	for _, m := range view {
		if !m.master() || len(m.slots) == 0 {
			continue
		}
		synced := false
		for _, r := range view {
			if r.masterID == m.id && replicaInSync(m.addr, r.addr) == nil {
				synced = true
			}
		}
		if !synced {
			return fmt.Errorf("master %s has no replica in sync", m.addr)
		}
	}
	return nil
}

// healthyExcept checks that every running node reports cluster_state:ok and flags
// no running node as failed (killed nodes may be flagged).
func (c *Cluster) healthyExcept() error {
	for _, n := range c.nodes {
		if !n.running() {
			continue
		}
		s, err := Do(n.addr, time.Second, "CLUSTER", "INFO")
		if err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
		if st := parseInfo(s)["cluster_state"]; st != "ok" {
			return fmt.Errorf("%s: cluster_state %s", n, st)
		}
		view, err := c.viewFrom(n.addr)
		if err != nil {
			return err
		}
		for _, e := range view {
			if (e.failed() || e.flags["handshake"]) && c.running(e.addr) {
				return fmt.Errorf("%s flags running node %s as %s", n, e.addr, e.rawFlags)
			}
		}
	}
	return nil
}

// agree checks that every running node maps slot to master.
func (c *Cluster) agree(slot int, master string) error {
	for _, n := range c.nodes {
		if !n.running() {
			continue
		}
		view, err := c.viewFrom(n.addr)
		if err != nil {
			return err
		}
		owner := ""
		for _, e := range view {
			if e.master() && e.serves(slot) {
				owner = e.addr
			}
		}
		if owner != master {
			return fmt.Errorf("%s maps slot %d to %q, not %s", n, slot, owner, master)
		}
	}
	return nil
}

func (c *Cluster) running(addr string) bool {
	for _, n := range c.nodes {
		if n.addr == addr {
			return n.running()
		}
	}
	return false
}

func (c *Cluster) node(t testing.TB, addr string) *node {
	t.Helper()
	for _, n := range c.nodes {
		if n.addr == addr {
			return n
		}
	}
	t.Fatalf("testredis: %s is not a node of this cluster", addr)
	return nil
}

// view returns CLUSTER NODES as the first running node that answers sees it.
func (c *Cluster) view() []clusterEntry {
	c.t.Helper()
	var lastErr error
	for _, n := range c.nodes {
		if !n.running() {
			continue
		}
		v, err := c.viewFrom(n.addr)
		if err == nil {
			return v
		}
		lastErr = err
	}
	c.t.Fatalf("testredis: cluster: no node answers CLUSTER NODES: %v", lastErr)
	return nil
}

func (c *Cluster) viewFrom(addr string) ([]clusterEntry, error) {
	s, err := Do(addr, time.Second, "CLUSTER", "NODES")
	if err != nil {
		return nil, fmt.Errorf("%s: CLUSTER NODES: %w", addr, err)
	}
	return parseClusterNodes(s)
}

func (c *Cluster) killAll() {
	for _, n := range c.nodes {
		n.kill()
	}
}

// clusterEntry is one line of CLUSTER NODES.
type clusterEntry struct {
	id       string
	addr     string // host:port, without the bus port or hostname
	rawFlags string
	flags    map[string]bool
	masterID string // "" for a master
	slots    [][2]int
}

func (e clusterEntry) master() bool { return e.flags["master"] && !e.failed() }
func (e clusterEntry) failed() bool { return e.flags["fail"] || e.flags["fail?"] || e.flags["noaddr"] }

func (e clusterEntry) serves(slot int) bool {
	for _, r := range e.slots {
		if r[0] <= slot && slot <= r[1] {
			return true
		}
	}
	return false
}

// parseClusterNodes parses CLUSTER NODES:
// <id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent> <pong-recv> <config-epoch> <link-state> <slot>...
func parseClusterNodes(s string) ([]clusterEntry, error) {
	var entries []clusterEntry
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			return nil, fmt.Errorf("CLUSTER NODES line %q", line)
		}
		addr, _, _ := strings.Cut(f[1], "@")
		addr, _, _ = strings.Cut(addr, ",")
		e := clusterEntry{id: f[0], addr: addr, rawFlags: f[2], flags: map[string]bool{}}
		for _, fl := range strings.Split(f[2], ",") {
			e.flags[fl] = true
		}
		if f[3] != "-" {
			e.masterID = f[3]
		}
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") { // a slot being imported or migrated
				continue
			}
			lo, hi, isRange := strings.Cut(r, "-")
			if !isRange {
				hi = lo
			}
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("CLUSTER NODES slots %q", r)
			}
			e.slots = append(e.slots, [2]int{a, b})
		}
		entries = append(entries, e)
	}
	return entries, nil
}
