package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeSTS is a TLS server on loopback answering /token with h; it returns the
// token URL and a CA file that trusts it.
func fakeSTS(t *testing.T, h http.HandlerFunc) (string, string) {
	t.Helper()
	hs := httptest.NewTLSServer(h)
	t.Cleanup(hs.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hs.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return hs.URL, ca
}

// answer writes one of the canned answers named by the form's "case".
func answer(w http.ResponseWriter, r *http.Request) {
	c := r.FormValue("case")
	h := w.Header()
	h.Set("Content-Type", "application/json")
	switch c {
	case "ok":
		_, _ = w.Write([]byte(`{"access_token":"a.b.c","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":300}`))
		return
	case "limited", "limited-date", "no-retry-after", "bad-retry-after", "wrong-code", "html":
		switch c {
		case "limited", "wrong-code", "html":
			h.Set("Retry-After", "1")
		case "limited-date":
			h.Set("Retry-After", time.Now().Add(2*time.Second).UTC().Format(http.TimeFormat))
		case "bad-retry-after":
			h.Set("Retry-After", "soon")
		}
		w.WriteHeader(http.StatusTooManyRequests)
		switch c {
		case "wrong-code":
			_, _ = w.Write([]byte(`{"error":"slow_down"}`))
		case "html":
			_, _ = w.Write([]byte(`<html>too many</html>`))
		default:
			_, _ = w.Write([]byte(`{"error":"temporarily_unavailable","error_description":"too many requests; retry after 1s"}`))
		}
		return
	case "unavailable":
		h.Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":"temporarily_unavailable"}`))
		return
	}
	w.WriteHeader(http.StatusBadRequest)
	_, _ = w.Write([]byte(`{"error":"invalid_request"}`))
}

func testOptions(ca string) *options {
	return &options{cacert: ca, tokens: 1, concurrency: 1, duration: 300 * time.Millisecond, maxRequests: 1 << 30}
}

// TestExchangeClassifiesLimited: a 429 is "limited" only with Retry-After and a
// temporarily_unavailable JSON body; every other non-200 is an error.
func TestExchangeClassifiesLimited(t *testing.T) {
	u, ca := fakeSTS(t, answer)
	b, err := newBench(u+"/token", testOptions(ca), []string{"case=ok"})
	if err != nil {
		t.Fatal(err)
	}
	w := b.workers[0]
	defer w.client.CloseIdleConnections()
	for _, tc := range []struct {
		body string
		out  outcome
		kind string
	}{
		{"case=ok", admitted, ""},
		{"case=limited", limited, ""},
		{"case=limited-date", limited, ""},
		{"case=no-retry-after", failed, "429 without Retry-After"},
		{"case=bad-retry-after", failed, "429 with a malformed Retry-After"},
		{"case=wrong-code", failed, "429 slow_down (want a temporarily_unavailable JSON body)"},
		{"case=html", failed, "429 (want a temporarily_unavailable JSON body)"},
		{"case=unavailable", failed, "503 temporarily_unavailable"},
		{"case=other", failed, "400 invalid_request"},
	} {
		out, kind := w.exchange(context.Background(), b.url, tc.body)
		if out != tc.out || kind != tc.kind {
			t.Errorf("%s: %v %q, want %v %q", tc.body, out, kind, tc.out, tc.kind)
		}
	}
	for v, ok := range map[string]bool{"0": true, "1": true, "120": true, "Sun, 06 Nov 1994 08:49:37 GMT": true,
		"": false, "-1": false, "1.5": false, " 1": false, "soon": false, strings.Repeat("9", 65): false} {
		if validRetryAfter(v) != ok {
			t.Errorf("validRetryAfter(%q) = %v", v, !ok)
		}
	}
}

func TestArrivalGaps(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(1, 2))
	if g := arrivalGaps(arrivalsUniform, 250, rng)(); g != 1.0/250 {
		t.Errorf("uniform gap %v, want 4ms", g)
	}
	// Poisson: exponential gaps, mean = standard deviation = 1/rate.
	const n, rate = 200_000, 1000.0
	gap := arrivalGaps(arrivalsPoisson, rate, rng)
	var sum, sq float64
	for range n {
		g := gap()
		if g < 0 {
			t.Fatalf("negative gap %v", g)
		}
		sum += g
		sq += g * g
	}
	mean := sum / n
	sd := math.Sqrt(sq/n - mean*mean)
	if math.Abs(mean*rate-1) > 0.02 || math.Abs(sd*rate-1) > 0.03 {
		t.Errorf("poisson gaps: mean %.4gs sd %.4gs, want both ~%gs", mean, sd, 1/rate)
	}
}

