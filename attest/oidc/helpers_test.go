package oidc_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/attest/attrs"
	"github.com/safeconduct/safeconduct/attest/oidc"
	"github.com/safeconduct/safeconduct/internal/fakeclock"
)

// testKeys are generated once per test binary (RSA generation is slow).
type testKeyset struct {
	es1, es2, attacker *ecdsa.PrivateKey
	es384              *ecdsa.PrivateKey
	rs1                *rsa.PrivateKey
	rsWeak             *rsa.PrivateKey
	ed1                ed25519.PrivateKey
}

var testKeys = sync.OnceValue(func() *testKeyset {
	ec := func(c elliptic.Curve) *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	}
	rs := func(bits int) *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			panic(err)
		}
		return k
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return &testKeyset{
		es1: ec(elliptic.P256()), es2: ec(elliptic.P256()), attacker: ec(elliptic.P256()),
		es384: ec(elliptic.P384()),
		rs1:   rs(2048), rsWeak: rs(1024), ed1: ed,
	}
})

// jwk returns the public JWK of priv with kid and alg.
func jwk(priv crypto.Signer, kid, alg string) jose.JSONWebKey {
	return jose.JSONWebKey{Key: priv.Public(), KeyID: kid, Algorithm: alg, Use: "sig"}
}

// jwksJSON marshals a key set.
func jwksJSON(t testing.TB, keys ...jose.JSONWebKey) []byte {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// goodKeys is the issuer's published set: ES256, RS256 and EdDSA keys.
func goodKeys() []jose.JSONWebKey {
	k := testKeys()
	return []jose.JSONWebKey{jwk(k.es1, "es1", "ES256"), jwk(k.rs1, "rs1", "RS256"), jwk(k.ed1, "ed1", "EdDSA")}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// signRaw builds a compact JWS from literal header and payload JSON, signed for alg
// with key: an *ecdsa.PrivateKey, *rsa.PrivateKey, ed25519.PrivateKey, []byte (HMAC)
// or nil (no signature). It lets tests craft what no well-behaved library would.
func signRaw(t testing.TB, alg, header, payload string, key any) string {
	t.Helper()
	input := b64([]byte(header)) + "." + b64([]byte(payload))
	hash := func(h crypto.Hash) []byte {
		w := h.New()
		w.Write([]byte(input))
		return w.Sum(nil)
	}
	hashFor := map[string]crypto.Hash{"256": crypto.SHA256, "384": crypto.SHA384, "512": crypto.SHA512}
	var sig []byte
	switch k := key.(type) {
	case nil:
	case *ecdsa.PrivateKey:
		h := hashFor[alg[len(alg)-3:]]
		if h == 0 {
			h = crypto.SHA256
		}
		r, s, err := ecdsa.Sign(rand.Reader, k, hash(h))
		if err != nil {
			t.Fatal(err)
		}
		size := (k.Curve.Params().BitSize + 7) / 8
		sig = append(pad(r, size), pad(s, size)...)
	case *rsa.PrivateKey:
		h := hashFor[alg[len(alg)-3:]]
		var err error
		if alg[0] == 'P' {
			sig, err = rsa.SignPSS(rand.Reader, k, h, hash(h), &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		} else {
			sig, err = rsa.SignPKCS1v15(rand.Reader, k, h, hash(h))
		}
		if err != nil {
			t.Fatal(err)
		}
	case ed25519.PrivateKey:
		sig = ed25519.Sign(k, []byte(input))
	case []byte:
		newHash := sha256.New
		if alg == "HS512" {
			newHash = sha512.New
		}
		m := hmac.New(newHash, k)
		m.Write([]byte(input))
		sig = m.Sum(nil)
	default:
		t.Fatalf("signRaw: key type %T", key)
	}
	return input + "." + b64(sig)
}

func pad(n *big.Int, size int) []byte {
	b := make([]byte, size)
	return n.FillBytes(b)
}

// hdr returns a header JSON with alg, an optional kid and extra members.
func hdr(alg, kid string, extra ...any) string {
	m := map[string]any{"alg": alg}
	if kid != "" {
		m["kid"] = kid
	}
	for i := 0; i+1 < len(extra); i += 2 {
		m[extra[i].(string)] = extra[i+1]
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// fakeClock is the injected clock.
type fakeClock = fakeclock.Clock

// testIssuer is an OIDC issuer on a local TLS server, serving discovery at the
// well-known path and its key set at /jwks, counting requests.
type testIssuer struct {
	srv *httptest.Server

	mu              sync.Mutex
	jwks            []byte
	jwksStatus      int           // 0: 200
	jwksDelay       time.Duration // before answering /jwks
	discoveryIssuer string        // "": the server's URL
	discoveryJWKS   string        // "": the server's /jwks

	discoveryHits, jwksHits, otherHits atomic.Int64
}

func newIssuer(t testing.TB, keys ...jose.JSONWebKey) *testIssuer {
	ti := &testIssuer{jwks: jwksJSON(t, keys...)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		ti.discoveryHits.Add(1)
		ti.mu.Lock()
		iss, jwksURI := ti.discoveryIssuer, ti.discoveryJWKS
		ti.mu.Unlock()
		if iss == "" {
			iss = ti.srv.URL
		}
		if jwksURI == "" {
			jwksURI = ti.srv.URL + "/jwks"
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                iss,
			"jwks_uri":                              jwksURI,
			"id_token_signing_alg_values_supported": []string{"ES256", "RS256", "EdDSA"},
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		ti.jwksHits.Add(1)
		ti.mu.Lock()
		body, status, delay := ti.jwks, ti.jwksStatus, ti.jwksDelay
		ti.mu.Unlock()
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		if status != 0 && status != http.StatusOK {
			http.Error(w, "upstream body that must not reach errors", status)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
	mux.HandleFunc("GET /redirect-jwks", func(w http.ResponseWriter, r *http.Request) {
		ti.otherHits.Add(1)
		http.Redirect(w, r, "/jwks", http.StatusFound)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		ti.otherHits.Add(1)
		http.NotFound(w, r)
	})
	ti.srv = httptest.NewTLSServer(mux)
	t.Cleanup(ti.srv.Close)
	return ti
}

func (ti *testIssuer) URL() string { return ti.srv.URL }

func (ti *testIssuer) set(f func(ti *testIssuer)) {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	f(ti)
}

func (ti *testIssuer) hits() int64 {
	return ti.discoveryHits.Load() + ti.jwksHits.Load() + ti.otherHits.Load()
}

// canary is a server an attacker points tokens at (jku, x5u): it must never be hit.
type canary struct {
	srv  *httptest.Server
	hits atomic.Int64
}

func newCanary(t testing.TB) *canary {
	c := &canary{}
	attackerSet := jwksJSON(t, jwk(testKeys().attacker, "attacker", "ES256"))
	c.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.hits.Add(1)
		w.Write(attackerSet)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

// env is one upstream under test: issuer, clock, verifier and router.
type env struct {
	t      testing.TB
	clock  *fakeClock
	iss    *testIssuer
	canary *canary
	cfg    oidc.Config
	v      *oidc.Verifier
	router *attest.Router
}

var epoch = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func newEnv(t testing.TB, mods ...func(*oidc.Config)) *env {
	t.Helper()
	e := &env{t: t, clock: fakeclock.New(epoch), iss: newIssuer(t, goodKeys()...), canary: newCanary(t)}
	e.cfg = oidc.Config{
		Name:         "test",
		Issuer:       e.iss.URL(),
		Audiences:    []string{"sts.example", "other.example"},
		HTTPClient:   e.iss.srv.Client(),
		Now:          e.clock.Now,
		FetchTimeout: 2 * time.Second,
		Attributes:   kubernetesMapping(t),
	}
	for _, m := range mods {
		m(&e.cfg)
	}
	v, err := oidc.New(t.Context(), e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.v = v
	if e.router, err = attest.NewRouter(map[string]attest.Verifier{v.Issuer(): v}); err != nil {
		t.Fatal(err)
	}
	return e
}

// kubernetesMapping is the kubernetes preset, compiled.
func kubernetesMapping(t testing.TB) *attrs.Mapping {
	t.Helper()
	m, err := attrs.Compile(attrs.PresetKubernetes, nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// claims returns the payload JSON of a good token, changed by mods.
func (e *env) claims(mods ...func(c map[string]any)) string {
	now := e.clock.Now().Unix()
	c := map[string]any{
		"iss": e.iss.URL(),
		"sub": "system:serviceaccount:prod:api",
		"aud": []string{"sts.example"},
		"exp": now + 300,
		"iat": now - 60,
		"nbf": now - 60,
		"jti": "jti-1",
		"kubernetes.io": map[string]any{
			"namespace":      "prod",
			"serviceaccount": map[string]any{"name": "api", "uid": "sa-uid"},
			"pod":            map[string]any{"name": "api-7d9f", "uid": "pod-uid"},
		},
	}
	for _, m := range mods {
		m(c)
	}
	b, err := json.Marshal(c)
	if err != nil {
		e.t.Fatal(err)
	}
	return string(b)
}

// token returns a good ES256 token (kid es1, typ JWT) with claims changed by mods.
func (e *env) token(mods ...func(c map[string]any)) string {
	return signRaw(e.t, "ES256", hdr("ES256", "es1", "typ", "JWT"), e.claims(mods...), testKeys().es1)
}

// set returns a claims modifier setting name to v (deleting it when v is nil).
func set(name string, v any) func(map[string]any) {
	return func(c map[string]any) {
		if v == nil {
			delete(c, name)
			return
		}
		c[name] = v
	}
}

func (e *env) attest(raw, tokenType string) (*attest.Workload, error) {
	return e.router.Attest(e.t.Context(), raw, tokenType)
}

// mustAttest attests a good token now.
func (e *env) mustAttest() {
	e.t.Helper()
	if _, err := e.attest(e.token(), attest.TypeJWT); err != nil {
		e.t.Fatalf("good token refused: %v", err)
	}
}

// waitFor polls cond for up to 5 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
