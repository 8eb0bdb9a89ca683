package issuer

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestServeMetrics: the operations listener serves /metrics, /healthz and /readyz
// over plain HTTP on a real socket, nothing else (not /token, not the admin API),
// and closes as soon as its context ends.
func TestServeMetrics(t *testing.T) {
	ts := startSTS(t, stsOptions{})
	ts.post(t, ts.form(ts.a.Token(t, payments)))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ts.srv.ServeMetrics(ctx, l) }()
	// ts's request helper, aimed at the operations listener.
	ops := *ts
	ops.url, ops.client = "http://"+l.Addr().String(), &http.Client{Timeout: 10 * time.Second}
	get := func(method, path string) (int, string) {
		r := ops.do(t, method, path, "", "", nil)
		return r.status, r.raw
	}
	if code, body := get(http.MethodGet, "/metrics"); code != 200 || !strings.Contains(body, `safeconduct_exchanges_total{error="",outcome="issued"} 1`) {
		t.Errorf("/metrics: %d", code)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _ := get(http.MethodGet, p); code != 200 {
			t.Errorf("%s: %d", p, code)
		}
	}
	for _, p := range []string{PathToken, PathJWKS, PathRevocations, PathAdmin + "revocations", "/"} {
		if code, _ := get(http.MethodGet, p); code != http.StatusNotFound {
			t.Errorf("%s on the operations listener: %d, want 404", p, code)
		}
	}
	if code, _ := get(http.MethodPost, "/metrics"); code != http.StatusNotFound {
		t.Errorf("POST /metrics: %d, want 404", code)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeMetrics did not return after its context ended")
	}
}
