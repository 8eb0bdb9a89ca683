package testredis

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/testbin"
)

const (
	// EnvAddr names a standalone Redis (host:port) to use instead of starting one.
	EnvAddr = "SAFECONDUCT_TEST_REDIS"
	// EnvClusterAddrs names Redis Cluster seed addresses (comma-separated) to use
	// instead of starting a one-node cluster.
	EnvClusterAddrs = "SAFECONDUCT_TEST_REDIS_CLUSTER"

	startTimeout  = 5 * time.Second
	readyInterval = 20 * time.Millisecond
	startTries    = 3
	// logLines is how much of a server's log a failure message shows.
	logLines = 40
)

// Start returns the address of a standalone Redis for t: the one named by
// SAFECONDUCT_TEST_REDIS if set, otherwise a private redis-server started for t and
// killed when t ends. Without redis-server on PATH, t is skipped (failed when CI=true).
// A variable naming the default port 6379 on this machine is refused unless CI=true,
// as that is the machine's shared Redis.
func Start(t testing.TB) string {
	t.Helper()
	if addr := os.Getenv(EnvAddr); addr != "" {
		refuseShared(t, EnvAddr, addr)
		return addr
	}
	addr, _ := startServer(t, false, EnvAddr)
	return addr
}

// StartProcess starts a private redis-server for t (ignoring SAFECONDUCT_TEST_REDIS),
// so the test may stop it, pause it or otherwise abuse it. stop kills the server and
// waits for it to exit; it is idempotent and also runs when t ends.
func StartProcess(t testing.TB) (addr string, stop func()) {
	t.Helper()
	return startServer(t, false, "")
}

// StartCluster returns the seed addresses of a Redis Cluster for t: those named by
// SAFECONDUCT_TEST_REDIS_CLUSTER if set, otherwise a private one-node cluster that
// owns all 16384 slots (enough to exercise the Cluster client, routing and CROSSSLOT
// checks), killed when t ends.
func StartCluster(t testing.TB) []string {
	t.Helper()
	if env := os.Getenv(EnvClusterAddrs); env != "" {
		addrs := strings.Split(env, ",")
		for i, a := range addrs {
			addrs[i] = strings.TrimSpace(a)
			refuseShared(t, EnvClusterAddrs, addrs[i])
		}
		return addrs
	}
	addr, _ := startServer(t, true, EnvClusterAddrs)
	return []string{addr}
}

// Prefix returns a random key prefix for t ("t" and 16 hex digits), so tests sharing
// a server never see each other's keys.
func Prefix(t testing.TB) string {
	t.Helper()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("testredis: %v", err)
	}
	return "t" + hex.EncodeToString(b[:])
}

// ClosedAddr returns a loopback address on which nothing listens (a port that was
// just free), for testing behaviour when Redis is unreachable.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatalf("testredis: %v", err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// Do sends one command to addr over a fresh connection and returns the reply of a
// simple, bulk or integer type as a string, for tests that need a raw command
// without a client. A Redis error reply is returned as an error.
func Do(addr string, timeout time.Duration, args ...string) (string, error) {
	v, err := command(addr, timeout, args...)
	if err != nil {
		return "", err
	}
	switch v := v.(type) {
	case string:
		return v, nil
	case int64:
		return strconv.FormatInt(v, 10), nil
	case nil:
		return "", errors.New("testredis: null reply")
	default:
		return "", fmt.Errorf("testredis: unsupported reply %T", v)
	}
}

// refuseShared stops a test pointed by env at the machine's shared Redis on the
// default port, unless CI (where the script starts a throwaway server) says so.
func refuseShared(t testing.TB, env, addr string) {
	t.Helper()
	shared, err := isSharedDefault(addr)
	if err != nil {
		t.Fatalf("testredis: %s=%q: %v", env, addr, err)
	}
	if shared && os.Getenv("CI") != "true" {
		t.Fatalf("testredis: %s=%q is the machine's shared Redis; tests must not use it (unset %s to start a private server)", env, addr, env)
	}
}

// isSharedDefault reports whether addr is the default Redis port on this machine.
func isSharedDefault(addr string) (bool, error) {
	host, port, err := net.SplitHostPort(strings.TrimSpace(addr))
	if err != nil {
		return false, err
	}
	if port != "6379" {
		return false, nil
	}
	ip := net.ParseIP(host)
	return host == "" || host == "localhost" || ip != nil && (ip.IsLoopback() || ip.IsUnspecified()), nil
}

// lookRedisServer finds redis-server; without it t is skipped, or failed when
// CI=true. alt names the variable that would have avoided the need, if any.
func lookRedisServer(t testing.TB, alt string) string {
	t.Helper()
	return lookRedisBinary(t, "redis-server", alt)
}

func startServer(t testing.TB, cluster bool, alt string) (string, func()) {
	t.Helper()
	bin := lookRedisServer(t, alt)
	var lastErr error
	for range startTries {
		addr, stop, err := tryStart(t, bin, cluster)
		if err == nil {
			t.Cleanup(stop)
			return addr, stop
		}
		lastErr = err // most likely the port was taken meanwhile; try another
	}
	t.Fatalf("testredis: %v", lastErr)
	return "", nil
}

func tryStart(t testing.TB, bin string, cluster bool) (string, func(), error) {
	port, err := freePort()
	if err != nil {
		return "", nil, err
	}
	dir := t.TempDir()
	args := []string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--dir", dir,
		"--loglevel", "warning",
	}
	if cluster {
		busPort, err := freePort()
		if err != nil {
			return "", nil, err
		}
		args = append(args,
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-port", strconv.Itoa(busPort),
		)
	}
	p, err := testbin.Start("redis-server", bin, dir, filepath.Join(dir, "redis.log"), args...)
	if err != nil {
		return "", nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	fail := func(err error) (string, func(), error) {
		p.Kill()
		return "", nil, fmt.Errorf("redis-server on %s: %w; log:\n%s", addr, err, p.LogTail(logLines))
	}
	if err := waitReady(p, func() error {
		_, err := Do(addr, time.Second, "PING")
		return err
	}); err != nil {
		return fail(err)
	}
	if cluster {
		if _, err := Do(addr, time.Second, "CLUSTER", "ADDSLOTSRANGE", "0", "16383"); err != nil {
			return fail(fmt.Errorf("CLUSTER ADDSLOTSRANGE: %w", err))
		}
		if err := waitReady(p, func() error {
			info, err := Do(addr, time.Second, "CLUSTER", "INFO")
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") {
				return errors.New("cluster_state not ok")
			}
			return nil
		}); err != nil {
			return fail(err)
		}
	}
	return addr, p.Kill, nil
}

// waitReady polls check every 20ms until it succeeds, p exits or startTimeout
// passes.
func waitReady(p *testbin.Proc, check func() error) error {
	err := testbin.Poll(startTimeout, readyInterval, p.Exited(), check)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, testbin.ErrQuit):
		return errors.New("exited before becoming ready")
	default:
		return fmt.Errorf("not ready after %s: %w", startTimeout, err)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
