package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/stsclient"
)

// TestQuickstartEndToEnd builds the real sts, runs `sts quickstart` (which keeps
// serving after its demo exchange) on a free loopback port, and loads it with run()
// in-process, measuring the server's CPU through --pid.
func TestQuickstartEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the sts binary")
	}
	bin := filepath.Join(t.TempDir(), "sts")
	if out, err := exec.Command("go", "build", "-o", bin, "../sts").CombinedOutput(); err != nil {
		t.Fatalf("go build ../sts: %v\n%s", err, out)
	}
	dir := t.TempDir()
	base := fmt.Sprintf("https://127.0.0.1:%d", freePort(t))
	out := &lockedBuffer{}
	cmd := exec.Command(bin, "quickstart", "--dir", dir, "--listen", base[len("https://"):])
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	waitReady(t, base, filepath.Join(dir, "ca.crt"), exited, out)

	var stdout, stderr bytes.Buffer
	code := run([]string{"--quickstart", dir, "--sts", base, "--duration", "1s", "--warmup", "200ms",
		"--concurrency", "2", "--tokens", "20", "--pid", strconv.Itoa(cmd.Process.Pid), "--json"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s\nsts: %s", code, stdout.String(), stderr.String(), out.String())
	}
	var res result
	dec := json.NewDecoder(&stdout)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&res); err != nil {
		t.Fatalf("output is not one JSON result: %v: %s", err, stdout.String())
	}
	if dec.More() {
		t.Error("more than one JSON value on stdout")
	}
	t.Logf("%d ok in %.2fs: %.0f/s, p50 %.0fµs, p99 %.0fµs, server %.1fµs/exchange, stsbench %.1fµs/request",
		res.OK, res.DurationS, res.Throughput, res.Latency.P50, res.Latency.P99,
		res.Server.PerRequestUS, res.Generator.PerRequestUS)
	switch {
	case res.OK <= 0:
		t.Errorf("ok = %d", res.OK)
	case res.Errors != 0 || len(res.ErrorKinds) != 0:
		t.Errorf("errors: %d %v", res.Errors, res.ErrorKinds)
	case !(res.Latency.P50 > 0 && res.Latency.P50 <= res.Latency.P99 && res.Latency.P99 <= res.Latency.Max):
		t.Errorf("latency %+v", res.Latency)
	case res.Server == nil || res.Server.PerRequestUS <= 0 || res.Server.PID != cmd.Process.Pid:
		t.Errorf("server cpu %+v", res.Server)
	case res.Generator.Seconds <= 0:
		t.Errorf("generator cpu %+v", res.Generator)
	case res.Stopped != stopDeadline || res.DurationS < 1 || res.DurationS > 12:
		t.Errorf("stopped by %q after %.2fs", res.Stopped, res.DurationS)
	case res.Concurrency != 2 || res.Tokens != 20 || res.URL != base+"/token":
		t.Errorf("result echoes %q, %d connections, %d tokens", res.URL, res.Concurrency, res.Tokens)
	}
	if bytes.Contains(stdout.Bytes(), []byte("eyJ")) || bytes.Contains(stderr.Bytes(), []byte("eyJ")) {
		t.Error("output contains something token-like")
	}

	// A subject the policy does not grant: every request fails, and the run stops
	// after the first few with exit 1 instead of hammering for the whole duration.
	stdout.Reset()
	stderr.Reset()
	start := time.Now()
	code = run([]string{"--quickstart", dir, "--sts", base, "--duration", "5s", "--warmup", "0",
		"--concurrency", "2", "--tokens", "5", "--subject-prefix", "system:serviceaccount:other:"}, &stdout, &stderr)
	if code != 1 || !bytes.Contains(stderr.Bytes(), []byte("400 invalid_request")) || time.Since(start) > 3*time.Second {
		t.Errorf("refused subjects: exit %d after %s, stderr %q", code, time.Since(start), stderr.String())
	}
}

// waitReady polls the discovery document (trusting the quickstart's CA once it has
// been written) for up to 30 s.
func waitReady(t *testing.T, base, caFile string, exited <-chan error, out *lockedBuffer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if ok := func() bool {
			c, err := stsclient.HTTPClient(caFile, 2*time.Second)
			if err != nil {
				return false // the CA is not written yet
			}
			defer c.CloseIdleConnections()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/.well-known/openid-configuration", nil)
			resp, err := c.Do(req)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		}(); ok {
			return
		}
		select {
		case err := <-exited:
			t.Fatalf("sts quickstart exited: %v\n%s", err, out.String())
		case <-ctx.Done():
			t.Fatalf("sts quickstart not ready at %s after 30s\n%s", base, out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// lockedBuffer collects the child's output while the test may read it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
