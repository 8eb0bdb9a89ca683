package spiffe_test

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/attest/spiffe"
)

// bundleServer is a SPIFFE bundle endpoint on a local TLS server: it serves body
// (or status) at /bundle, with a web PKI certificate (httptest's) or an
// X.509-SVID, and counts requests. Every response closes its connection, so each
// fetch runs a TLS handshake.
type bundleServer struct {
	srv  *httptest.Server
	hits atomic.Int64

	mu     sync.Mutex
	body   []byte
	status int              // 0: 200
	svid   *tls.Certificate // nil: httptest's web PKI certificate
	hang   chan struct{}    // non-nil: requests wait for it to close
}

func newBundleServer(t *testing.T, body []byte, svid *tls.Certificate) *bundleServer {
	bs := &bundleServer{body: body, svid: svid}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bs.hits.Add(1)
		bs.mu.Lock()
		body, status, hang := bs.body, bs.status, bs.hang
		bs.mu.Unlock()
		if hang != nil {
			select {
			case <-hang:
			case <-r.Context().Done():
			}
			return
		}
		w.Header().Set("Connection", "close")
		switch {
		case r.URL.Path != "/bundle":
			http.NotFound(w, r)
		case status == http.StatusFound:
			http.Redirect(w, r, "/bundle", status)
		case status != 0:
			http.Error(w, "upstream body that must not reach errors", status)
		default:
			w.Header().Set("Content-Type", "application/json")
			w.Write(body)
		}
	})
	bs.srv = httptest.NewUnstartedServer(h)
	if svid != nil {
		bs.srv.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			bs.mu.Lock()
			defer bs.mu.Unlock()
			return &tls.Config{Certificates: []tls.Certificate{*bs.svid}}, nil
		}}
	}
	bs.srv.StartTLS()
	t.Cleanup(bs.srv.Close)
	return bs
}

func (bs *bundleServer) set(f func(bs *bundleServer)) {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	f(bs)
}

