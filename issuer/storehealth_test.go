package issuer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRevocationStoreLost: a revocation store that lost its data (here the
// embedded file truncated to zero length while its identity file remembers it)
// makes /readyz and /token answer 503 and the lost metric read 1, instead of
// serving an empty revocation list.
func TestRevocationStoreLost(t *testing.T) {
	ts := startSTS(t, stsOptions{})
	if r := ts.post(t, ts.form(ts.a.Token(t, payments))); r.status != 200 {
		t.Fatalf("exchange: %d %s", r.status, r.raw)
	}
	healthy := ts.metrics(t)
	ts.hs.Close()
	_ = ts.srv.Close()
	if err := os.Truncate(filepath.Join(ts.dir, "data/revocation.db"), 0); err != nil {
		t.Fatal(err)
	}

	ts = startSTS(t, stsOptions{dir: ts.dir})
	if r := ts.do(t, "GET", "/readyz", "", "", nil); r.status != 503 || !strings.Contains(r.raw, "accept-loss") {
		t.Fatalf("readyz with the store lost: %d %s", r.status, r.raw)
	}
	if r := ts.post(t, ts.form(ts.a.Token(t, payments))); r.status != 503 || r.body["access_token"] != nil {
		t.Fatalf("exchange with the store lost: %d %s", r.status, r.raw)
	}
	if m := ts.metrics(t); !strings.Contains(m, "\nsafeconduct_revocation_store_lost 1\n") {
		t.Fatalf("metrics with the store lost:\n%s", m)
	}
	if !strings.Contains(healthy, "\nsafeconduct_revocation_store_lost 0\n") || !strings.Contains(healthy, "\nsafeconduct_revocation_store_writable 1\n") {
		t.Fatalf("metrics of a healthy store:\n%s", healthy)
	}
}
