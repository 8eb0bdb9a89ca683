package spiffe_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/attest/spiffe"
	"github.com/safeconduct/safeconduct/internal/fakeclock"
)

// Trust domains of the tests: A is the one under test, B a federated one, C unknown.
const (
	tdA = "a.example"
	tdB = "b.example"
	tdC = "c.example"
	aud = "sts.example"
)

// keys are generated once per test binary (RSA generation is slow).
type keyset struct {
	a1, a2, b1, attacker *ecdsa.PrivateKey
	a384                 *ecdsa.PrivateKey
	aRSA                 *rsa.PrivateKey
	weakRSA              *rsa.PrivateKey
}

var testKeys = sync.OnceValue(func() *keyset {
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
	return &keyset{
		a1: ec(elliptic.P256()), a2: ec(elliptic.P256()), b1: ec(elliptic.P256()), attacker: ec(elliptic.P256()),
		a384: ec(elliptic.P384()), aRSA: rs(2048), weakRSA: rs(1024),
	}
})

// CAs are generated once per test binary too.
var testCAs = sync.OnceValue(func() map[string]*testCA {
	return map[string]*testCA{tdA: mustCA(tdA), tdB: mustCA(tdB), tdC: mustCA(tdC), "a2": mustCA(tdA)}
})

// testCA is a trust domain's X.509 authority.
type testCA struct {
	td   string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

var serial = func() func() *big.Int {
	var mu sync.Mutex
	n := int64(1)
	return func() *big.Int {
		mu.Lock()
		defer mu.Unlock()
		n++
		return big.NewInt(n)
	}
}()

func mustCA(td string) *testCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"SPIFFE"}, CommonName: td + " root"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: td}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		panic(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	return &testCA{td: td, cert: cert, key: key}
}

// svidTemplate is an X.509-SVID leaf template for the URIs, changed by mods.
func svidTemplate(uris []string, mods ...func(*x509.Certificate)) *x509.Certificate {
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"SPIRE"}},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	for _, u := range uris {
		parsed, err := url.Parse(u)
		if err != nil {
			panic(err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	for _, m := range mods {
		m(tmpl)
	}
	return tmpl
}

// issue signs a certificate for tmpl with the CA and returns it with its key.
func (ca *testCA) issue(t testing.TB, tmpl *x509.Certificate) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	return ca.mustIssue(tmpl)
}

// mustIssue is issue for examples, panicking on error.
func (ca *testCA) mustIssue(tmpl *x509.Certificate) (*x509.Certificate, *ecdsa.PrivateKey) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		panic(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	return cert, key
}

// svid issues a leaf X.509-SVID for id.
func (ca *testCA) svid(t testing.TB, id string, mods ...func(*x509.Certificate)) *x509.Certificate {
	t.Helper()
	c, _ := ca.issue(t, svidTemplate([]string{id}, mods...))
	return c
}

// intermediate issues an intermediate CA of the trust domain.
func (ca *testCA) intermediate(t testing.TB) *testCA {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: ca.td + " intermediate"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(2 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: ca.td}},
	}
	cert, key := ca.issue(t, tmpl)
	return &testCA{td: ca.td, cert: cert, key: key}
}

