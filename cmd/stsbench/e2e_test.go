package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/stsclient"
	"github.com/safeconduct/safeconduct/internal/testproc"
)

// TestQuickstartEndToEnd builds the real sts, runs `sts quickstart` (which keeps
// serving after its demo exchange) on a free loopback port, and loads it with run()
// in-process, measuring the server's CPU through --pid.
func TestQuickstartEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the sts binary")
	}
	bin := buildSTS(t)
	dir := t.TempDir()
	base := fmt.Sprintf("https://127.0.0.1:%d", testproc.FreePort(t))
	cmd, out := startSTS(t, bin, "quickstart", "--dir", dir, "--listen", base[len("https://"):])
	waitReady(t, base, filepath.Join(dir, "ca.crt"), cmd, out)

	var stdout, stderr bytes.Buffer
	code := run([]string{"--quickstart", dir, "--sts", base, "--duration", "1s", "--warmup", "200ms",
		"--concurrency", "2", "--tokens", "20", "--pid", strconv.Itoa(cmd.cmd.Process.Pid), "--json"}, &stdout, &stderr)
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
	case res.Errors != 0 || len(res.ErrorKinds) != 0 || res.Limited != 0:
		t.Errorf("errors: %d %v, limited %d", res.Errors, res.ErrorKinds, res.Limited)
	case !(res.Latency.P50 > 0 && res.Latency.P50 <= res.Latency.P99 && res.Latency.P99 <= res.Latency.Max):
		t.Errorf("latency %+v", res.Latency)
	case res.Server == nil || res.Server.PerRequestUS <= 0 || res.Server.PID != cmd.cmd.Process.Pid:
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

// TestOverloadLimitedEndToEnd serves the quickstart's configuration (embedded
// store) with limits.max_in_flight: 1 from the real sts binary, loads it closed-
// and open-loop with more concurrency than that, and checks that the STS's 429s
// are counted as limited (each one checked: Retry-After, a temporarily_unavailable
// JSON body), with their own latencies, and not as errors.
func TestOverloadLimitedEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the sts binary")
	}
	bin := buildSTS(t)
	dir := t.TempDir()
	listen := fmt.Sprintf("127.0.0.1:%d", testproc.FreePort(t))
	base := "https://" + listen
	// The quickstart writes the files (CA, TLS, demo upstream, sts.yaml, policy) and
	// stops; the same config is then served with a tiny in-flight bound.
	if out, err := exec.Command(bin, "quickstart", "--dir", dir, "--listen", listen, "--once").CombinedOutput(); err != nil {
		t.Fatalf("sts quickstart --once: %v\n%s", err, out)
	}
	cfg := filepath.Join(dir, "sts.yaml")
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The metrics are on their own listener, never on the token port.
	ops := fmt.Sprintf("127.0.0.1:%d", testproc.FreePort(t))
	if _, err := f.WriteString("limits: {max_in_flight: 1}\naudit: {path: audit.jsonl}\nmetrics_listen: " + ops + "\n"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	p, out := startSTS(t, bin, "serve", "--config", cfg)
	waitReady(t, base, filepath.Join(dir, "ca.crt"), p, out)

	measured := 0
	for _, args := range [][]string{
		{"--concurrency", "8"},
		{"--rate", "1000", "--concurrency", "16"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(append([]string{"--quickstart", dir, "--sts", base, "--duration", "1s", "--warmup", "200ms",
			"--tokens", "50", "--pid", strconv.Itoa(p.cmd.Process.Pid), "--json"}, args...), &stdout, &stderr)
		var res result
		dec := json.NewDecoder(&stdout)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&res); err != nil {
			t.Fatalf("%q: exit %d, output %q: %v\nstderr: %s\nsts: %s", args, code, stdout.String(), err, stderr.String(), out.String())
		}
		t.Logf("%s loop %q: %d ok (%.0f/s, p99 %.0fµs), %d limited (%.0f/s, p50 %.0fµs, p99 %.0fµs), server %.1fµs per ok exchange",
			res.Mode, args, res.OK, res.Throughput, res.Latency.P99, res.Limited, res.LimitedRate,
			res.LatencyLimited.P50, res.LatencyLimited.P99, res.Server.PerRequestUS)
		switch {
		case code != 0:
			t.Errorf("%q: exit %d\nstderr: %s", args, code, stderr.String())
		case res.Errors != 0:
			t.Errorf("%q: errors %v (a 429 failing its checks is one)", args, res.ErrorKinds)
		case res.OK == 0 || res.Limited == 0:
			t.Errorf("%q: %d ok, %d limited; want both with max_in_flight 1", args, res.OK, res.Limited)
		case !(res.LatencyLimited.P50 > 0 && res.LatencyLimited.P50 <= res.LatencyLimited.P99 && res.LatencyLimited.P99 <= res.LatencyLimited.Max):
			t.Errorf("%q: limited latency %+v", args, res.LatencyLimited)
		case res.Server == nil || res.Server.PerRequestUS <= 0:
			t.Errorf("%q: server cpu %+v", args, res.Server)
		}
		if res.Mode == modeOpen && (res.Open == nil || res.Open.Sent != res.OK+res.Limited+res.Errors) {
			t.Errorf("%q: open loop %+v does not add up to %d ok + %d limited", args, res.Open, res.OK, res.Limited)
		}
		measured += res.Limited
	}

	// The STS counted as many refusals (warmups included) as stsbench saw limited.
	c := &http.Client{Timeout: 5 * time.Second}
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://" + ops + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var text bytes.Buffer
	if _, err := text.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	var refused float64
	for line := range strings.SplitSeq(text.String(), "\n") {
		if v, ok := strings.CutPrefix(line, `safeconduct_rate_limited_total{reason="in_flight"} `); ok {
			refused, _ = strconv.ParseFloat(v, 64)
		}
	}
	if refused < float64(measured) {
		t.Errorf("the STS counted %.0f in-flight refusals, stsbench %d limited answers in its windows", refused, measured)
	}
}

// stsBinary is the sts command, built once per test binary into a temporary
// directory (removed by TestMain).
var stsBinary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if stsBinary.dir != "" {
		_ = os.RemoveAll(stsBinary.dir)
	}
	os.Exit(code)
}

// buildSTS builds ../sts once (outside the repository tree) and returns its path.
func buildSTS(t *testing.T) string {
	t.Helper()
	b := &stsBinary
	b.once.Do(func() {
		if b.dir, b.err = os.MkdirTemp("", "stsbench-test-"); b.err != nil {
			return
		}
		b.path = filepath.Join(b.dir, "sts")
		if out, err := exec.Command("go", "build", "-o", b.path, "../sts").CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build ../sts: %v\n%s", err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// stsProcess is a running sts command.
type stsProcess struct {
	cmd    *exec.Cmd
	exited chan error
}

// startSTS runs the sts binary with args, its output collected, and stops it
// (SIGINT, then SIGKILL after 5 s) when the test ends.
func startSTS(t *testing.T, bin string, args ...string) (*stsProcess, *testproc.Buffer) {
	t.Helper()
	out := &testproc.Buffer{}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &stsProcess{cmd: cmd, exited: make(chan error, 1)}
	go func() { p.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-p.exited
		}
	})
	return p, out
}

// waitReady polls the discovery document (trusting the quickstart's CA once it has
// been written) for up to 30 s.
func waitReady(t *testing.T, base, caFile string, p *stsProcess, out *testproc.Buffer) {
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
		case err := <-p.exited:
			t.Fatalf("sts exited: %v\n%s", err, out.String())
		case <-ctx.Done():
			t.Fatalf("sts not ready at %s after 30s\n%s", base, out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
