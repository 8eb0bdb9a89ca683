package spiffe_test

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/attest/oidc"
	"github.com/safeconduct/safeconduct/attest/spiffe"
)

// A Router over a real OIDC upstream and two trust domains, A's bundle behind a
// bundle endpoint that counts requests.
func TestRouterOIDCAndTrustDomains(t *testing.T) {
	k := testKeys()
	cas := testCAs()
	clock := newClock()
	const issuer = "https://oidc.example"
	jwksDoc, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: k.a2.Public(), KeyID: "oidc1", Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	o, err := oidc.New(t.Context(), oidc.Config{
		Name: "oidc", Issuer: issuer, Audiences: []string{aud}, JWKSFile: writeFile(t, "jwks.json", jwksDoc), Now: clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	bs := newBundleServer(t, bundleWith(t, map[string]crypto.PublicKey{"a1": k.a1.Public()}), nil)
	a := webVerifier(t, bs, clock)
	b := fileVerifier(t, tdB, goodBundle(t, tdB), clock)
	r, err := attest.NewRouterRoutes(attest.Routes{
		ByIssuer:      map[string]attest.Verifier{issuer: o},
		ByTrustDomain: map[string]attest.Verifier{tdA: a, tdB: b},
	})
	if err != nil {
		t.Fatal(err)
	}
	now := clock.Now()
	attestJWT := func(raw string) (*attest.Workload, error) { return r.Attest(t.Context(), raw, attest.TypeJWT) }

	// Unknown trust domains and issuers: refused without a request.
	for _, raw := range []string{
		svidToken(t, now, set("sub", "spiffe://"+tdC+"/w")),
		svidToken(t, now, set("sub", "spiffe://"+tdC+"/w"), set("iss", "https://unknown.example")),
		svidToken(t, now, set("iss", "https://unknown.example"), set("sub", "w")),
	} {
		if _, err := attestJWT(raw); !errors.Is(err, attest.ErrUnknownIssuer) {
			t.Fatalf("got %v", err)
		}
	}
	if _, err := r.AttestX509(t.Context(), []*x509.Certificate{cas[tdC].svid(t, "spiffe://"+tdC+"/w")}); !errors.Is(err, attest.ErrUnknownIssuer) {
		t.Fatalf("X.509 of an unknown trust domain: %v", err)
	}
	if n := bs.hits.Load(); n != 0 {
		t.Fatalf("%d requests for unknown issuers and trust domains", n)
	}

	// JWT-SVIDs by trust domain.
	w, err := attestJWT(svidToken(t, now))
	if err != nil || w.Upstream != "fed-a" || w.Issuer != "spiffe://"+tdA {
		t.Fatalf("A: %+v, %v", w, err)
	}
	w, err = attestJWT(signRaw(t, "ES256", hdr("ES256", "b1"), claims(t, now, set("sub", "spiffe://"+tdB+"/w")), k.b1))
	if err != nil || w.Upstream != "spiffe-"+tdB {
		t.Fatalf("B: %+v, %v", w, err)
	}
	// An OIDC token, and a JWT-SVID whose iss names the OIDC upstream: the issuer
	// wins, and A's key means nothing to it.
	w, err = attestJWT(signRaw(t, "ES256", hdr("ES256", "oidc1"), claims(t, now, set("iss", issuer), set("sub", "repo:x")), k.a2))
	if err != nil || w.Upstream != "oidc" {
		t.Fatalf("OIDC: %+v, %v", w, err)
	}
	if _, err := attestJWT(svidToken(t, now, set("iss", issuer))); !errors.Is(err, attest.ErrInvalid) {
		t.Fatalf("SVID under the OIDC issuer: %v", err)
	}
	// A's key vouching for B, B's for A.
	if _, err := attestJWT(signRaw(t, "ES256", hdr("ES256", "a1"), claims(t, now, set("sub", "spiffe://"+tdB+"/w")), k.a1)); !errors.Is(err, attest.ErrInvalid) {
		t.Fatalf("A's key for B: %v", err)
	}
	if _, err := attestJWT(signRaw(t, "ES256", hdr("ES256", "b1"), claims(t, now), k.b1)); !errors.Is(err, attest.ErrInvalid) {
		t.Fatalf("B's key for A: %v", err)
	}

	// X.509-SVIDs by trust domain.
	for _, td := range []string{tdA, tdB} {
		id := "spiffe://" + td + "/w"
		w, err := r.AttestX509(t.Context(), []*x509.Certificate{cas[td].svid(t, id)})
		if err != nil || w.Subject != id || w.Issuer != "spiffe://"+td {
			t.Fatalf("%s: %+v, %v", td, w, err)
		}
	}
	// A leaf claiming A, issued by B's CA: routed to A, which refuses it.
	if _, err := r.AttestX509(t.Context(), []*x509.Certificate{cas[tdB].svid(t, "spiffe://"+tdA+"/w")}); !errors.Is(err, attest.ErrInvalid) {
		t.Fatalf("B's CA for A: %v", err)
	}
	var _ attest.X509Verifier = (*spiffe.Verifier)(nil)
}
