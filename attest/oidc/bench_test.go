package oidc_test

import (
	"crypto"
	"testing"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/attest/oidc"
)

// The verification hot path: Router prechecks, then the Verifier against cached keys
// (already fetched from the TLS test issuer), for a Kubernetes-style token, with the
// kubernetes attribute preset on (as newEnv configures it) unless mods say otherwise.
func benchmarkVerify(b *testing.B, alg, kid string, key any, mods ...func(*oidc.Config)) {
	e := newEnv(b, mods...)
	raw := signRaw(b, alg, hdr(alg, kid, "typ", "JWT"), e.claims(), key)
	if _, err := e.attest(raw, attest.TypeJWT); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.router.Attest(b.Context(), raw, attest.TypeJWT); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyES256(b *testing.B) { benchmarkVerify(b, "ES256", "es1", testKeys().es1) }
func BenchmarkVerifyRS256(b *testing.B) { benchmarkVerify(b, "RS256", "rs1", testKeys().rs1) }
func BenchmarkVerifyEdDSA(b *testing.B) { benchmarkVerify(b, "EdDSA", "ed1", testKeys().ed1) }

// The same without attribute mapping, and with issuer breadth and a required claim
// on top of the preset: the cost of each.
func BenchmarkVerifyES256NoAttributes(b *testing.B) {
	benchmarkVerify(b, "ES256", "es1", testKeys().es1, func(c *oidc.Config) { c.Attributes = nil })
}

func BenchmarkVerifyES256Breadth(b *testing.B) {
	benchmarkVerify(b, "ES256", "es1", testKeys().es1, func(c *oidc.Config) {
		c.Subjects = []string{"system:serviceaccount:staging:*", "system:serviceaccount:prod:*"}
		c.RequiredClaims = map[string]string{"jti": "jti-*"}
	})
}

// Baselines in the same run, for comparison: go-jose ParseSigned + Verify alone, and
// go-oidc's IDTokenVerifier over a static key set.
func BenchmarkBaseline(b *testing.B) {
	k := testKeys()
	for _, tc := range []struct {
		alg, kid string
		key      any
		pub      any
	}{
		{"ES256", "es1", k.es1, k.es1.Public()},
		{"RS256", "rs1", k.rs1, k.rs1.Public()},
	} {
		e := newEnv(b)
		raw := signRaw(b, tc.alg, hdr(tc.alg, tc.kid, "typ", "JWT"), e.claims(), tc.key)
		b.Run("gojose-"+tc.alg, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(tc.alg)})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := jws.Verify(tc.pub); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("gooidc-"+tc.alg, func(b *testing.B) {
			v := gooidc.NewVerifier(e.iss.URL(), &gooidc.StaticKeySet{PublicKeys: []crypto.PublicKey{tc.pub}},
				&gooidc.Config{ClientID: "sts.example", SupportedSigningAlgs: []string{tc.alg}, Now: e.clock.Now})
			b.ReportAllocs()
			for b.Loop() {
				tok, err := v.Verify(b.Context(), raw)
				if err != nil {
					b.Fatal(err)
				}
				var m map[string]any
				if err := tok.Claims(&m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
