package testredis

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/testbin"
)

const (
	// topologyTimeout bounds how long a multi-process topology may take to form
	// (replicas in sync, sentinels acquainted, cluster_state:ok everywhere).
	topologyTimeout = 20 * time.Second
	// failoverTimeout bounds how long a failover (or a restarted node rejoining)
	// may take.
	failoverTimeout = 15 * time.Second
	pollInterval    = 50 * time.Millisecond
)

// node is one redis-server process of a topology, restartable on the same port
// and directory.
type node struct {
	bin     string
	name    string
	port    int
	addr    string
	dir     string
	logPath string

	mu   sync.Mutex
	args []string
	proc *testbin.Proc // nil until started
}

// launchNode starts a redis-server for a topology in base/name on a free port,
// retrying on other ports when it does not come up (most likely the port was taken
// meanwhile). build returns the arguments for a port and directory; it may write
// config files there.
func launchNode(bin, base, name string, build func(port int, dir string) ([]string, error)) (*node, error) {
	dir := filepath.Join(base, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var lastErr error
	for range startTries {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		args, err := build(port, dir)
		if err != nil {
			return nil, err
		}
		n := &node{
			bin:     bin,
			name:    name,
			port:    port,
			addr:    net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			dir:     dir,
			logPath: filepath.Join(dir, "redis.log"),
		}
		if err := n.start(args); err != nil {
			return nil, err
		}
		if err := n.waitUp(); err != nil {
			n.kill()
			lastErr = fmt.Errorf("%s: %w; log:\n%s", n, err, n.logTail())
			continue
		}
		return n, nil
	}
	return nil, lastErr
}

func (n *node) String() string { return n.name + " (" + n.addr + ")" }

// start runs the process with args (remembered for restarts); the log is appended to.
func (n *node) start(args []string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc != nil && !exited(n.proc) {
		return fmt.Errorf("%s is already running", n)
	}
	p, err := testbin.StartAppend(n.String(), n.bin, n.dir, n.logPath, args...)
	if err != nil {
		return err
	}
	n.args, n.proc = args, p
	return nil
}

// current returns the process of the last start, nil if never started.
func (n *node) current() *testbin.Proc {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc
}

// kill kills the process (SIGKILL: no shutdown, no save) and waits for it to exit.
// It is a no-op when the process is not running.
func (n *node) kill() {
	if p := n.current(); p != nil {
		p.Kill()
	}
}

// signal sends sig to the process, if running.
func (n *node) signal(sig os.Signal) error {
	p := n.current()
	if p == nil {
		return fmt.Errorf("%s was never started", n)
	}
	return p.Signal(sig)
}

// running reports whether the process was started and has not exited.
func (n *node) running() bool {
	p := n.current()
	return p != nil && !exited(p)
}

func exited(p *testbin.Proc) bool {
	select {
	case <-p.Exited():
		return true
	default:
		return false
	}
}

// waitUp waits until the process answers PING, or fails early if it exits.
func (n *node) waitUp() error {
	return waitReady(n.current(), func() error {
		_, err := Do(n.addr, time.Second, "PING")
		return err
	})
}

// logTail returns the end of the node's log, for failure messages.
func (n *node) logTail() string {
	p := n.current()
	if p == nil {
		return "[not started]"
	}
	return p.LogTail(logLines)
}

// info returns the fields of INFO section on n (or an error).
func (n *node) info(section string) (map[string]string, error) {
	return info(n.addr, section)
}

func info(addr, section string) (map[string]string, error) {
	s, err := Do(addr, time.Second, "INFO", section)
	if err != nil {
		return nil, err
	}
	return parseInfo(s), nil
}

// parseInfo parses the "key:value" lines of an INFO reply (or CLUSTER INFO).
func parseInfo(s string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = v
		}
	}
	return m
}

