package hardening

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/testissuer"
)

// Key fetch bounds of package attest/oidc (DefaultFetchTimeout,
// DefaultRefreshMinInterval, DefaultMaxResponseBytes), which the configuration
// file does not override.
const (
	fetchTimeout       = 5 * time.Second
	refreshMinInterval = 30 * time.Second
	maxJWKSBytes       = 1 << 20
	// fetchMargin is the slack allowed past fetchTimeout on a shared, loaded
	// machine: the timing is checked loosely, it is never the main assertion.
	fetchMargin = 4 * time.Second
)

// TestUnknownKidStorm: 200 concurrent tokens, each with a fresh unknown kid, for an
// upstream whose keys have never been fetched. The misses share one fetch and the
// refresh interval holds: at most one discovery and one JWKS request per
// refreshMinInterval. All are refused; then the upstream still serves.
func TestUnknownKidStorm(t *testing.T) {
	t.Parallel()
	storm := testissuer.Serve(t)
	e := newEnv(t, upstreamSpec{name: "storm", issuer: storm.URL, served: storm})
	att := newAttacker(t)

	const n = 200
	tokens := make([]string, n)
	for i := range tokens {
		tokens[i] = compact(t, obj("alg", "ES256", "kid", randomKid(t), "typ", "JWT"), mustJSON(storm.Claims(payments)), "ES256", att.EC)
	}
	results := make([]response, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	began := time.Now()
	for i := range n {
		wg.Go(func() {
			<-start
			results[i], errs[i] = e.send(http.MethodPost, "/token", formHeader(), exchangeForm(tokens[i], "").Encode())
		})
	}
	close(start)
	wg.Wait()
	took := time.Since(began)
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		e.wantError(t, results[i], http.StatusBadRequest, "invalid_request", tokens[i])
	}
	// One discovery and one JWKS request per refresh interval begun.
	bound := int64(2 * (1 + int(took/refreshMinInterval)))
	if hits := storm.Hits(); hits > bound {
		t.Fatalf("%d concurrent unknown kids caused %d discovery/JWKS requests in %v, want at most %d", n, hits, took.Round(time.Millisecond), bound)
	} else {
		t.Logf("%d unknown kids in %v: %d discovery/JWKS requests", n, took.Round(time.Millisecond), hits)
	}
	before := storm.Hits()
	e.wantIssued(t, e.exchange(t, storm.Token(t, payments), ""))
	e.wantIssued(t, e.exchange(t, e.b.Token(t, payments), ""))
	if storm.Hits() != before {
		t.Fatalf("a valid token after the storm fetched keys again (%d -> %d requests)", before, storm.Hits())
	}
}

// hostile is an upstream whose key endpoint misbehaves. Its JWKS, were it
// accepted, holds the key its tokens are signed with: only the fetch bounds and
// the key set checks stand between them and a minted token.
type hostile struct {
	name string
	iss  *testissuer.Issuer
	srv  *counter
	// decoy counts requests to where the hostile endpoint points (a redirect).
	decoy *counter
	// slow marks the endpoint that answers after the fetch deadline.
	slow bool
}

// upstreamMarker is text in hostile bodies that must never reach a client.
const upstreamMarker = "UPSTREAM-BODY-MARKER-7f3a"

