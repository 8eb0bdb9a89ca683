package hardening

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestIdleConnectionsBounded: 6,000 idle HTTP/2 connections (no credential
// needed) must not take the STS past 200 MiB (the deploy manifests give it
// 256Mi), and exchanges are still served: open connections are bounded
// (limits.max_connections, default 1024), the longest idle closed to make room.
// The assertion is on memory, not time. Not parallel: 6,000 handshakes take
// the CPU other tests' servers need (their overload gate would shed).
func TestIdleConnectionsBounded(t *testing.T) {
	e := newEnvWith(t, envOptions{limits: "{shed_queue_delay: -1s}"})
	subject := e.a.Token(t, payments)
	e.wantIssued(t, e.exchange(t, subject, ""))
	before := e.rssMiB(t)

	conns, failed := e.idleHTTP2(t, 6000)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	time.Sleep(500 * time.Millisecond) // let the server finish with the last ones
	e.wantIssued(t, e.exchange(t, subject, ""))
	after := e.rssMiB(t)
	t.Logf("sts RSS %d MiB before, %d MiB with %d idle HTTP/2 connections opened (%d dials failed)", before, after, len(conns), failed)
	if len(conns) < 5000 {
		t.Fatalf("only %d of 6000 connections opened: the attack did not take place", len(conns))
	}
	if after >= 200 {
		t.Fatalf("sts RSS %d MiB with %d idle HTTP/2 connections, want < 200", after, len(conns))
	}
}

// idleHTTP2 opens n HTTP/2 connections that send the client preface and their
// SETTINGS and nothing else. Dials are bounded in time; failures are counted.
func (e *env) idleHTTP2(t *testing.T, n int) ([]net.Conn, int) {
	t.Helper()
	cfg := e.client.Transport.(*http.Transport).TLSClientConfig.Clone()
	cfg.NextProtos = []string{"h2"}
	cfg.CurvePreferences = []tls.CurveID{tls.X25519} // cheaper handshakes: the test is about what stays
	addr := strings.TrimPrefix(e.url, "https://")
	const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + "\x00\x00\x00\x04\x00\x00\x00\x00\x00" // + empty SETTINGS
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var (
		mu     sync.Mutex
		conns  []net.Conn
		next   atomic.Int64
		failed atomic.Int64
		wg     sync.WaitGroup
	)
	for range 32 {
		wg.Go(func() {
			d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				c, err := d.DialContext(ctx, "tcp", addr)
				if err == nil {
					_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
					_, err = c.Write([]byte(preface))
				}
				if err != nil {
					failed.Add(1)
					if c != nil {
						c.Close()
					}
					continue
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return conns, int(failed.Load())
}

// rssMiB is the resident set size of the sts process.
func (e *env) rssMiB(t *testing.T) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", e.pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			if err != nil {
				t.Fatalf("VmRSS %q: %v", rest, err)
			}
			return kb >> 10
		}
	}
	t.Fatal("no VmRSS in /proc/PID/status")
	return 0
}
