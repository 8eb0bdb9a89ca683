package oidc_test

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/attest/oidc"
)

func TestVerify(t *testing.T) {
	k := testKeys()
	tests := []struct {
		name      string
		token     func(e *env) string
		tokenType string // default attest.TypeJWT
		direct    bool   // call the Verifier, bypassing the Router
		want      error  // nil: attested
		wantText  string // in the error, when set
		check     func(t *testing.T, e *env, w *attest.Workload)
	}{
		{name: "good ES256", token: func(e *env) string { return e.token() },
			check: func(t *testing.T, e *env, w *attest.Workload) {
				now := e.clock.Now()
				switch {
				case w.Upstream != "test", w.Issuer != e.iss.URL(), w.Subject != "system:serviceaccount:prod:api",
					w.ID != w.Subject, w.TokenID != "jti-1", len(w.Audience) != 1 || w.Audience[0] != "sts.example",
					!w.Expiry.Equal(now.Add(300 * time.Second)), !w.IssuedAt.Equal(now.Add(-60 * time.Second)):
					t.Fatalf("workload %+v", w)
				}
				want := map[string]string{
					"sub": w.Subject, "iss": e.iss.URL(), "namespace": "prod",
					"service_account": "api", "service_account_uid": "sa-uid", "pod": "api-7d9f", "pod_uid": "pod-uid",
				}
				if len(w.Attributes) != len(want) {
					t.Fatalf("attributes %v", w.Attributes)
				}
				for k, v := range want {
					if w.Attributes[k] != v {
						t.Fatalf("attribute %s = %q, want %q", k, w.Attributes[k], v)
					}
				}
				if w.Claims["jti"] != "jti-1" {
					t.Fatalf("claims %v", w.Claims)
				}
			}},
		{name: "good RS256", token: func(e *env) string {
			return signRaw(t, "RS256", hdr("RS256", "rs1"), e.claims(), k.rs1)
		}},
		{name: "good EdDSA", token: func(e *env) string {
			return signRaw(t, "EdDSA", hdr("EdDSA", "ed1"), e.claims(), k.ed1)
		}},
		{name: "good direct", direct: true, token: func(e *env) string { return e.token() }},
		{name: "aud as a string", token: func(e *env) string { return e.token(set("aud", "other.example")) }},
		{name: "aud among others", token: func(e *env) string { return e.token(set("aud", []string{"x", "sts.example"})) }},
		{name: "no nbf no iat no jti", token: func(e *env) string { return e.token(set("nbf", nil), set("iat", nil), set("jti", nil)) },
			check: func(t *testing.T, _ *env, w *attest.Workload) {
				if !w.IssuedAt.IsZero() || w.TokenID != "" {
					t.Fatalf("workload %+v", w)
				}
			}},
		{name: "uuid subject, no kubernetes claims", token: func(e *env) string {
			return e.token(set("sub", "0f8fad5b-d9cb-469f-a165-70867728950e"), set("kubernetes.io", nil))
		}, check: func(t *testing.T, _ *env, w *attest.Workload) {
			if len(w.Attributes) != 2 {
				t.Fatalf("attributes %v", w.Attributes)
			}
		}},
		{name: "fractional exp", token: func(e *env) string { return e.token(set("exp", float64(e.clock.Now().Unix())+10.5)) }},

		// typ
		{name: "typ absent", token: func(e *env) string {
			return signRaw(t, "ES256", hdr("ES256", "es1"), e.claims(), k.es1)
		}, tokenType: attest.TypeIDToken},
		{name: "typ JWT as id token", token: func(e *env) string { return e.token() }, tokenType: attest.TypeIDToken},
		{name: "typ at+jwt as access token", token: func(e *env) string {
			return signRaw(t, "ES256", hdr("ES256", "es1", "typ", "at+jwt"), e.claims(), k.es1)
		}, tokenType: attest.TypeAccessToken},
		{name: "typ at+jwt as id token", direct: true, token: func(e *env) string {
			return signRaw(t, "ES256", hdr("ES256", "es1", "typ", "at+jwt"), e.claims(), k.es1)
		}, tokenType: attest.TypeIDToken, want: attest.ErrMalformed},
		{name: "typ logout+jwt", token: func(e *env) string {
			return signRaw(t, "ES256", hdr("ES256", "es1", "typ", "logout+jwt"), e.claims(), k.es1)
		}, want: attest.ErrMalformed},
		{name: "typ secevent+jwt as access token", token: func(e *env) string {
			return signRaw(t, "ES256", hdr("ES256", "es1", "typ", "secevent+jwt"), e.claims(), k.es1)
		}, tokenType: attest.TypeAccessToken, want: attest.ErrMalformed},
		{name: "unsupported token type", direct: true, token: func(e *env) string { return e.token() },
			tokenType: "urn:ietf:params:oauth:token-type:refresh_token", want: attest.ErrUnsupportedType},

		// time
		{name: "expired", token: func(e *env) string { return e.token(set("exp", e.clock.Now().Unix()-31)) }, want: attest.ErrInvalid, wantText: "expired"},
		{name: "expired within skew", token: func(e *env) string { return e.token(set("exp", e.clock.Now().Unix()-29)) }},
		{name: "exp missing", token: func(e *env) string { return e.token(set("exp", nil)) }, want: attest.ErrInvalid},
		{name: "exp as string", token: func(e *env) string {
			return e.token(set("exp", "4102444800"))
		}, want: attest.ErrInvalid, wantText: "not a number"},
		{name: "exp absurd", token: func(e *env) string { return e.token(set("exp", 1e300)) }, want: attest.ErrInvalid},
		{name: "nbf in the future", token: func(e *env) string { return e.token(set("nbf", e.clock.Now().Unix()+31)) }, want: attest.ErrInvalid},
		{name: "nbf within skew", token: func(e *env) string { return e.token(set("nbf", e.clock.Now().Unix()+29)) }},
		{name: "nbf as string", token: func(e *env) string { return e.token(set("nbf", "0")) }, want: attest.ErrInvalid},
		{name: "iat in the future", token: func(e *env) string { return e.token(set("iat", e.clock.Now().Unix()+31)) }, want: attest.ErrInvalid},
		{name: "iat as bool", token: func(e *env) string { return e.token(set("iat", true)) }, want: attest.ErrInvalid},
		{name: "expired and forged", token: func(e *env) string {
			return signRaw(t, "ES256", hdr("ES256", "es1"), e.claims(set("exp", 1000)), k.attacker)
		}, want: attest.ErrInvalid, wantText: "signature"},

		// audience
		{name: "wrong audience", token: func(e *env) string { return e.token(set("aud", []string{"someone-else"})) }, want: attest.ErrInvalid},
		{name: "aud missing", token: func(e *env) string { return e.token(set("aud", nil)) }, want: attest.ErrInvalid},
		{name: "aud empty array", token: func(e *env) string { return e.token(set("aud", []string{})) }, want: attest.ErrInvalid},
		{name: "aud empty string", token: func(e *env) string { return e.token(set("aud", "")) }, want: attest.ErrInvalid},
		{name: "aud array with a number", token: func(e *env) string { return e.token(set("aud", []any{"sts.example", 1})) }, want: attest.ErrInvalid},
		{name: "aud as object", token: func(e *env) string { return e.token(set("aud", map[string]any{"sts.example": true})) }, want: attest.ErrInvalid},

		// issuer
		{name: "unknown issuer", token: func(e *env) string { return e.token(set("iss", "https://evil.example")) }, want: attest.ErrUnknownIssuer,
			check: func(t *testing.T, e *env, _ *attest.Workload) {
				if n := e.iss.hits(); n != 0 {
					t.Fatalf("unknown issuer caused %d requests", n)
				}
			}},
		{name: "iss mismatch in the verifier", direct: true, token: func(e *env) string {
			return e.token(set("iss", "https://evil.example"))
		}, want: attest.ErrInvalid},
		{name: "iss with trailing slash", direct: true, token: func(e *env) string { return e.token(set("iss", e.iss.URL()+"/")) }, want: attest.ErrInvalid},
		{name: "iss missing", direct: true, token: func(e *env) string { return e.token(set("iss", nil)) }, want: attest.ErrInvalid},
		{name: "duplicate iss", token: func(e *env) string {
			c := e.claims()
			return signRaw(t, "ES256", hdr("ES256", "es1"), `{"iss":"`+e.iss.URL()+`",`+c[1:], k.es1)
		}, want: attest.ErrMalformed},
		{name: "duplicate iss good evil", direct: true, token: func(e *env) string {
			return signRaw(t, "ES256", hdr("ES256", "es1"), `{"iss":"`+e.iss.URL()+`","iss":"https://evil.example","sub":"s"}`, k.es1)
		}, want: attest.ErrMalformed},
		{name: "duplicate header member", direct: true, token: func(e *env) string {
			return signRaw(t, "ES256", `{"alg":"ES256","kid":"es1","kid":"rs1"}`, e.claims(), k.es1)
		}, want: attest.ErrMalformed},

		// subject
		{name: "sub missing", token: func(e *env) string { return e.token(set("sub", nil)) }, want: attest.ErrInvalid},
		{name: "sub empty", token: func(e *env) string { return e.token(set("sub", "")) }, want: attest.ErrInvalid},
		{name: "sub not a string", token: func(e *env) string { return e.token(set("sub", 42)) }, want: attest.ErrInvalid},
		{name: "sub with control character", token: func(e *env) string { return e.token(set("sub", "api\x00admin")) }, want: attest.ErrInvalid},
		{name: "sub with newline", token: func(e *env) string { return e.token(set("sub", "api\nadmin")) }, want: attest.ErrInvalid},
		{name: "sub with space", token: func(e *env) string { return e.token(set("sub", "api admin")) }, want: attest.ErrInvalid},
		{name: "sub with bidi override", token: func(e *env) string { return e.token(set("sub", "api\u202eadmin")) }, want: attest.ErrInvalid},
		{name: "sub too long", token: func(e *env) string { return e.token(set("sub", strings.Repeat("a", 1025))) }, want: attest.ErrInvalid},
		{name: "sub at max length", token: func(e *env) string { return e.token(set("sub", strings.Repeat("a", 1024))) }},
		{name: "jti not a string", token: func(e *env) string { return e.token(set("jti", 7)) }, want: attest.ErrInvalid},

		// algorithms and keys
		{name: "alg none", direct: true, token: func(e *env) string { return signRaw(t, "none", hdr("none", "es1"), e.claims(), nil) }, want: attest.ErrMalformed},
		{name: "alg None", token: func(e *env) string { return signRaw(t, "None", hdr("None", ""), e.claims(), nil) }, want: attest.ErrMalformed},
		{name: "alg NONE with signature", token: func(e *env) string { return signRaw(t, "ES256", hdr("NONE", "es1"), e.claims(), k.es1) }, want: attest.ErrMalformed},
		{name: "alg nOnE", token: func(e *env) string { return signRaw(t, "nOnE", hdr("nOnE", "es1"), e.claims(), nil) }, want: attest.ErrMalformed},
		{name: "HS256 with the public key PEM as secret", direct: true, token: func(e *env) string {
			der, err := x509.MarshalPKIXPublicKey(k.rs1.Public())
			if err != nil {
				t.Fatal(err)
			}
			secret := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
			return signRaw(t, "HS256", hdr("HS256", "rs1"), e.claims(), secret)
		}, want: attest.ErrMalformed},
		{name: "alg RS256 with the ES256 key's kid", token: func(e *env) string {
			return signRaw(t, "RS256", hdr("RS256", "es1"), e.claims(), k.rs1)
		}, want: attest.ErrInvalid, wantText: "does not fit"},
		{name: "alg ES384 with a P-256 key", token: func(e *env) string {
			return signRaw(t, "ES384", hdr("ES384", "es1"), e.claims(), k.es1)
		}, want: attest.ErrInvalid, wantText: "does not fit"},
		{name: "alg PS256 with the RS256 key (JWK alg pins RS256)", token: func(e *env) string {
			return signRaw(t, "PS256", hdr("PS256", "rs1"), e.claims(), k.rs1)
		}, want: attest.ErrInvalid, wantText: "does not fit"},
		{name: "alg not in the upstream's list", token: func(e *env) string {
			return signRaw(t, "ES256", hdr("ES256", "es1"), e.claims(), k.es1)
		}, want: attest.ErrInvalid, wantText: "not allowed"},
		{name: "tampered payload", token: func(e *env) string {
			good := strings.Split(e.token(), ".")
			evil := strings.Split(e.token(set("sub", "system:serviceaccount:kube-system:admin")), ".")
			return good[0] + "." + evil[1] + "." + good[2]
		}, want: attest.ErrInvalid, wantText: "signature"},
		{name: "tampered signature", token: func(e *env) string {
			p := strings.Split(e.token(), ".")
			sig, err := base64.RawURLEncoding.DecodeString(p[2])
			if err != nil {
				t.Fatal(err)
			}
			sig[10] ^= 1
			return p[0] + "." + p[1] + "." + b64(sig)
		}, want: attest.ErrInvalid},
		{name: "no kid, one ES256 key in the set", token: func(e *env) string {
			return signRaw(t, "ES256", hdr("ES256", ""), e.claims(), k.es1)
		}},
		{name: "unknown kid", token: func(e *env) string {
			return signRaw(t, "ES256", hdr("ES256", "es2"), e.claims(), k.es2)
		}, want: attest.ErrInvalid, wantText: "no key"},

		// shape
		{name: "oversized", token: func(e *env) string {
			return e.token(set("pad", strings.Repeat("a", attest.MaxTokenSize)))
		}, want: attest.ErrMalformed},
		{name: "oversized direct", direct: true, token: func(e *env) string {
			return e.token(set("pad", strings.Repeat("a", attest.MaxTokenSize)))
		}, want: attest.ErrMalformed},
		{name: "many dots", token: func(e *env) string { return e.token() + strings.Repeat(".", 3000) }, want: attest.ErrMalformed},
		{name: "JWE compact", direct: true, token: func(e *env) string {
			return b64([]byte(`{"alg":"RSA-OAEP","enc":"A256GCM","kid":"rs1"}`)) + ".ZW5j.aXY.Y2lwaGVy.dGFn"
		}, want: attest.ErrMalformed},
		{name: "JSON serialization", direct: true, token: func(e *env) string {
			p := strings.Split(e.token(), ".")
			return `{"payload":"` + p[1] + `","protected":"` + p[0] + `","signature":"` + p[2] + `"}`
		}, want: attest.ErrMalformed},
		{name: "crit header", direct: true, token: func(e *env) string {
			return signRaw(t, "ES256", hdr("ES256", "es1", "crit", []string{"exp"}, "exp", 1), e.claims(), k.es1)
		}, want: attest.ErrMalformed},
		{name: "b64 header", token: func(e *env) string {
			return signRaw(t, "ES256", hdr("ES256", "es1", "b64", false, "crit", []string{"b64"}), e.claims(), k.es1)
		}, want: attest.ErrMalformed},
		{name: "cty JWT", token: func(e *env) string {
			return signRaw(t, "ES256", hdr("ES256", "es1", "cty", "JWT"), e.claims(), k.es1)
		}, want: attest.ErrMalformed},
		{name: "zip header", token: func(e *env) string {
			return signRaw(t, "ES256", hdr("ES256", "es1", "zip", "DEF"), e.claims(), k.es1)
		}, want: attest.ErrMalformed},

		// keys named by the token are never used
		{name: "jku to attacker", token: func(e *env) string {
			return signRaw(t, "ES256", hdr("ES256", "attacker", "jku", e.canary.srv.URL+"/jwks"), e.claims(), k.attacker)
		}, want: attest.ErrInvalid},
		{name: "x5u to attacker", token: func(e *env) string {
			return signRaw(t, "ES256", hdr("ES256", "attacker", "x5u", e.canary.srv.URL+"/cert.pem"), e.claims(), k.attacker)
		}, want: attest.ErrInvalid},
		{name: "embedded jwk with a known kid", token: func(e *env) string {
			return signRaw(t, "ES256", hdr("ES256", "es1", "jwk", jwk(k.attacker, "es1", "ES256")), e.claims(), k.attacker)
		}, want: attest.ErrInvalid, wantText: "signature"},
		{name: "embedded jwk without kid", direct: true, token: func(e *env) string {
			return signRaw(t, "ES256", hdr("ES256", "", "jwk", jwk(k.attacker, "", "ES256"), "jku", e.canary.srv.URL), e.claims(), k.attacker)
		}, want: attest.ErrInvalid, wantText: "signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			if tt.name == "alg not in the upstream's list" {
				e = newEnv(t, func(c *oidc.Config) { c.Algorithms = []string{"RS256"} })
			}
			typ := tt.tokenType
			if typ == "" {
				typ = attest.TypeJWT
			}
			raw := tt.token(e)
			var w *attest.Workload
			var err error
			if tt.direct {
				w, err = e.v.Verify(t.Context(), raw, typ)
			} else {
				w, err = e.attest(raw, typ)
			}
			if n := e.canary.hits.Load(); n != 0 {
				t.Fatalf("attacker's server was hit %d times", n)
			}
			if tt.want == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
			} else {
				if !errors.Is(err, tt.want) {
					t.Fatalf("error %v, want %v", err, tt.want)
				}
				if w != nil {
					t.Fatalf("workload %+v with an error", w)
				}
				if !strings.Contains(err.Error(), tt.wantText) {
					t.Fatalf("error %q does not say %q", err, tt.wantText)
				}
				if strings.Contains(err.Error(), raw) || strings.Contains(err.Error(), strings.Split(raw, ".")[0]+".") {
					t.Fatalf("error contains the token")
				}
			}
			if tt.check != nil {
				tt.check(t, e, w)
			}
		})
	}
}