// parseFields parses "a=1,b=2" (an INFO value such as slave0 or master0).
func parseFields(s string) map[string]string {
	m := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// replicaInSync checks that replica is connected to primary and primary sees it
// online, so that WAIT 1 on primary can be satisfied by it.
func replicaInSync(primary, replica string) error {
	ri, err := info(replica, "replication")
	if err != nil {
		return fmt.Errorf("replica %s: %w", replica, err)
	}
	if ri["role"] != "slave" {
		return fmt.Errorf("replica %s: role %s", replica, ri["role"])
	}
	if got := net.JoinHostPort(ri["master_host"], ri["master_port"]); got != primary {
		return fmt.Errorf("replica %s replicates %s, not %s", replica, got, primary)
	}
	if ri["master_link_status"] != "up" || ri["master_sync_in_progress"] != "0" {
		return fmt.Errorf("replica %s: master_link_status %s, master_sync_in_progress %s", replica, ri["master_link_status"], ri["master_sync_in_progress"])
	}
	pi, err := info(primary, "replication")
	if err != nil {
		return fmt.Errorf("primary %s: %w", primary, err)
	}
	if pi["role"] != "master" {
		return fmt.Errorf("primary %s: role %s", primary, pi["role"])
	}
	_, port, _ := net.SplitHostPort(replica)
	for k, v := range pi {
		if !strings.HasPrefix(k, "slave") || k == "slave_read_repl_offset" || k == "slave_repl_offset" {
			continue
		}
		f := parseFields(v)
		if f["port"] == port && f["state"] == "online" {
			return nil
		}
	}
	return fmt.Errorf("primary %s does not list replica %s online", primary, replica)
}

// waitFor polls check until it succeeds or timeout passes.
func waitFor(timeout time.Duration, what string, check func() error) error {
	if err := testbin.Poll(timeout, pollInterval, nil, check); err != nil {
		return fmt.Errorf("%s: not done after %s: %w", what, timeout, err)
	}
	return nil
}

// dataArgs are the arguments of a data-bearing redis-server of a topology: no
// persistence, and diskless replication without the default 5 s delay so that
// replicas sync at once.
func dataArgs(port int, dir string) []string {
	return []string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--dir", dir,
		"--loglevel", "notice",
		"--repl-diskless-sync", "yes",
		"--repl-diskless-sync-delay", "0",
	}
}

// lookRedisBinary finds a Redis program (redis-server, redis-cli); without it t is
// skipped, or failed when CI=true. alt names the variable that would have avoided
// the need, if any.
func lookRedisBinary(t testing.TB, name, alt string) string {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err == nil {
		return bin
	}
	msg := "testredis: " + name + " not on PATH, needed to start a private server"
	if alt != "" {
		msg += " (or set " + alt + ")"
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; CI=true, so failing instead of skipping")
	}
	t.Skip(msg + "; skipping")
	return ""
}

// command sends one command to addr over a fresh connection and returns its reply:
// string (simple or bulk), int64, nil (null) or []any (array). A Redis error reply
// is returned as an error.
func command(addr string, timeout time.Duration, args ...string) (any, error) {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	var req strings.Builder
	fmt.Fprintf(&req, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&req, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(conn, req.String()); err != nil {
		return nil, err
	}
	return readReply(bufio.NewReader(conn))
}

// redisError is an error reply nested in an array.
type redisError string

func (e redisError) Error() string { return string(e) }

func readReply(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("testredis: empty reply")
	}
	switch line[0] {
	case '+':
		return line[1:], nil
	case '-':
		return nil, redisError(line[1:])
	case ':':
		n, err := strconv.ParseInt(line[1:], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("testredis: integer reply %q", line)
		}
		return n, nil
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < -1 {
			return nil, fmt.Errorf("testredis: bulk reply %q", line)
		}
		if n == -1 {
			return nil, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < -1 {
			return nil, fmt.Errorf("testredis: array reply %q", line)
		}
		if n == -1 {
			return nil, nil
		}
		a := make([]any, n)
		for i := range a {
			v, err := readReply(r)
			var re redisError
			if errors.As(err, &re) {
				a[i] = re
				continue
			}
			if err != nil {
				return nil, err
			}
			a[i] = v
		}
		return a, nil
	default:
		return nil, fmt.Errorf("testredis: unsupported reply %q", line)
	}
}

// pairs turns a flat array reply of field/value pairs (as SENTINEL REPLICAS gives
// for each replica) into a map.
func pairs(v any) map[string]string {
	a, _ := v.([]any)
	m := map[string]string{}
	for i := 0; i+1 < len(a); i += 2 {
		k, _ := a[i].(string)
		s, _ := a[i+1].(string)
		m[k] = s
	}
	return m
}
