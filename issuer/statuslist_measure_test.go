package issuer

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/revocation"
)

// TestMeasureStatusListRevokeVisible measures how long after a revoke was
// acknowledged the STS's list shows the token INVALID, with the default ttl
// (30 s): revokes are spread over one ttl so that they fall anywhere in the
// rebuild cycle. It is a measurement, not a check: it runs only with
// SAFECONDUCT_MEASURE=1 (docs/benchmarks.md) and takes about a minute.
func TestMeasureStatusListRevokeVisible(t *testing.T) {
	if os.Getenv("SAFECONDUCT_MEASURE") != "1" {
		t.Skip("a measurement: set SAFECONDUCT_MEASURE=1")
	}
	ts := startSTS(t, stsOptions{})
	const n = 40
	type tok struct {
		jti     string
		uri     string
		idx     int
		revoked time.Time
		seen    time.Duration
	}
	var toks []*tok
	for range n {
		r := ts.post(t, ts.form(ts.a.Token(t, payments)))
		if r.status != 200 {
			t.Fatalf("exchange: %d %s", r.status, r.raw)
		}
		raw := r.body["access_token"].(string)
		uri, idx := statusRef(t, raw)
		toks = append(toks, &tok{jti: decodeSegment(t, raw, 1)["jti"].(string), uri: uri, idx: idx})
	}
	start := time.Now()
	next := 0
	for {
		now := time.Now()
		for next < n && now.Sub(start) >= time.Duration(next)*DefaultStatusListTTL/n {
			if _, err := ts.srv.core.store.Create(context.Background(), revocation.Entry{Kind: revocation.KindRevoke, Selector: "jti=" + toks[next].jti, Reason: "measure", Actor: "test"}); err != nil {
				t.Fatal(err)
			}
			toks[next].revoked = time.Now()
			next++
		}
		pending := 0
		for _, k := range toks {
			if k.revoked.IsZero() || k.seen != 0 {
				if k.seen == 0 {
					pending++
				}
				continue
			}
			if fetchStatus(t, ts, k.uri, k.idx) == revocation.StatusInvalid {
				k.seen = time.Since(k.revoked)
			} else {
				pending++
			}
		}
		if pending == 0 {
			break
		}
		if time.Since(start) > 3*DefaultStatusListTTL {
			t.Fatalf("%d revokes not visible after %s", pending, 3*DefaultStatusListTTL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var d []time.Duration
	for _, k := range toks {
		d = append(d, k.seen)
	}
	slices.Sort(d)
	t.Logf("revoke -> INVALID in the served list, ttl %s, %d revokes: p50 %s, p99 %s, max %s",
		DefaultStatusListTTL, n, d[n/2].Round(time.Millisecond), d[n*99/100].Round(time.Millisecond), d[n-1].Round(time.Millisecond))
}
