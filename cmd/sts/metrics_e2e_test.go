package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// get returns the status and body of a GET with client (the body bounded).
func get(t *testing.T, client *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, string(b)
}

// TestE2EMetricsListener: the token listener never serves /metrics (it names
// rules, upstreams and key ages); metrics_listen serves /metrics, /healthz and
// /readyz over plain HTTP, and the probes stay on the token listener too.
func TestE2EMetricsListener(t *testing.T) {
	e := setup(t, "")
	ops := e.ops // setup gives every e2e server a metrics listener
	e.start()
	if _, err := e.exchange(e.a.Token(t, payments)); err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, e.client, e.url+"/metrics"); code != http.StatusNotFound || strings.Contains(body, "safeconduct_") {
		t.Errorf("token listener /metrics: %d", code)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _ := get(t, e.client, e.url+p); code != http.StatusOK {
			t.Errorf("token listener %s: %d", p, code)
		}
	}
	plain := &http.Client{Timeout: 10 * time.Second}
	code, body := get(t, plain, "http://"+ops+"/metrics")
	if code != http.StatusOK || !strings.Contains(body, `safeconduct_exchanges_total{error="",outcome="issued"} 1`) {
		t.Errorf("metrics_listen /metrics: %d\n%.500s", code, body)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _ := get(t, plain, "http://"+ops+p); code != http.StatusOK {
			t.Errorf("metrics_listen %s: %d", p, code)
		}
	}
	if code, _ := get(t, plain, "http://"+ops+"/token"); code != http.StatusNotFound {
		t.Errorf("metrics_listen /token: %d", code)
	}
	if err := e.stop(); err != nil {
		t.Fatalf("stop: %v\n%s", err, e.log)
	}
}
