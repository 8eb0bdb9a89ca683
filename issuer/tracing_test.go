package issuer

import (
	"cmp"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/safeconduct/safeconduct/internal/testotlp"
)

// tracingPolicy is testPolicy plus a delegation rule, so that the actor is traced
// too.
const tracingPolicy = testPolicy + `  - name: gateway-for-payments
    effect: allow
    upstreams: [cluster-a]
    subjects: ["system:serviceaccount:payments:*"]
    audiences: ["https://ledger.internal"]
    scopes: [ledger.read]
    actors:
      - upstreams: [cluster-a]
        subjects: ["system:serviceaccount:gateway:*"]
`

// startTracedSTS starts the test STS with a tracing section (extra keys after
// otlp_endpoint, 2-space indented) exporting to rcv.
func startTracedSTS(t testing.TB, rcv *testotlp.Receiver, dir, extra string) *testSTS {
	t.Helper()
	return startSTS(t, stsOptions{
		dir:    dir,
		policy: tracingPolicy,
		tokens: "tokens: {default_ttl: 5m, max_ttl: 1h}\ntracing:\n  otlp_endpoint: " + rcv.URL + "\n" + extra,
	})
}

// flushTraces exports everything recorded so far (the graceful-shutdown path).
func flushTraces(t *testing.T, ts *testSTS) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ts.srv.ShutdownTracing(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestTracingExchange: a real exchange over HTTPS, traced to a real OTLP/HTTP
// receiver over TLS with a private CA and credentials from headers_file.
func TestTracingExchange(t *testing.T) {
	rcv := testotlp.NewTLS(t)
	dir := t.TempDir()
	rcv.WriteCA(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "otlp-headers"), []byte("Authorization: Bearer collector-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ts := startTracedSTS(t, rcv, dir, "  sample_ratio: 1\n  service_name: sts-test\n  ca_file: otlp-ca.pem\n  headers_file: otlp-headers\n")

	subject := ts.a.Token(t, payments)
	ok := ts.post(t, ts.form(subject))
	if ok.status != 200 {
		t.Fatalf("exchange: %d %s", ok.status, ok.raw)
	}
	minted := ok.body["access_token"].(string)
	jti := decodeSegment(t, minted, 1)["jti"].(string)

	actorToken := ts.a.Token(t, "system:serviceaccount:gateway:edge")
	delegated := ts.post(t, actorForm(ts.form(ts.a.Token(t, payments)), actorToken))
	if delegated.status != 200 {
		t.Fatalf("delegated exchange: %d %s", delegated.status, delegated.raw)
	}

	refused := ts.post(t, ts.form("not-a-jwt-but-a-secret"))
	assertRefused(t, refused, 400, codeInvalidRequest)
	if r := ts.do(t, http.MethodGet, "/jwks", "", "", nil); r.status != 200 {
		t.Fatalf("jwks: %d", r.status)
	}
	if r := ts.do(t, http.MethodGet, "/healthz", "", "", nil); r.status != 200 {
		t.Fatalf("healthz: %d", r.status)
	}
	flushTraces(t, ts)

	for _, h := range rcv.Headers() {
		if got := h.Get("Authorization"); got != "Bearer collector-secret" {
			t.Fatalf("export sent Authorization %q", got)
		}
	}
	spans := rcv.Spans()
	if len(spans) == 0 {
		t.Fatal("no spans exported")
	}
	servers := rcv.Named("POST /token")
	if len(servers) != 3 {
		t.Fatalf("%d POST /token spans, want 3 (spans: %v)", len(servers), spanNames(spans))
	}
	if n := len(rcv.Named("GET /jwks")); n != 1 {
		t.Fatalf("%d GET /jwks spans, want 1", n)
	}
	for _, s := range spans {
		if s.Resource["service.name"] != "sts-test" || s.Scope != tracerName {
			t.Fatalf("span %s: resource %v scope %q", s.GetName(), s.Resource, s.Scope)
		}
		if strings.Contains(s.GetName(), "healthz") {
			t.Fatalf("probe traced: %s", s.GetName())
		}
	}

	// The successful exchange: server span, then one child per step.
	var server testotlp.Span
	for _, s := range servers {
		if v, _ := s.Attr("safeconduct.jti"); v == jti {
			server = s
		}
	}
	if server.Span == nil {
		t.Fatalf("no server span carries jti %s", jti)
	}
	wantAttrs(t, server, map[string]string{
		"http.request.method":              "POST",
		"http.route":                       "/token",
		"http.response.status_code":        "200",
		"url.scheme":                       "https",
		"safeconduct.outcome":              "issued",
		"safeconduct.upstream":             "cluster-a",
		"safeconduct.rule":                 "payments-to-ledger",
		"safeconduct.subject_token.sha256": tokenHash(subject),
	})
	if server.GetKind() != tracepb.Span_SPAN_KIND_SERVER || server.ParentID() != "" {
		t.Fatalf("server span kind %v parent %q", server.GetKind(), server.ParentID())
	}
	children := childrenOf(spans, server)
	if got := spanNames(children); !slices.Equal(got, []string{spanAttestSubject, spanPolicy, spanAdmit, spanMint}) {
		t.Fatalf("children of the /token span: %v", got)
	}
	for _, c := range children {
		if c.GetKind() != tracepb.Span_SPAN_KIND_INTERNAL || c.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR {
			t.Fatalf("%s: kind %v status %v", c.GetName(), c.GetKind(), c.GetStatus())
		}
		if c.GetStartTimeUnixNano() < server.GetStartTimeUnixNano() || c.GetEndTimeUnixNano() > server.GetEndTimeUnixNano() {
			t.Fatalf("%s is not within the server span", c.GetName())
		}
	}
	wantAttrs(t, children[0], map[string]string{"safeconduct.upstream": "cluster-a", "safeconduct.outcome": "ok"})
	wantAttrs(t, children[1], map[string]string{"safeconduct.rule": "payments-to-ledger", "safeconduct.outcome": "allow"})
	wantAttrs(t, children[2], map[string]string{"safeconduct.outcome": "admitted"})
	wantAttrs(t, children[3], map[string]string{"safeconduct.jti": jti, "safeconduct.outcome": "issued"})

	// The delegated exchange traces the actor too.
	var delegatedServer testotlp.Span
	for _, s := range servers {
		if v, _ := s.Attr("safeconduct.rule"); v == "gateway-for-payments" {
			delegatedServer = s
		}
	}
	if delegatedServer.Span == nil {
		t.Fatal("no server span for the delegated exchange")
	}
	dc := childrenOf(spans, delegatedServer)
	if got := spanNames(dc); !slices.Equal(got, []string{spanAttestSubject, spanAttestActor, spanPolicy, spanAdmit, spanMint}) {
		t.Fatalf("children of the delegated /token span: %v", got)
	}
	wantAttrs(t, dc[1], map[string]string{"safeconduct.upstream": "cluster-a", "safeconduct.outcome": "ok"})

	// The refusal: the attest step failed, nothing after it ran.
	var refusedServer testotlp.Span
	for _, s := range servers {
		if v, _ := s.Attr("safeconduct.outcome"); v == "refused" {
			refusedServer = s
		}
	}
	if refusedServer.Span == nil {
		t.Fatal("no server span for the refused exchange")
	}
	wantAttrs(t, refusedServer, map[string]string{"http.response.status_code": "400", "safeconduct.error": codeInvalidRequest})
	if refusedServer.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR {
		t.Fatal("a 4xx marks the server span as an error")
	}
	rc := childrenOf(spans, refusedServer)
	if len(rc) != 1 || rc[0].GetName() != spanAttestSubject || rc[0].GetStatus().GetCode() != tracepb.Status_STATUS_CODE_ERROR {
		t.Fatalf("children of the refused exchange: %v", spanNames(rc))
	}
	wantAttrs(t, rc[0], map[string]string{"safeconduct.outcome": "rejected", "safeconduct.error": codeInvalidRequest})

	// Nothing secret and nothing client-identifying left the process: no token (nor
	// any part of one), no query, no client address.
	secrets := []string{subject, minted, actorToken, delegated.body["access_token"].(string), "not-a-jwt-but-a-secret", "collector-secret"}
	for _, tok := range secrets[:4] {
		secrets = append(secrets, strings.Split(tok, ".")...)
	}
	for _, body := range rcv.Bodies() {
		for _, sec := range secrets {
			if strings.Contains(string(body), sec) {
				t.Fatalf("an export holds %.20q...", sec)
			}
		}
	}
	for _, s := range spans {
		for k, v := range s.Attrs() {
			if k == "client.address" || k == "network.peer.address" || strings.HasPrefix(k, "url.") && k != "url.scheme" || strings.Contains(v, "127.0.0.1") {
				t.Fatalf("span %s has %s=%q", s.GetName(), k, v)
			}
			for _, sec := range secrets {
				if strings.Contains(v, sec) {
					t.Fatalf("span %s attribute %s holds a secret", s.GetName(), k)
				}
			}
		}
	}
}

// TestTracingHonoursTraceparent: with sample_ratio 0 and follow_caller_sampling,
// only a caller's sampled traceparent gets a trace, and the STS joins the
// caller's trace. Plain HTTP to the collector, as insecure: true allows.
func TestTracingHonoursTraceparent(t *testing.T) {
	rcv := testotlp.NewHTTP(t)
	ts := startTracedSTS(t, rcv, "", "  sample_ratio: 0\n  insecure: true\n  follow_caller_sampling: true\n")
	const (
		sampledTrace   = "4bf92f3577b34da6a3ce929d0e0e4736"
		unsampledTrace = "0af7651916cd43dd8448eb211c80319c"
		callerSpan     = "00f067aa0ba902b7"
	)
	send := func(traceparent string) {
		t.Helper()
		r := ts.do(t, http.MethodPost, "/token", "application/x-www-form-urlencoded", ts.form(ts.a.Token(t, payments)).Encode(), func(r *http.Request) {
			if traceparent != "" {
				r.Header.Set("traceparent", traceparent)
			}
		})
		if r.status != 200 {
			t.Fatalf("exchange: %d %s", r.status, r.raw)
		}
	}
	send("")                                                         // ratio 0: not sampled
	send("00-" + unsampledTrace + "-" + callerSpan + "-00")          // caller did not sample
	send("00-" + sampledTrace + "-" + callerSpan + "-01")            // caller sampled
	send("00-" + strings.Repeat("0", 32) + "-" + callerSpan + "-01") // invalid: a new root, not sampled
	flushTraces(t, ts)

	spans := rcv.Spans()
	if len(spans) != 5 {
		t.Fatalf("%d spans, want the sampled request's 5: %v", len(spans), spanNames(spans))
	}
	for _, s := range spans {
		if s.TraceID() != sampledTrace {
			t.Fatalf("span %s in trace %s, want the caller's %s", s.GetName(), s.TraceID(), sampledTrace)
		}
	}
	server := rcv.Named("POST /token")
	if len(server) != 1 || server[0].ParentID() != callerSpan {
		t.Fatalf("server span parent %q, want the caller's span %s", server[0].ParentID(), callerSpan)
	}
	if n := len(childrenOf(spans, server[0])); n != 4 {
		t.Fatalf("%d child spans, want 4", n)
	}
}

// TestTracingCallerCannotForceSampling: by default a caller's sampled flag does
// not make the STS record its requests: at ratio 0 nothing is exported.
func TestTracingCallerCannotForceSampling(t *testing.T) {
	rcv := testotlp.NewHTTP(t)
	ts := startTracedSTS(t, rcv, "", "  sample_ratio: 0\n  insecure: true\n")
	for range 3 {
		r := ts.do(t, http.MethodPost, "/token", "application/x-www-form-urlencoded", ts.form(ts.a.Token(t, payments)).Encode(), func(r *http.Request) {
			r.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		})
		if r.status != 200 {
			t.Fatalf("exchange: %d %s", r.status, r.raw)
		}
	}
	flushTraces(t, ts)
	if spans := rcv.Spans(); len(spans) != 0 {
		t.Fatalf("a caller forced %d spans: %v", len(spans), spanNames(spans))
	}
}

// TestTracingOffCostsNothing: without a tracing section the handler is the bare
// mux, and the pipeline's trace calls allocate nothing.
func TestTracingOffCostsNothing(t *testing.T) {
	ts := startSTS(t, stsOptions{})
	if mux, ok := ts.srv.handler.(*http.ServeMux); !ok || mux != ts.srv.mux {
		t.Fatalf("handler is %T, want the bare mux (given the request id)", ts.srv.handler)
	}
	if err := ts.srv.ShutdownTracing(context.Background()); err != nil {
		t.Fatal(err)
	}
	s, ctx, ev := ts.srv, context.Background(), &exchangeEvent{outcome: "issued", jti: "j"}
	allocs := testing.AllocsPerRun(100, func() {
		st := s.tracing.step(ctx, spanAttestSubject)
		st.attested(nil, nil)
		st = s.tracing.step(ctx, spanPolicy)
		st.decided("rule", 0)
		st = s.tracing.step(ctx, spanAdmit)
		st.admitted(nil)
		st = s.tracing.step(ctx, spanMint)
		st.minted("jti", nil)
		s.tracing.exchange(ctx, ev)
	})
	if allocs != 0 {
		t.Fatalf("tracing off allocates %v per exchange", allocs)
	}
}

// TestTracingUnsampledStepsSkipped: with tracing on, a request that is not
// sampled starts no step spans.
func TestTracingUnsampledStepsSkipped(t *testing.T) {
	rcv := testotlp.NewHTTP(t)
	ts := startTracedSTS(t, rcv, "", "  sample_ratio: 0\n  insecure: true\n")
	ctx, span := ts.srv.tracing.tracer.Start(context.Background(), "unsampled")
	defer span.End()
	if span.IsRecording() {
		t.Fatal("ratio 0 sampled a root span")
	}
	if st := ts.srv.tracing.step(ctx, spanMint); st.span != nil {
		t.Fatal("a step span under an unsampled request")
	}
}

// BenchmarkExchangeTraced is BenchmarkExchange (ES256 upstream) with tracing on:
// a request not sampled (sample_ratio 0: the middleware's span only) and a sampled
// one (server span, four step spans, batch export to a local receiver).
func BenchmarkExchangeTraced(b *testing.B) {
	for _, bc := range []struct{ name, ratio string }{{"unsampled", "0"}, {"sampled", "1"}} {
		b.Run(bc.name, func(b *testing.B) {
			rcv := testotlp.NewHTTP(b)
			ts := startTracedSTS(b, rcv, "", "  sample_ratio: "+bc.ratio+"\n  insecure: true\n")
			ts.srv.auditLog = slog.New(slog.NewJSONHandler(io.Discard, nil))
			claims := ts.a.Claims(payments)
			claims["exp"] = time.Now().Add(time.Hour).Unix()
			body := ts.form(ts.a.Sign(b, claims)).Encode()
			h := ts.srv.Handler()
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != 200 {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
		})
	}
}

func wantAttrs(t *testing.T, s testotlp.Span, want map[string]string) {
	t.Helper()
	got := s.Attrs()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("span %s: %s = %q, want %q (all: %v)", s.GetName(), k, got[k], v, got)
		}
	}
}

// childrenOf returns the direct children of parent, by start time.
func childrenOf(spans []testotlp.Span, parent testotlp.Span) []testotlp.Span {
	var out []testotlp.Span
	for _, s := range spans {
		if s.ParentID() == parent.SpanID() && s.TraceID() == parent.TraceID() {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b testotlp.Span) int {
		return cmp.Compare(a.GetStartTimeUnixNano(), b.GetStartTimeUnixNano())
	})
	return out
}

func spanNames(spans []testotlp.Span) []string {
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = s.GetName()
	}
	return out
}