// serverSVID issues an X.509-SVID for a bundle endpoint server.
func serverSVID(t *testing.T, ca *testCA, id string) *tls.Certificate {
	cert, key := ca.issue(t, svidTemplate([]string{id}, func(c *x509.Certificate) {
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}))
	return &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

// webVerifier is trust domain A's Verifier over bs with the https_web profile.
func webVerifier(t *testing.T, bs *bundleServer, clock *fakeClock, mods ...func(*spiffe.EndpointConfig)) *spiffe.Verifier {
	t.Helper()
	ep := &spiffe.EndpointConfig{URL: bs.srv.URL + "/bundle", Profile: spiffe.ProfileWeb, FetchTimeout: 2 * time.Second}
	for _, m := range mods {
		m(ep)
	}
	v, err := spiffe.New(t.Context(), spiffe.Config{
		Name: "fed-a", TrustDomain: tdA, Audiences: []string{aud},
		BundleEndpoint: ep, HTTPClient: bs.srv.Client(), Now: clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// verifyKid verifies a JWT-SVID of A signed with key under kid, now.
func verifyKid(t *testing.T, v *spiffe.Verifier, clock *fakeClock, kid string, key crypto.Signer) error {
	t.Helper()
	_, err := v.Verify(t.Context(), signRaw(t, "ES256", hdr("ES256", kid), claims(t, clock.Now()), key), attest.TypeJWT)
	return err
}

func bundleWith(t *testing.T, keys map[string]crypto.PublicKey) []byte {
	return bundleDoc(t, tdA, []*x509.Certificate{testCAs()[tdA].cert}, keys)
}

func TestEndpointLazyFetchAndRotation(t *testing.T) {
	k := testKeys()
	clock := newClock()
	bs := newBundleServer(t, bundleWith(t, map[string]crypto.PublicKey{"a1": k.a1.Public()}), nil)
	v := webVerifier(t, bs, clock)
	if n := bs.hits.Load(); n != 0 {
		t.Fatalf("New fetched: %d requests", n)
	}
	if err := verifyKid(t, v, clock, "a1", k.a1); err != nil {
		t.Fatal(err)
	}
	if n := bs.hits.Load(); n != 1 {
		t.Fatalf("%d requests after first use", n)
	}

	// The trust domain publishes a2: a token under it triggers one refresh, at most
	// once per MinRefreshInterval.
	bs.set(func(bs *bundleServer) {
		bs.body = bundleWith(t, map[string]crypto.PublicKey{"a1": k.a1.Public(), "a2": k.a2.Public()})
	})
	if err := verifyKid(t, v, clock, "a2", k.a2); !errors.Is(err, attest.ErrInvalid) {
		t.Fatalf("refresh within the rate limit: %v", err)
	}
	if n := bs.hits.Load(); n != 1 {
		t.Fatalf("unknown kid refreshed within the rate limit: %d requests", n)
	}
	clock.Advance(spiffe.MinRefreshInterval)
	if err := verifyKid(t, v, clock, "a2", k.a2); err != nil {
		t.Fatalf("rotated key not picked up: %v", err)
	}

	// a1 is retired: the periodic refresh (in the background once the bundle is
	// older than the refresh interval) drops it.
	bs.set(func(bs *bundleServer) { bs.body = bundleWith(t, map[string]crypto.PublicKey{"a2": k.a2.Public()}) })
	clock.Advance(spiffe.DefaultRefreshInterval)
	if err := verifyKid(t, v, clock, "a1", k.a1); err != nil {
		t.Fatalf("bundle within max stale refused while refreshing: %v", err)
	}
	waitFor(t, "background refresh", func() bool { return v.Stats().Updates == 3 })
	if err := verifyKid(t, v, clock, "a1", k.a1); !errors.Is(err, attest.ErrInvalid) {
		t.Fatalf("retired key still trusted: %v", err)
	}
	if err := verifyKid(t, v, clock, "a2", k.a2); err != nil {
		t.Fatal(err)
	}
	if st := v.Stats(); st.Requests != 3 || st.Failures != 0 || st.JWTAuthorities != 1 || st.X509Authorities != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// The bundle's refresh hint sets the refresh interval when none is configured,
// bounded below by MinRefreshInterval.
func TestEndpointRefreshHint(t *testing.T) {
	k := testKeys()
	clock := newClock()
	hinted := func(h time.Duration) []byte {
		return bundleDoc(t, tdA, nil, map[string]crypto.PublicKey{"a1": k.a1.Public()},
			func(b *spiffebundle.Bundle) { b.SetRefreshHint(h) })
	}
	bs := newBundleServer(t, hinted(time.Second), nil)
	v := webVerifier(t, bs, clock)
	if err := verifyKid(t, v, clock, "a1", k.a1); err != nil {
		t.Fatal(err)
	}
	clock.Advance(spiffe.MinRefreshInterval - time.Second)
	if err := verifyKid(t, v, clock, "a1", k.a1); err != nil || bs.hits.Load() != 1 {
		t.Fatalf("refreshed before the lower bound: %v, %d requests", err, bs.hits.Load())
	}
	clock.Advance(time.Second)
	if err := verifyKid(t, v, clock, "a1", k.a1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "hinted refresh", func() bool { return bs.hits.Load() == 2 })
}

func TestEndpointStaleness(t *testing.T) {
	k := testKeys()
	for _, fault := range []string{"5xx", "unreachable", "timeout"} {
		t.Run(fault, func(t *testing.T) {
			clock := newClock()
			bs := newBundleServer(t, bundleWith(t, map[string]crypto.PublicKey{"a1": k.a1.Public()}), nil)
			v := webVerifier(t, bs, clock, func(ep *spiffe.EndpointConfig) {
				ep.MaxStale = 20 * time.Minute
				ep.FetchTimeout = 300 * time.Millisecond
			})
			if err := verifyKid(t, v, clock, "a1", k.a1); err != nil {
				t.Fatal(err)
			}
			start := clock.Now()
			switch fault {
			case "5xx":
				bs.set(func(bs *bundleServer) { bs.status = http.StatusServiceUnavailable })
			case "unreachable":
				bs.srv.Close()
			case "timeout":
				release := make(chan struct{})
				bs.set(func(bs *bundleServer) { bs.hang = release })
				t.Cleanup(func() { close(release) })
			}
			// Past the refresh interval: served from the last good bundle while the
			// background refresh fails.
			clock.Advance(spiffe.DefaultRefreshInterval + time.Second)
			if err := verifyKid(t, v, clock, "a1", k.a1); err != nil {
				t.Fatalf("last good bundle refused: %v", err)
			}
			waitFor(t, "failed refresh", func() bool { return v.Stats().Failures == 1 })
			clock.Advance(start.Add(20*time.Minute - time.Second).Sub(clock.Now()))
			if err := verifyKid(t, v, clock, "a1", k.a1); err != nil {
				t.Fatalf("last good bundle refused within max stale: %v", err)
			}
			// Past MaxStale: fail closed.
			clock.Advance(time.Second)
			err := verifyKid(t, v, clock, "a1", k.a1)
			if !errors.Is(err, attest.ErrUnavailable) || !strings.Contains(err.Error(), "older than") {
				t.Fatalf("stale bundle: %v", err)
			}
			if strings.Contains(err.Error(), "must not reach") {
				t.Fatalf("upstream body in error: %v", err)
			}
			// X.509-SVIDs fail closed too.
			if _, err := v.VerifyX509(t.Context(), []*x509.Certificate{testCAs()[tdA].svid(t, "spiffe://a.example/w")}); !errors.Is(err, attest.ErrUnavailable) {
				t.Fatalf("stale bundle, X.509: %v", err)
			}
			if fault == "5xx" {
				// The endpoint recovers: the next fetch (after the rate limit) heals.
				bs.set(func(bs *bundleServer) { bs.status = 0 })
				clock.Advance(spiffe.MinRefreshInterval)
				if err := verifyKid(t, v, clock, "a1", k.a1); err != nil {
					t.Fatalf("recovered endpoint: %v", err)
				}
			}
		})
	}
}

// The STS starts while an endpoint is down: New succeeds, verification is
// unavailable until a fetch succeeds.
func TestEndpointDownAtStart(t *testing.T) {
	k := testKeys()
	clock := newClock()
	bs := newBundleServer(t, bundleWith(t, map[string]crypto.PublicKey{"a1": k.a1.Public()}), nil)
	bs.set(func(bs *bundleServer) { bs.status = http.StatusBadGateway })
	v := webVerifier(t, bs, clock)
	if err := verifyKid(t, v, clock, "a1", k.a1); !errors.Is(err, attest.ErrUnavailable) {
		t.Fatalf("got %v", err)
	}
	bs.set(func(bs *bundleServer) { bs.status = 0 })
	clock.Advance(spiffe.MinRefreshInterval)
	if err := verifyKid(t, v, clock, "a1", k.a1); err != nil {
		t.Fatal(err)
	}
}

// Without HTTPClient the system roots apply: the test server's certificate is not
// trusted.
func TestEndpointWebPKIRoots(t *testing.T) {
	k := testKeys()
	clock := newClock()
	bs := newBundleServer(t, bundleWith(t, map[string]crypto.PublicKey{"a1": k.a1.Public()}), nil)
	v, err := spiffe.New(t.Context(), spiffe.Config{
		Name: "fed-a", TrustDomain: tdA, Audiences: []string{aud}, Now: clock.Now,
		BundleEndpoint: &spiffe.EndpointConfig{URL: bs.srv.URL + "/bundle", Profile: spiffe.ProfileWeb},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := verifyKid(t, v, clock, "a1", k.a1); !errors.Is(err, attest.ErrUnavailable) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("got %v", err)
	}
}

func TestEndpointRefusesBadUpdates(t *testing.T) {
	k := testKeys()
	cas := testCAs()
	good := bundleWith(t, map[string]crypto.PublicKey{"a1": k.a1.Public()})
	jwk := func(key any, kid string) json.RawMessage {
		b, err := json.Marshal(jose.JSONWebKey{Key: key, KeyID: kid, Use: "jwt-svid"})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	keysDoc := func(keys ...json.RawMessage) []byte {
		b, err := json.Marshal(map[string]any{"keys": keys})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := map[string]struct {
		body   []byte
		status int
		want   string
	}{
		"no keys":              {body: []byte(`{"keys":[]}`), want: "no authorities"},
		"keys missing":         {body: []byte(`{"spiffe_sequence":2}`), want: "no authorities"},
		"not JSON":             {body: []byte(`<html>`), want: "refused"},
		"duplicate member":     {body: append([]byte(`{"keys":[],`), good[1:]...), want: "duplicate"},
		"other trust domain":   {body: bundleDoc(t, tdA, []*x509.Certificate{cas[tdB].cert}, map[string]crypto.PublicKey{"a1": k.a1.Public()}), want: `names trust domain "b.example"`},
		"duplicate kid":        {body: keysDoc(jwk(k.a1.Public(), "a1"), jwk(k.attacker.Public(), "a1")), want: "duplicate jwt-svid kid"},
		"weak RSA key":         {body: bundleWith(t, map[string]crypto.PublicKey{"a1": k.a1.Public(), "w": k.weakRSA.Public()}), want: "1024 bits"},
		"private key":          {body: keysDoc(jwk(k.a1, "a1")), want: "unsupported key type"},
		"drops JWT keys":       {body: bundleDoc(t, tdA, []*x509.Certificate{cas[tdA].cert}, nil), want: "drops every JWT authority"},
		"drops X.509 CAs":      {body: bundleDoc(t, tdA, nil, map[string]crypto.PublicKey{"a1": k.a1.Public()}), want: "drops every X.509 authority"},
		"oversized":            {body: append(append([]byte(nil), good...), []byte(strings.Repeat(" ", 64<<10))...), want: "size limit"},
		"redirect":             {status: http.StatusFound, want: "redirect"},
		"not found":            {status: http.StatusNotFound, want: "status 404"},
		"another trust domain": {body: goodBundle(t, tdB), want: "names trust domain"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			clock := newClock()
			bs := newBundleServer(t, good, nil)
			v := webVerifier(t, bs, clock, func(ep *spiffe.EndpointConfig) { ep.MaxResponseBytes = 32 << 10 })
			if err := verifyKid(t, v, clock, "a1", k.a1); err != nil {
				t.Fatal(err)
			}
			bs.set(func(bs *bundleServer) { bs.body, bs.status = tt.body, tt.status })
			clock.Advance(spiffe.MinRefreshInterval)
			// An unknown kid triggers a refresh, which is refused.
			if err := verifyKid(t, v, clock, "zz", k.a1); !errors.Is(err, attest.ErrInvalid) {
				t.Fatalf("got %v", err)
			}
			st := v.Stats()
			if st.Failures != 1 || st.Updates != 1 {
				t.Fatalf("stats %+v", st)
			}
			// The last good bundle is kept, and the refusal is reported once it
			// goes stale.
			if err := verifyKid(t, v, clock, "a1", k.a1); err != nil {
				t.Fatalf("last good bundle dropped: %v", err)
			}
			if _, err := v.VerifyX509(t.Context(), []*x509.Certificate{cas[tdA].svid(t, "spiffe://a.example/w")}); err != nil {
				t.Fatalf("last good X.509 authorities dropped: %v", err)
			}
			clock.Advance(spiffe.DefaultMaxStale)
			err := verifyKid(t, v, clock, "a1", k.a1)
			if !errors.Is(err, attest.ErrUnavailable) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("stale: %v, want %q", err, tt.want)
			}
		})
	}
}

func TestEndpointSPIFFEProfile(t *testing.T) {
	k := testKeys()
	cas := testCAs()
	caA, caA2, caB := cas[tdA], cas["a2"], cas[tdB]
	const endpointID = "spiffe://" + tdA + "/spire/server"
	bootstrapA := writeFile(t, "bootstrap-a.json", bundleDoc(t, tdA, []*x509.Certificate{caA.cert}, nil))
	newV := func(t *testing.T, bs *bundleServer, clock *fakeClock, id, bootstrap string) *spiffe.Verifier {
		v, err := spiffe.New(t.Context(), spiffe.Config{
			Name: "fed-a", TrustDomain: tdA, Audiences: []string{aud}, Now: clock.Now,
			BundleEndpoint: &spiffe.EndpointConfig{
				URL: bs.srv.URL + "/bundle", Profile: spiffe.ProfileSPIFFE,
				EndpointSPIFFEID: id, BootstrapBundle: bootstrap,
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { v.Close() })
		return v
	}
	served := bundleDoc(t, tdA, []*x509.Certificate{caA.cert, caA2.cert}, map[string]crypto.PublicKey{"a1": k.a1.Public()})

	t.Run("good, then the endpoint rotates to a CA only the fetched bundle has", func(t *testing.T) {
		clock := newClock()
		bs := newBundleServer(t, served, serverSVID(t, caA, endpointID))
		v := newV(t, bs, clock, endpointID, bootstrapA)
		if err := verifyKid(t, v, clock, "a1", k.a1); err != nil {
			t.Fatal(err)
		}
		bs.set(func(bs *bundleServer) { bs.svid = serverSVID(t, caA2, endpointID) })
		clock.Advance(spiffe.MinRefreshInterval)
		if err := verifyKid(t, v, clock, "zz", k.a1); !errors.Is(err, attest.ErrInvalid) {
			t.Fatalf("got %v", err)
		}
		if st := v.Stats(); st.Updates != 2 || st.Failures != 0 {
			t.Fatalf("refresh authenticated with the fetched bundle failed: %+v", st)
		}
		// A fresh verifier, with the bootstrap bundle only, cannot authenticate it.
		fresh := newV(t, bs, newClock(), endpointID, bootstrapA)
		if err := verifyKid(t, fresh, clock, "a1", k.a1); !errors.Is(err, attest.ErrUnavailable) {
			t.Fatalf("bootstrap bundle authenticated a CA it lacks: %v", err)
		}
	})
	t.Run("wrong endpoint ID", func(t *testing.T) {
		clock := newClock()
		bs := newBundleServer(t, served, serverSVID(t, caA, "spiffe://"+tdA+"/not-the-server"))
		v := newV(t, bs, clock, endpointID, bootstrapA)
		if err := verifyKid(t, v, clock, "a1", k.a1); !errors.Is(err, attest.ErrUnavailable) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("endpoint SVID from another trust domain's CA", func(t *testing.T) {
		clock := newClock()
		bs := newBundleServer(t, served, serverSVID(t, caB, endpointID))
		v := newV(t, bs, clock, endpointID, bootstrapA)
		if err := verifyKid(t, v, clock, "a1", k.a1); !errors.Is(err, attest.ErrUnavailable) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("web PKI certificate", func(t *testing.T) {
		clock := newClock()
		bs := newBundleServer(t, served, nil)
		v := newV(t, bs, clock, endpointID, bootstrapA)
		if err := verifyKid(t, v, clock, "a1", k.a1); !errors.Is(err, attest.ErrUnavailable) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("endpoint of another trust domain", func(t *testing.T) {
		clock := newClock()
		const idB = "spiffe://" + tdB + "/bundle-server"
		bs := newBundleServer(t, served, serverSVID(t, caB, idB))
		bootstrapB := writeFile(t, "bootstrap-b.json", goodBundle(t, tdB))
		v := newV(t, bs, clock, idB, bootstrapB)
		if err := verifyKid(t, v, clock, "a1", k.a1); err != nil {
			t.Fatal(err)
		}
	})
}

// An idle verifier refreshes its bundle endpoint in the background, so that the
// refresh interval bounds how long an authority removed from the bundle is
// honoured: the first token after an idle spell is checked against the new
// bundle. Close stops the refreshing.
func TestEndpointBackgroundRefresh(t *testing.T) {
	k := testKeys()
	clock := newClock() // token times only: the verifier runs on the real clock
	bs := newBundleServer(t, bundleWith(t, map[string]crypto.PublicKey{"a1": k.a1.Public(), "a2": k.a2.Public()}), nil)
	const interval = 500 * time.Millisecond
	v, err := spiffe.New(t.Context(), spiffe.Config{
		Name: "fed-a", TrustDomain: tdA, Audiences: []string{aud}, HTTPClient: bs.srv.Client(),
		BundleEndpoint: &spiffe.EndpointConfig{URL: bs.srv.URL + "/bundle", Profile: spiffe.ProfileWeb,
			RefreshInterval: interval, FetchTimeout: 5 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := verifyKid(t, v, clock, "a1", k.a1); err != nil {
		t.Fatal(err)
	}

	// a1 is revoked; no request arrives for a while.
	bs.set(func(bs *bundleServer) { bs.body = bundleWith(t, map[string]crypto.PublicKey{"a2": k.a2.Public()}) })
	before := v.Stats().Updates
	deadline := time.Now().Add(10 * time.Second)
	for v.Stats().Updates == before && time.Now().Before(deadline) {
		time.Sleep(interval / 5)
	}
	if err := verifyKid(t, v, clock, "a1", k.a1); !errors.Is(err, attest.ErrInvalid) {
		t.Fatalf("first request after an idle spell: revoked key: %v", err)
	}
	if err := verifyKid(t, v, clock, "a2", k.a2); err != nil {
		t.Fatal(err)
	}

	// Close ends the refresh loop: no goroutine of it is left behind.
	loops := strings.Count(goroutines(), "refreshLoop")
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(goroutines(), "refreshLoop"); loops == 0 || n != loops-1 {
		t.Fatalf("refresh loops: %d before Close, %d after", loops, n)
	}
	hits := bs.hits.Load()
	time.Sleep(3 * interval)
	if n := bs.hits.Load(); n != hits {
		t.Fatalf("%d requests after Close", n-hits)
	}
}

// goroutines returns the stacks of every goroutine.
func goroutines() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}
