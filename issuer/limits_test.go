package issuer_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/safeconduct/safeconduct/internal/testissuer"
	"github.com/safeconduct/safeconduct/issuer"
)

func TestTokenRateLimitedEndToEnd(t *testing.T) {
	ts := startSTS(t, stsOptions{tokens: "tokens: {default_ttl: 5m, max_ttl: 1h}\nlimits: {per_ip_rps: 0.01, burst: 2}\n"})
	for i := range 2 {
		if r := ts.post(t, ts.form(ts.a.Token(t, payments))); r.status != 200 {
			t.Fatalf("request %d: %d %s", i, r.status, r.raw)
		}
	}
	r := ts.post(t, ts.form("not-even-a-jwt"))
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" || r.body["error"] != issuer.CodeTemporarilyUnavailable {
		t.Fatalf("third request: %d %v %s", r.status, r.header, r.raw)
	}
	metricsText := ts.do(t, http.MethodGet, "/metrics", "", "", nil).raw
	for _, want := range []string{
		`safeconduct_rate_limited_total{reason="per_ip"} 1`,
		`safeconduct_http_requests_total{code="429",endpoint="token"} 1`,
	} {
		if !strings.Contains(metricsText, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(ts.audit.String(), "not-even-a-jwt") || strings.Count(ts.audit.String(), `"msg":"exchange"`) != 2 {
		t.Fatalf("a limited request reached the exchange:\n%s", ts.audit.String())
	}
}

func TestPerWorkloadAndClientLimits(t *testing.T) {
	ci := testissuer.New(t, "ci-runner")
	ts := startSTS(t, stsOptions{
		extra: "limits: {per_workload_rps: 0.01, workload_burst: 2, per_client_rps: 0.01, client_burst: 1}\n" +
			"clients:\n  - {id: ci-runner, jwks_file: ci.jwks}\n",
		files: map[string]string{"ci.jwks": string(ci.JWKS())},
	})
	for i := range 2 {
		if r := ts.post(t, ts.form(ts.a.Token(t, payments))); r.status != 200 {
			t.Fatalf("exchange %d: %d %s", i, r.status, r.raw)
		}
	}
	r := ts.post(t, ts.form(ts.a.Token(t, payments)))
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" || r.body["error"] != issuer.CodeTemporarilyUnavailable {
		t.Fatalf("third exchange of one workload: %d %v %s", r.status, r.header, r.raw)
	}
	if !strings.Contains(ts.audit.String(), "rate limited: per workload") {
		t.Fatal("audit does not record the workload limit")
	}
	// The same subject from another upstream is another workload.
	if r := ts.post(t, ts.form(ts.b.Token(t, payments))); r.status != 200 {
		t.Fatalf("other upstream: %d %s", r.status, r.raw)
	}
	if r := ts.post(t, ts.form(ts.a.Token(t, "system:serviceaccount:payments:other"))); r.status != 200 {
		t.Fatalf("other workload: %d %s", r.status, r.raw)
	}

	// An authenticated client has a bucket of one.
	other := "system:serviceaccount:payments:c"
	if r := ts.post(t, withAssertion(ts.form(ts.a.Token(t, other)), assertion(t, ts, ci))); r.status != 200 {
		t.Fatalf("client, first: %d %s", r.status, r.raw)
	}
	r = ts.post(t, withAssertion(ts.form(ts.a.Token(t, other+"2")), assertion(t, ts, ci)))
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("client, second: %d %s", r.status, r.raw)
	}
	metricsText := ts.do(t, http.MethodGet, "/metrics", "", "", nil).raw
	for _, want := range []string{
		`safeconduct_rate_limited_total{reason="per_workload"} 1`,
		`safeconduct_rate_limited_total{reason="per_client"} 1`,
	} {
		if !strings.Contains(metricsText, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