// TestOpenLoopOffersTheRate: against a fast server, the arrivals in the window
// match the rate, every one is sent, and 200s and 429s are told apart.
func TestOpenLoopOffersTheRate(t *testing.T) {
	var n atomic.Int64
	u, ca := fakeSTS(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%3 == 0 {
			r.Form = map[string][]string{"case": {"limited"}}
		}
		answer(w, r)
	})
	for _, kind := range []arrivalKind{arrivalsUniform, arrivalsPoisson} {
		o := testOptions(ca)
		o.rate, o.arrivals, o.concurrency, o.maxOutstanding = 400, kind, 32, 256
		o.warmup, o.duration = 200*time.Millisecond, 500*time.Millisecond
		b, err := newBench(u+"/token", o, []string{"case=ok", "case=ok"})
		if err != nil {
			t.Fatal(err)
		}
		res, err := b.run(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		op := res.Open
		if res.Mode != modeOpen || op == nil {
			t.Fatalf("%s: mode %q, open %+v", kind, res.Mode, op)
		}
		t.Logf("%s: %d arrivals (%.0f/s), %d sent, %d ok, %d limited; latency %s; send delay %s",
			kind, op.Scheduled, op.OfferedRate, op.Sent, res.OK, res.Limited, res.Latency, op.SendDelay)
		// 200 expected; uniform is exact, Poisson within about 4 standard deviations.
		if lo, hi := map[arrivalKind][2]int{arrivalsUniform: {195, 205}, arrivalsPoisson: {140, 260}}[kind], op.Scheduled; hi < lo[0] || hi > lo[1] {
			t.Errorf("%s: %d arrivals in 500ms at 400/s", kind, op.Scheduled)
		}
		switch {
		case op.Sent+op.NotSent != op.Scheduled:
			t.Errorf("%s: sent %d + not sent %d != %d", kind, op.Sent, op.NotSent, op.Scheduled)
		case op.NotSent > op.Scheduled/5:
			// Only a stall of the test process (a busy shared machine) can leave
			// 256 requests outstanding at 400/s.
			t.Errorf("%s: %d arrivals not sent against a fast server", kind, op.NotSent)
		case res.OK+res.Limited+res.Errors != op.Sent:
			t.Errorf("%s: %d ok + %d limited + %d errors != %d sent", kind, res.OK, res.Limited, res.Errors, op.Sent)
		case res.Errors != 0 || res.OK == 0 || res.Limited == 0:
			t.Errorf("%s: %d ok, %d limited, errors %v", kind, res.OK, res.Limited, res.ErrorKinds)
		case res.LatencyLimited.P50 <= 0 || res.Latency.P50 <= 0:
			t.Errorf("%s: latencies ok %+v limited %+v", kind, res.Latency, res.LatencyLimited)
		case res.Stopped != stopDeadline:
			t.Errorf("%s: stopped by %s", kind, res.Stopped)
		}
	}
}

