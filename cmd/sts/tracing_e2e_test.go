package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/testotlp"
	"github.com/safeconduct/safeconduct/internal/testproc"
)

const embeddedRevocation = "revocation:\n  backend: embedded\n  embedded: {path: data/revocation.db}\n"

// TestTracingFlushedAtShutdown: `sts serve` batches spans, so the spans of an
// exchange made just before SIGTERM reach the collector only through the shutdown
// flush.
func TestTracingFlushedAtShutdown(t *testing.T) {
	rcv := testotlp.NewTLS(t)
	e := setup(t, embeddedRevocation+`tracing:
  otlp_endpoint: `+rcv.URL+`
  sample_ratio: 1
  ca_file: otlp-ca.pem
  headers_file: otlp-headers
`)
	rcv.WriteCA(t, e.dir)
	e.write("otlp-headers", "Authorization: Bearer collector-secret\n")
	// No periodic export during the test: only the shutdown flush can deliver.
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")
	e.start()
	subject := e.a.Token(t, payments)
	resp, err := e.exchange(subject)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(rcv.Spans()); n != 0 {
		t.Fatalf("%d spans exported before shutdown", n)
	}
	if err := e.stop(); err != nil {
		t.Fatalf("graceful stop: %v\n%s", err, e.log)
	}
	server := rcv.Named("POST /token")
	if len(server) != 1 {
		t.Fatalf("spans after shutdown: %d POST /token of %d", len(server), len(rcv.Spans()))
	}
	for _, name := range []string{"attest subject", "policy", "revocation admit", "mint"} {
		if s := rcv.Named(name); len(s) != 1 || s[0].ParentID() != server[0].SpanID() {
			t.Fatalf("no %q child span of the server span", name)
		}
	}
	if h := rcv.Headers()[0].Get("Authorization"); h != "Bearer collector-secret" {
		t.Fatalf("export sent Authorization %q", h)
	}
	logText := e.log.String()
	for _, secret := range []string{"collector-secret", subject, resp.AccessToken} {
		if strings.Contains(logText, secret) {
			t.Fatalf("the log holds a secret:\n%s", logText)
		}
	}
}

// TestTracingCollectorDownDoesNotHoldExit: with the collector unreachable the STS
// serves, and exits promptly on SIGTERM (the flush is bounded to 5 s).
func TestTracingCollectorDownDoesNotHoldExit(t *testing.T) {
	e := setup(t, embeddedRevocation+fmt.Sprintf(`tracing:
  otlp_endpoint: http://127.0.0.1:%d/v1/traces
  insecure: true
  sample_ratio: 1
`, testproc.FreePort(t)))
	e.start()
	if _, err := e.exchange(e.a.Token(t, payments)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := e.stop(); err != nil {
		t.Fatalf("stop: %v\n%s", err, e.log)
	}
	if d := time.Since(start); d > 9*time.Second {
		t.Fatalf("stopping took %v with the collector down", d)
	}
	if !strings.Contains(e.log.String(), "tracing:") {
		t.Fatalf("the lost spans are not logged:\n%s", e.log)
	}
}