// bundleDoc builds a SPIFFE bundle document of td with X.509 authorities cas and
// JWT authorities keys (kid -> public key), changed by mods.
func bundleDoc(t testing.TB, td string, cas []*x509.Certificate, keys map[string]crypto.PublicKey, mods ...func(*spiffebundle.Bundle)) []byte {
	t.Helper()
	b := spiffebundle.New(spiffeid.RequireTrustDomainFromString(td))
	for _, c := range cas {
		b.AddX509Authority(c)
	}
	for kid, k := range keys {
		if err := b.AddJWTAuthority(kid, k); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range mods {
		m(b)
	}
	data, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// goodBundle is trust domain td's usual bundle: its CA, and for A the keys a1, a384
// and aRSA, for B the key b1.
func goodBundle(t testing.TB, td string) []byte {
	k := testKeys()
	keys := map[string]crypto.PublicKey{}
	switch td {
	case tdA:
		keys = map[string]crypto.PublicKey{"a1": k.a1.Public(), "a384": k.a384.Public(), "rsa": k.aRSA.Public()}
	case tdB:
		keys = map[string]crypto.PublicKey{"b1": k.b1.Public()}
	}
	return bundleDoc(t, td, []*x509.Certificate{testCAs()[td].cert}, keys)
}

// writeFile writes data to a new file in the test's temp dir.
func writeFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// signRaw builds a compact JWS from literal header and payload JSON, signed for alg
// with key: an *ecdsa.PrivateKey, *rsa.PrivateKey, []byte (HMAC) or nil (no
// signature).
func signRaw(t testing.TB, alg, header, payload string, key any) string {
	t.Helper()
	input := b64([]byte(header)) + "." + b64([]byte(payload))
	hashFor := map[string]crypto.Hash{"256": crypto.SHA256, "384": crypto.SHA384, "512": crypto.SHA512}
	h := hashFor[alg[len(alg)-3:]]
	if h == 0 {
		h = crypto.SHA256
	}
	digest := func() []byte {
		w := h.New()
		w.Write([]byte(input))
		return w.Sum(nil)
	}
	var sig []byte
	switch k := key.(type) {
	case nil:
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, k, digest())
		if err != nil {
			t.Fatal(err)
		}
		size := (k.Curve.Params().BitSize + 7) / 8
		sig = append(r.FillBytes(make([]byte, size)), s.FillBytes(make([]byte, size))...)
	case *rsa.PrivateKey:
		var err error
		if alg[0] == 'P' {
			sig, err = rsa.SignPSS(rand.Reader, k, h, digest(), &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		} else {
			sig, err = rsa.SignPKCS1v15(rand.Reader, k, h, digest())
		}
		if err != nil {
			t.Fatal(err)
		}
	case []byte:
		m := hmac.New(sha256.New, k)
		m.Write([]byte(input))
		sig = m.Sum(nil)
	default:
		t.Fatalf("signRaw: key type %T", key)
	}
	return input + "." + b64(sig)
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

// fakeClock is the injected clock. Tests start it at the real time, so that
// go-spiffe checks that use the real clock (TLS, the differential tests) agree.
type fakeClock = fakeclock.Clock

func newClock() *fakeClock { return fakeclock.New(time.Now().Truncate(time.Second)) }

// claims returns the payload JSON of a JWT-SVID as SPIRE mints it (sub, aud array,
// exp, iat; no iss, nbf or jti) at now, changed by mods.
func claims(t testing.TB, now time.Time, mods ...func(c map[string]any)) string {
	t.Helper()
	c := map[string]any{
		"sub": "spiffe://" + tdA + "/ns/prod/sa/api",
		"aud": []string{aud},
		"exp": now.Unix() + 300,
		"iat": now.Unix() - 10,
	}
	for _, m := range mods {
		m(c)
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
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

// svidToken returns a JWT-SVID signed with key a1 of trust domain A (typ JWT).
func svidToken(t testing.TB, now time.Time, mods ...func(map[string]any)) string {
	return signRaw(t, "ES256", hdr("ES256", "a1", "typ", "JWT"), claims(t, now, mods...), testKeys().a1)
}

// fileVerifier returns a Verifier of td over a bundle file holding doc.
func fileVerifier(t testing.TB, td string, doc []byte, clock *fakeClock, mods ...func(*spiffe.Config)) *spiffe.Verifier {
	t.Helper()
	cfg := spiffe.Config{
		Name:        "spiffe-" + td,
		TrustDomain: td,
		Audiences:   []string{aud, "other.example"},
		BundleFile:  writeFile(t, "bundle.json", doc),
		Now:         clock.Now,
	}
	for _, m := range mods {
		m(&cfg)
	}
	v, err := spiffe.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// router routes trust domains to verifiers.
func router(t testing.TB, vs ...*spiffe.Verifier) *attest.Router {
	t.Helper()
	m := map[string]attest.Verifier{}
	for _, v := range vs {
		m[v.TrustDomain().Name()] = v
	}
	r, err := attest.NewRouterRoutes(attest.Routes{ByTrustDomain: m})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// waitFor polls cond for up to 5 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	waitWithin(t, 5*time.Second, what, cond)
}

// waitWithin waits up to d for cond.
func waitWithin(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
