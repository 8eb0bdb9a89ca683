package hardening

import (
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestForgedBearerFloodLimitedBeforeVerification: introspection, the admin API
// and the revocation feed verify a bearer token; a flood of forged ones from one
// address is answered 429 by a per-IP bucket before any verification (and
// before any audit line), in buckets of their own: /token is still served.
func TestForgedBearerFloodLimitedBeforeVerification(t *testing.T) {
	t.Parallel()
	// The default admin limits: 50/s per IP, burst 100.
	const rate, burst = 50, 100
	e := newEnvWith(t, envOptions{limits: "{max_in_flight: 1024, shed_queue_delay: -1s}"})
	good := e.corp.Token(t, alice)
	forged := "Bearer " + good[:len(good)-8] + strings.Repeat("A", 8) // a known kid, a wrong signature
	introspect := adminCall{http.MethodPost, "/introspect", "application/x-www-form-urlencoded", url.Values{"token": {"x"}}.Encode()}

	const workers, perWorker = 8, 75
	var mu sync.Mutex
	codes := map[int]int{}
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			h := http.Header{"Content-Type": {introspect.contentType}, "Authorization": {forged}}
			for range perWorker {
				r, err := e.send(introspect.method, introspect.path, h, introspect.body)
				mu.Lock()
				if err != nil {
					codes[0]++
				} else {
					codes[r.status]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	verified := codes[http.StatusUnauthorized]
	t.Logf("%d forged introspections in %v: %v", workers*perWorker, elapsed.Round(time.Millisecond), codes)
	// The bucket lets burst through, then rate per second (slack for rounding).
	if most := burst + int(rate*elapsed.Seconds()) + 5; verified > most || codes[http.StatusTooManyRequests] == 0 {
		t.Fatalf("%d forged tokens verified in %v (at most %d), %d refused with 429", verified, elapsed, most, codes[http.StatusTooManyRequests])
	}
	if audited := strings.Count(e.log.String(), `"outcome":"unauthenticated"`); audited > verified {
		t.Fatalf("%d unauthenticated audit lines for %d verified requests", audited, verified)
	}

	// The other endpoints that verify a caller are limited alike (the bucket
	// refills at 50/s meanwhile: a few may pass before the 429).
	for _, c := range []adminCall{
		{http.MethodGet, "/revocations", "", ""},
		{http.MethodGet, "/admin/v1/revocations", "", ""},
		{http.MethodPost, "/admin/v1/revocations", "application/json", `{"selector":"sub=x","mode":"revoke"}`},
	} {
		r := e.call(t, c, forged)
		for i := 0; i < 2*burst && r.status == http.StatusUnauthorized; i++ {
			r = e.call(t, c, forged)
		}
		e.wantError(t, r, http.StatusTooManyRequests, "temporarily_unavailable", forged)
		if r.header.Get("Retry-After") == "" {
			t.Fatalf("%s: 429 without Retry-After", c)
		}
	}
	// /token has buckets of its own.
	e.wantIssued(t, e.exchange(t, e.a.Token(t, payments), ""))
}
