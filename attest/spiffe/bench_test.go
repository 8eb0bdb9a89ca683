package spiffe_test

import (
	"crypto/x509"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/attest/spiffe"
)

// The JWT-SVID hot path: Router prechecks and routing by trust domain, then the
// Verifier against the cached bundle, with a path template; and, for comparison in
// the same run, go-spiffe's jwtsvid.ParseAndValidate over the same bundle.
func BenchmarkVerifyJWTSVID(b *testing.B) {
	k := testKeys()
	for _, tc := range []struct {
		alg, kid string
		key      any
	}{
		{"ES256", "a1", k.a1},
		{"RS256", "rsa", k.aRSA},
	} {
		clock := newClock()
		v := fileVerifier(b, tdA, goodBundle(b, tdA), clock, func(c *spiffe.Config) {
			c.PathTemplates = []string{"/ns/{namespace}/sa/{service_account}"}
		})
		r := router(b, v)
		raw := signRaw(b, tc.alg, hdr(tc.alg, tc.kid, "typ", "JWT"), claims(b, clock.Now()), tc.key)
		if _, err := r.Attest(b.Context(), raw, attest.TypeJWT); err != nil {
			b.Fatal(err)
		}
		b.Run(tc.alg, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := r.Attest(b.Context(), raw, attest.TypeJWT); err != nil {
					b.Fatal(err)
				}
			}
		})
		bundle, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString(tdA), goodBundle(b, tdA))
		if err != nil {
			b.Fatal(err)
		}
		b.Run("gospiffe-"+tc.alg, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := jwtsvid.ParseAndValidate(raw, bundle, []string{aud}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// The X.509-SVID path: a leaf straight from the trust domain's CA.
func BenchmarkVerifyX509SVID(b *testing.B) {
	clock := newClock()
	v := fileVerifier(b, tdA, goodBundle(b, tdA), clock)
	r := router(b, v)
	chain := []*x509.Certificate{testCAs()[tdA].svid(b, "spiffe://a.example/ns/prod/sa/api")}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.AttestX509(b.Context(), chain); err != nil {
			b.Fatal(err)
		}
	}
}