// TestOpenLoopClientSaturation: when the server holds every request, arrivals
// beyond --max-outstanding are not sent and are counted, instead of delaying the
// schedule; with more outstanding allowed than connections, the queueing for a
// connection shows in the send delay, not in the latency.
func TestOpenLoopClientSaturation(t *testing.T) {
	const hold = 100 * time.Millisecond
	var inFlight, peak atomic.Int64
	u, ca := fakeSTS(t, func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		time.Sleep(hold)
		answer(w, r)
	})
	o := testOptions(ca)
	o.rate, o.arrivals, o.concurrency, o.maxOutstanding = 200, arrivalsUniform, 2, 4
	o.duration = 500 * time.Millisecond
	b, err := newBench(u+"/token", o, []string{"case=ok"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.run(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	op := res.Open
	t.Logf("%d arrivals, %d sent, %d not sent, %d ok; latency p50 %.0fµs, send delay max %.0fµs",
		op.Scheduled, op.Sent, op.NotSent, res.OK, res.Latency.P50, op.SendDelay.Max)
	// ~100 arrivals; 2 connections complete ~20 requests in 0.5 s, 4 outstanding.
	switch {
	case op.Scheduled < 95 || op.Scheduled > 105:
		t.Errorf("%d arrivals, want ~100 (the schedule must not wait for the server)", op.Scheduled)
	case op.Sent+op.NotSent != op.Scheduled || op.NotSent < op.Scheduled/2:
		t.Errorf("sent %d, not sent %d of %d", op.Sent, op.NotSent, op.Scheduled)
	case op.Sent > 4+int(o.duration/hold)*2+2:
		t.Errorf("%d sent: more than the bound allows", op.Sent)
	case peak.Load() > 2:
		t.Errorf("%d requests in flight at the server, want at most 2 connections", peak.Load())
	case res.OK != op.Sent || res.Errors != 0:
		t.Errorf("%d ok, errors %v, sent %d", res.OK, res.ErrorKinds, op.Sent)
	case res.Latency.P50 < float64(hold.Microseconds()) || res.Latency.P50 > 3*float64(hold.Microseconds()):
		t.Errorf("latency p50 %.0fµs, want about the server's %s hold", res.Latency.P50, hold)
	case op.SendDelay.Max < float64(hold.Microseconds())/2:
		t.Errorf("send delay max %.0fµs: queued arrivals should wait for a connection", op.SendDelay.Max)
	}
}

// TestRunLimitedNotErrors drives run() (flags, JSON, exit status) against a server
// that limits two requests in three: limited answers are counted apart and the
// exit status is 0; a malformed 429 is an error.
func TestRunLimitedNotErrors(t *testing.T) {
	var n atomic.Int64
	bad := atomic.Bool{}
	u, ca := fakeSTS(t, func(w http.ResponseWriter, r *http.Request) {
		c := "ok"
		if n.Add(1)%3 != 0 {
			c = "limited"
			if bad.Load() {
				c = "no-retry-after"
			}
		}
		r.Form = map[string][]string{"case": {c}}
		answer(w, r)
	})
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	key := writePEM(t, "PRIVATE KEY", der)
	base := strings.TrimSuffix(u, "/")
	common := []string{"--sts", base, "--cacert", ca, "--upstream-key", key, "--upstream-issuer", "https://up.example",
		"--tokens", "3", "--warmup", "50ms", "--duration", "300ms", "--json"}
	for _, args := range [][]string{
		{"--concurrency", "2"},
		{"--rate", "300", "--concurrency", "4"},
		{"--rate", "300", "--arrivals", "uniform", "--concurrency", "4", "--max-outstanding", "8"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(slices.Concat(common, args), &stdout, &stderr)
		var res result
		dec := json.NewDecoder(&stdout)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&res); err != nil {
			t.Fatalf("%q: exit %d, output %q: %v; stderr %s", args, code, stdout.String(), err, stderr.String())
		}
		// Two in three answers are 429s, but which of them fall in a short window
		// on a busy machine is not fixed: only that both kinds are counted apart.
		if code != 0 || res.OK == 0 || res.Limited == 0 || res.Errors != 0 || res.LimitedRate <= 0 ||
			res.LatencyLimited.P99 <= 0 || res.Generator.PerRequestUS <= 0 {
			t.Errorf("%q: exit %d, %d ok, %d limited (%.0f/s, %+v), errors %v; stderr %s",
				args, code, res.OK, res.Limited, res.LimitedRate, res.LatencyLimited, res.ErrorKinds, stderr.String())
		}
		open := len(args) > 0 && args[0] == "--rate"
		if open != (res.Mode == modeOpen) || open != (res.Open != nil) {
			t.Errorf("%q: mode %q, open %+v", args, res.Mode, res.Open)
		}
		if res.Open != nil && res.Open.MaxOutstanding != map[bool]int{true: 8, false: 4}[len(args) > 4] || res.Concurrency != 2+2*min(1, len(args)-2) {
			t.Errorf("%q: max outstanding %d", args, res.Open.MaxOutstanding)
		}
	}
	// Text output names the classes.
	var stdout, stderr bytes.Buffer
	if code := run(slices.Concat(common[:len(common)-1], []string{"--rate", "200", "--concurrency", "4"}), &stdout, &stderr); code != 0 ||
		!strings.Contains(stdout.String(), "limited (429)") || !strings.Contains(stdout.String(), "latency 429:") ||
		!strings.Contains(stdout.String(), "open loop:") || !strings.Contains(stdout.String(), "send delay:") {
		t.Errorf("text: exit %d\n%s\n%s", code, stdout.String(), stderr.String())
	}

	bad.Store(true)
	stdout.Reset()
	stderr.Reset()
	if code := run(slices.Concat(common, []string{"--concurrency", "2"}), &stdout, &stderr); code != 1 ||
		!strings.Contains(stdout.String(), `"429 without Retry-After":`) {
		t.Errorf("malformed 429: exit %d, %s %s", code, stdout.String(), stderr.String())
	}
}

func TestOpenLoopUsage(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"--quickstart", dir, "--rate", "0"},
		{"--quickstart", dir, "--rate", "-5"},
		{"--quickstart", dir, "--rate", "NaN"},
		{"--quickstart", dir, "--rate", "2e6"},
		{"--quickstart", dir, "--rate", "100", "--arrivals", "bursty"},
		{"--quickstart", dir, "--rate", "100", "--max-outstanding", "0"},
		{"--quickstart", dir, "--rate", "100", "--max-outstanding", "1000000"},
		{"--quickstart", dir, "--arrivals", "uniform"},
		{"--quickstart", dir, "--max-outstanding", "10"},
		{"--quickstart", dir, "--http2", "-1"},
		{"--quickstart", dir, "--http2", "9"}, // more than the 8 workers
		{"--quickstart", dir, "--rate", "100", "--concurrency", "1000", "--http2", "300"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != 2 {
			t.Errorf("run(%q) = %d, want 2; stderr: %s", args, code, stderr.String())
		}
	}
	o, code := parseFlags([]string{"--quickstart", dir, "--rate", "1000"}, &bytes.Buffer{})
	if code != -1 || o.concurrency != openConcurrency || o.maxOutstanding != openConcurrency || o.arrivals != arrivalsPoisson {
		t.Errorf("open-loop defaults: %+v, %d", o, code)
	}
	o, code = parseFlags([]string{"--quickstart", dir, "--rate", "1000", "--concurrency", "16"}, &bytes.Buffer{})
	if code != -1 || o.concurrency != 16 || o.maxOutstanding != 16 {
		t.Errorf("--max-outstanding defaults to --concurrency: %+v, %d", o, code)
	}
	o, code = parseFlags([]string{"--quickstart", dir}, &bytes.Buffer{})
	if code != -1 || o.concurrency != 8 || o.rate != 0 {
		t.Errorf("closed-loop defaults: %+v, %d", o, code)
	}
}

// TestHTTP2SharedConnections: with --http2 N the workers speak HTTP/2 over N
// connections (worker i on connection i mod N); without it each worker has its
// own HTTP/1.1 connection.
func TestHTTP2SharedConnections(t *testing.T) {
	type seen struct {
		proto int
		peer  string
	}
	got := make(chan seen, 64)
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.ProtoMajor, r.RemoteAddr}
		answer(w, r)
	}))
	hs.EnableHTTP2 = true
	hs.StartTLS()
	t.Cleanup(hs.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hs.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ http2, proto, peers int }{{2, 2, 2}, {0, 1, 4}} {
		o := testOptions(ca)
		o.concurrency, o.http2Conns = 4, tc.http2
		b, err := newBench(hs.URL+"/token", o, []string{"case=ok"})
		if err != nil {
			t.Fatal(err)
		}
		peers := map[string]bool{}
		for _, w := range b.workers {
			if out, kind := w.exchange(context.Background(), b.url, "case=ok"); out != admitted {
				t.Fatalf("--http2 %d: %v %s", tc.http2, out, kind)
			}
			s := <-got
			if s.proto != tc.proto {
				t.Errorf("--http2 %d: HTTP/%d, want HTTP/%d", tc.http2, s.proto, tc.proto)
			}
			peers[s.peer] = true
		}
		for _, w := range b.workers {
			w.client.CloseIdleConnections()
		}
		if len(peers) != tc.peers {
			t.Errorf("--http2 %d: %d connections for 4 workers, want %d", tc.http2, len(peers), tc.peers)
		}
	}
}
