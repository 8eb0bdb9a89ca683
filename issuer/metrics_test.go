package issuer

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// metricValue returns the value of the sample named exactly series (name with
// labels, as the text exposition writes it) in the /metrics text.
func metricValue(t *testing.T, text, series string) (float64, bool) {
	t.Helper()
	for line := range strings.SplitSeq(text, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", line, err)
			}
			return v, true
		}
	}
	return 0, false
}

func (ts *testSTS) metrics(t *testing.T) string {
	t.Helper()
	w := httptest.NewRecorder()
	ts.srv.MetricsHandler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if w.Code != 200 {
		t.Fatalf("metrics %d", w.Code)
	}
	return w.Body.String()
}

func TestMetricsStoreUpstreamsKeyAge(t *testing.T) {
	ts := startSTS(t, stsOptions{})
	if r := ts.post(t, ts.form(ts.b.SignRS256(t, ts.b.Claims(payments)))); r.status != 200 {
		t.Fatalf("cluster-b exchange: %d %s", r.status, r.raw)
	}
	text := ts.metrics(t)

	if v, ok := metricValue(t, text, `safeconduct_revocation_store_seconds_count{op="admit"}`); !ok || v != 1 {
		t.Errorf("store admit count %v (present %v), want 1", v, ok)
	}
	if v, ok := metricValue(t, text, `safeconduct_revocation_store_errors_total{op="admit"}`); ok && v != 0 {
		t.Errorf("store admit errors %v, want 0", v)
	}

	if v, ok := metricValue(t, text, `safeconduct_upstream_key_fetches_total{upstream="cluster-b"}`); !ok || v < 1 {
		t.Errorf("cluster-b key fetches %v (present %v), want >= 1", v, ok)
	}
	if v, ok := metricValue(t, text, `safeconduct_upstream_key_fetch_failures_total{upstream="cluster-b"}`); !ok || v != 0 {
		t.Errorf("cluster-b key fetch failures %v (present %v), want 0", v, ok)
	}
	if v, ok := metricValue(t, text, `safeconduct_upstream_keys{upstream="cluster-b"}`); !ok || v < 1 {
		t.Errorf("cluster-b keys %v (present %v), want >= 1", v, ok)
	}
	// cluster-a reads a JWKS file: listed, no fetches.
	if v, ok := metricValue(t, text, `safeconduct_upstream_key_fetches_total{upstream="cluster-a"}`); !ok || v != 0 {
		t.Errorf("cluster-a key fetches %v (present %v), want 0", v, ok)
	}

	for _, state := range []string{"active", "published"} {
		v, ok := metricValue(t, text, fmt.Sprintf(`safeconduct_signing_key_age_seconds{state=%q}`, state))
		if !ok || v < 0 || v > 3600 {
			t.Errorf("key age %s %v (present %v), want a fresh key's age", state, v, ok)
		}
	}
	if !strings.Contains(text, "safeconduct_feed_events_sent_total 0") {
		t.Error("metrics lack safeconduct_feed_events_sent_total")
	}
}

func TestMetricsStoreErrors(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens here now
	ts := startSTS(t, stsOptions{revocation: fmt.Sprintf("revocation:\n  backend: redis\n  redis: {addrs: [%q]}\n", addr)})
	if r := ts.post(t, ts.form(ts.a.Token(t, payments))); r.status != 503 {
		t.Fatalf("store down: %d %s", r.status, r.raw)
	}
	text := ts.metrics(t)
	if v, ok := metricValue(t, text, `safeconduct_revocation_store_errors_total{op="admit"}`); !ok || v != 1 {
		t.Errorf("store admit errors %v (present %v), want 1", v, ok)
	}
	if v, ok := metricValue(t, text, `safeconduct_revocation_store_seconds_count{op="admit"}`); !ok || v != 1 {
		t.Errorf("store admit count %v (present %v), want 1", v, ok)
	}
}