// TestHostileJWKS: a slow, huge, redirecting, failing or unacceptable key set
// makes its own upstream's tokens fail closed (503, within the fetch deadline plus
// a margin) while a healthy upstream keeps working, even during the slow fetch.
func TestHostileJWKS(t *testing.T) {
	t.Parallel()
	var hs []*hostile
	add := func(name string, jwks func(iss *testissuer.Issuer) http.HandlerFunc) *hostile {
		h := &hostile{name: name, iss: testissuer.New(t, "https://"+name+".example")}
		h.srv = newCounter(t, jwks(h.iss))
		hs = append(hs, h)
		return h
	}
	validJWKS := func(iss *testissuer.Issuer) []byte { return iss.JWKS() }
	// padded is iss's valid JWKS with a pad member making it size bytes long.
	padded := func(iss *testissuer.Issuer, size int) []byte {
		head := strings.TrimSuffix(string(validJWKS(iss)), "}") + `,"pad":"`
		return []byte(head + strings.Repeat("A", size-len(head)-2) + `"}`)
	}

	add("slow", func(iss *testissuer.Issuer) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(fetchTimeout + 3*time.Second):
			}
			_, _ = w.Write(validJWKS(iss))
		}
	}).slow = true
	add("huge-streamed", func(iss *testissuer.Issuer) http.HandlerFunc {
		body := padded(iss, 2*maxJWKSBytes)
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			for off := 0; off < len(body); off += 32 << 10 {
				if _, err := w.Write(body[off:min(off+32<<10, len(body))]); err != nil {
					return
				}
				w.(http.Flusher).Flush() // chunked: no Content-Length to refuse up front
			}
		}
	})
	add("huge-declared", func(iss *testissuer.Issuer) http.HandlerFunc {
		body := padded(iss, maxJWKSBytes+1)
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			_, _ = w.Write(body)
		}
	})
	var redirectTarget *counter
	redirect := add("redirect", func(iss *testissuer.Issuer) http.HandlerFunc {
		// The target serves the upstream's real key set: following the redirect
		// would make its tokens verify.
		redirectTarget = newCounter(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write(validJWKS(iss))
		}))
		return func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, redirectTarget.URL+"/jwks", http.StatusFound)
		}
	})
	redirect.decoy = redirectTarget
	add("server-error", func(*testissuer.Issuer) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(upstreamMarker + ": panic: runtime error at jwks.go:42"))
		}
	})
	add("not-json", func(*testissuer.Issuer) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte("<html>" + upstreamMarker + "</html>"))
		}
	})
	add("duplicate-kid", func(iss *testissuer.Issuer) http.HandlerFunc {
		var set struct {
			Keys []json.RawMessage `json:"keys"`
		}
		if err := json.Unmarshal(validJWKS(iss), &set); err != nil {
			t.Fatal(err)
		}
		// The real EC key, and another key under the same kid.
		other := publicJWK(t, &newAttacker(t).EC.PublicKey, iss.ECKid)
		body := []byte(`{"keys":[` + string(set.Keys[0]) + `,` + string(other) + `]}`)
		return func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) }
	})
	add("private-members", func(iss *testissuer.Issuer) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			var set struct {
				Keys []map[string]any `json:"keys"`
			}
			_ = json.Unmarshal(validJWKS(iss), &set)
			set.Keys[0]["d"] = b64([]byte(upstreamMarker))
			_ = json.NewEncoder(w).Encode(set)
		}
	})
	weak := add("weak-rsa", func(iss *testissuer.Issuer) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write(iss.JWKS())
		}
	})
	// The weak upstream signs with a 1024-bit RSA key, and publishes only that.
	wk, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weak.iss.RSA, weak.iss.RSAKid = wk, thumbprint(t, &wk.PublicKey)

	var specs []upstreamSpec
	for _, h := range hs {
		servers := []*httptest.Server{h.srv.Server}
		specs = append(specs, upstreamSpec{name: h.name, issuer: h.iss.URL, jwksURI: h.srv.URL + "/jwks", servers: servers})
	}
	e := newEnv(t, specs...)
	e.addSecrets(upstreamMarker, redirectTarget.URL)
	for _, h := range hs {
		e.addIssuerKeys(t, h.iss)
	}

	healthy := func(t *testing.T) {
		t.Helper()
		r := e.exchange(t, e.b.Token(t, payments), "")
		e.wantIssued(t, r)
		if r.elapsed >= fetchTimeout {
			t.Fatalf("the healthy upstream took %v: it waited for another upstream's fetch", r.elapsed)
		}
		e.wantIssued(t, e.exchange(t, e.a.Token(t, payments), ""))
	}
	for _, h := range hs {
		t.Run(h.name, func(t *testing.T) {
			t.Parallel()
			tok := h.iss.Token(t, payments)
			if h.name == "weak-rsa" {
				tok = h.iss.SignRS256(t, h.iss.Claims(payments))
			}
			type result struct {
				r   response
				err error
			}
			done := make(chan result, 1)
			go func() {
				r, err := e.send(http.MethodPost, "/token", formHeader(), exchangeForm(tok, "").Encode())
				done <- result{r, err}
			}()
			if h.slow {
				// While the slow fetch hangs, the healthy upstreams answer at once.
				waitUntil(t, fetchTimeout, func() bool { return len(h.srv.Hits()) > 0 })
				healthy(t)
			}
			res := <-done
			if res.err != nil {
				t.Fatal(res.err)
			}
			e.wantError(t, res.r, http.StatusServiceUnavailable, "temporarily_unavailable", tok)
			if res.r.header.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
			if res.r.elapsed > fetchTimeout+fetchMargin {
				t.Errorf("answered after %v, want within the fetch deadline %v (+%v margin)", res.r.elapsed, fetchTimeout, fetchMargin)
			}
			// Asked again at once: still refused, and the bad endpoint is not
			// hammered (one fetch per refresh interval).
			again := e.exchange(t, tok, "")
			e.wantError(t, again, http.StatusServiceUnavailable, "temporarily_unavailable", tok)
			if hits := h.srv.Hits(); len(hits) != 1 {
				t.Errorf("the key endpoint got %d requests, want 1: %v", len(hits), hits)
			}
			if h.decoy != nil {
				if hits := h.decoy.Hits(); len(hits) != 0 {
					t.Errorf("the redirect was followed: %v", hits)
				}
			}
			healthy(t)
		})
	}
}

// waitUntil polls cond until it holds or d has passed.
func waitUntil(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
