package spiffe_test

import (
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/attest/attrs"
	"github.com/safeconduct/safeconduct/attest/spiffe"
)

// jwtEnv is trust domains A and B, each its own upstream over its own bundle file,
// behind one Router.
type jwtEnv struct {
	clock  *fakeClock
	a, b   *spiffe.Verifier
	router *attest.Router
}

func newJWTEnv(t *testing.T, mods ...func(*spiffe.Config)) *jwtEnv {
	e := &jwtEnv{clock: newClock()}
	e.a = fileVerifier(t, tdA, goodBundle(t, tdA), e.clock, mods...)
	e.b = fileVerifier(t, tdB, goodBundle(t, tdB), e.clock)
	e.router = router(t, e.a, e.b)
	return e
}

// jwtCase is one JWT-SVID case: a token-making function and the expected outcome.
type jwtCase struct {
	name      string
	token     func(t *testing.T, now time.Time) string
	tokenType string // default attest.TypeJWT
	direct    bool   // verifier A directly, bypassing the Router
	want      error  // nil: attested
	wantText  string
	check     func(t *testing.T, now time.Time, w *attest.Workload)
}

func TestVerifyJWTSVID(t *testing.T) {
	k := testKeys()
	idA := "spiffe://" + tdA + "/ns/prod/sa/api"
	tests := []jwtCase{
		{name: "good ES256", token: func(t *testing.T, now time.Time) string { return svidToken(t, now) },
			check: func(t *testing.T, now time.Time, w *attest.Workload) {
				switch {
				case w.Upstream != "spiffe-"+tdA, w.Issuer != "spiffe://"+tdA, w.Subject != idA, w.ID != idA,
					len(w.Audience) != 1 || w.Audience[0] != aud, !w.Expiry.Equal(now.Add(300 * time.Second)),
					!w.IssuedAt.Equal(now.Add(-10 * time.Second)), w.TokenID != "":
					t.Fatalf("workload %+v", w)
				}
				want := map[string]string{"sub": idA, "iss": "spiffe://" + tdA, "trust_domain": tdA, "path": "/ns/prod/sa/api"}
				if len(w.Attributes) != len(want) {
					t.Fatalf("attributes %v", w.Attributes)
				}
				for name, v := range want {
					if w.Attributes[name] != v {
						t.Fatalf("attribute %s = %q, want %q", name, w.Attributes[name], v)
					}
				}
				if w.Claims["sub"] != idA {
					t.Fatalf("claims %v", w.Claims)
				}
			}},
		{name: "good direct", direct: true, token: func(t *testing.T, now time.Time) string { return svidToken(t, now) }},
		{name: "good RS256", token: func(t *testing.T, now time.Time) string {
			return signRaw(t, "RS256", hdr("RS256", "rsa", "typ", "JWT"), claims(t, now), k.aRSA)
		}},
		{name: "good PS256", token: func(t *testing.T, now time.Time) string {
			return signRaw(t, "PS256", hdr("PS256", "rsa"), claims(t, now), k.aRSA)
		}},
		{name: "good ES384", token: func(t *testing.T, now time.Time) string {
			return signRaw(t, "ES384", hdr("ES384", "a384"), claims(t, now), k.a384)
		}},
		{name: "typ absent", token: func(t *testing.T, now time.Time) string {
			return signRaw(t, "ES256", hdr("ES256", "a1"), claims(t, now), k.a1)
		}},
		{name: "presented as access token", tokenType: attest.TypeAccessToken,
			token: func(t *testing.T, now time.Time) string { return svidToken(t, now) }},
		{name: "aud as a string", token: func(t *testing.T, now time.Time) string { return svidToken(t, now, set("aud", "other.example")) }},
		{name: "aud among others", token: func(t *testing.T, now time.Time) string {
			return svidToken(t, now, set("aud", []string{"x", aud}))
		}},
		{name: "no iat, with nbf and jti", token: func(t *testing.T, now time.Time) string {
			return svidToken(t, now, set("iat", nil), set("nbf", now.Unix()-5), set("jti", "j1"))
		}, check: func(t *testing.T, _ time.Time, w *attest.Workload) {
			if !w.IssuedAt.IsZero() || w.TokenID != "j1" {
				t.Fatalf("workload %+v", w)
			}
		}},
		{name: "iss no upstream claims (SPIRE jwt_issuer)", token: func(t *testing.T, now time.Time) string {
			return svidToken(t, now, set("iss", "https://spire.a.example"))
		}, check: func(t *testing.T, _ time.Time, w *attest.Workload) {
			if w.Issuer != "spiffe://"+tdA {
				t.Fatalf("issuer %q", w.Issuer)
			}
		}},

		// trust domains
		{name: "other trust domain's SVID to A directly", direct: true, token: func(t *testing.T, now time.Time) string {
			return signRaw(t, "ES256", hdr("ES256", "b1"), claims(t, now, set("sub", "spiffe://"+tdB+"/w")), k.b1)
		}, want: attest.ErrInvalid, wantText: `SPIFFE ID of trust domain "b.example"`},
		{name: "signed by B's key, claiming A", token: func(t *testing.T, now time.Time) string {
			return signRaw(t, "ES256", hdr("ES256", "b1"), claims(t, now), k.b1)
		}, want: attest.ErrInvalid, wantText: "no JWT authority"},
		{name: "signed by B's key under A's kid, claiming A", token: func(t *testing.T, now time.Time) string {
			return signRaw(t, "ES256", hdr("ES256", "a1"), claims(t, now), k.b1)
		}, want: attest.ErrInvalid, wantText: "signature"},
		{name: "signed by A's key, claiming B", token: func(t *testing.T, now time.Time) string {
			return signRaw(t, "ES256", hdr("ES256", "a1"), claims(t, now, set("sub", "spiffe://"+tdB+"/w")), k.a1)
		}, want: attest.ErrInvalid, wantText: "no JWT authority"},
		{name: "unknown trust domain", token: func(t *testing.T, now time.Time) string {
			return svidToken(t, now, set("sub", "spiffe://"+tdC+"/w"))
		}, want: attest.ErrUnknownIssuer},
		{name: "trust domain ID, no workload path", token: func(t *testing.T, now time.Time) string {
			return svidToken(t, now, set("sub", "spiffe://"+tdA))
		}, want: attest.ErrInvalid, wantText: "not a workload"},

		// time
		{name: "expired", token: func(t *testing.T, now time.Time) string { return svidToken(t, now, set("exp", now.Unix()-31)) },
			want: attest.ErrInvalid, wantText: "expired"},
		{name: "expired within skew", token: func(t *testing.T, now time.Time) string { return svidToken(t, now, set("exp", now.Unix()-29)) }},
		{name: "exp missing", token: func(t *testing.T, now time.Time) string { return svidToken(t, now, set("exp", nil)) },
			want: attest.ErrInvalid, wantText: "exp missing"},
		{name: "exp as string", token: func(t *testing.T, now time.Time) string { return svidToken(t, now, set("exp", "4102444800")) },
			want: attest.ErrInvalid},
		{name: "nbf in the future", token: func(t *testing.T, now time.Time) string { return svidToken(t, now, set("nbf", now.Unix()+31)) },
			want: attest.ErrInvalid},
		{name: "iat in the future", token: func(t *testing.T, now time.Time) string { return svidToken(t, now, set("iat", now.Unix()+31)) },
			want: attest.ErrInvalid},
		{name: "expired and forged", token: func(t *testing.T, now time.Time) string {
			return signRaw(t, "ES256", hdr("ES256", "a1"), claims(t, now, set("exp", 1000)), k.attacker)
		}, want: attest.ErrInvalid, wantText: "signature"},

		// audience
		{name: "aud missing", token: func(t *testing.T, now time.Time) string { return svidToken(t, now, set("aud", nil)) },
			want: attest.ErrInvalid, wantText: "aud missing"},
		{name: "extra audience only", token: func(t *testing.T, now time.Time) string {
			return svidToken(t, now, set("aud", []string{"someone-else", "another"}))
		}, want: attest.ErrInvalid, wantText: "no accepted audience"},
		{name: "aud empty array", token: func(t *testing.T, now time.Time) string { return svidToken(t, now, set("aud", []string{})) },
			want: attest.ErrInvalid},
		{name: "aud empty string", token: func(t *testing.T, now time.Time) string { return svidToken(t, now, set("aud", "")) },
			want: attest.ErrInvalid},
		{name: "aud with a number", token: func(t *testing.T, now time.Time) string { return svidToken(t, now, set("aud", []any{aud, 1})) },
			want: attest.ErrInvalid},

		// keys and algorithms
		{name: "unknown kid", token: func(t *testing.T, now time.Time) string {
			return signRaw(t, "ES256", hdr("ES256", "nope"), claims(t, now), k.a1)
		}, want: attest.ErrInvalid, wantText: "no JWT authority"},
		{name: "kid missing", token: func(t *testing.T, now time.Time) string {
			return signRaw(t, "ES256", hdr("ES256", ""), claims(t, now), k.a1)
		}, want: attest.ErrInvalid, wantText: "kid missing"},
		{name: "alg none", token: func(t *testing.T, now time.Time) string {
			return signRaw(t, "none", hdr("none", "a1"), claims(t, now), nil) + "c2ln"
		}, want: attest.ErrMalformed},
		{name: "alg none direct", direct: true, token: func(t *testing.T, now time.Time) string {
			return signRaw(t, "none", hdr("none", "a1"), claims(t, now), nil) + "c2ln"
		}, want: attest.ErrMalformed},
		{name: "alg HS256 keyed with the public key", token: func(t *testing.T, now time.Time) string {
			der, err := x509.MarshalPKIXPublicKey(k.a1.Public())
			if err != nil {
				t.Fatal(err)
			}
			return signRaw(t, "HS256", hdr("HS256", "a1"), claims(t, now), der)
		}, want: attest.ErrMalformed},
		{name: "alg HS256 direct", direct: true, token: func(t *testing.T, now time.Time) string {
			return signRaw(t, "HS256", hdr("HS256", "a1"), claims(t, now), []byte("secret"))
		}, want: attest.ErrMalformed},
		{name: "alg EdDSA (not a JWT-SVID algorithm)", token: func(t *testing.T, now time.Time) string {
			return signRaw(t, "EdDSA", hdr("EdDSA", "a1"), claims(t, now), nil) + "c2ln"
		}, want: attest.ErrInvalid, wantText: "alg EdDSA not allowed"},
		{name: "alg ES384 on a P-256 key", token: func(t *testing.T, now time.Time) string {
			return signRaw(t, "ES384", hdr("ES384", "a1"), claims(t, now), k.a1)
		}, want: attest.ErrInvalid, wantText: "does not fit"},
		{name: "alg RS256 on an EC key", token: func(t *testing.T, now time.Time) string {
			return signRaw(t, "RS256", hdr("RS256", "a1"), claims(t, now), k.aRSA)
		}, want: attest.ErrInvalid, wantText: "does not fit"},
		{name: "typ at+jwt", token: func(t *testing.T, now time.Time) string {
			return signRaw(t, "ES256", hdr("ES256", "a1", "typ", "at+jwt"), claims(t, now), k.a1)
		}, want: attest.ErrInvalid, wantText: "typ"},
		{name: "typ jwt lower case", token: func(t *testing.T, now time.Time) string {
			return signRaw(t, "ES256", hdr("ES256", "a1", "typ", "jwt"), claims(t, now), k.a1)
		}, want: attest.ErrInvalid, wantText: "typ"},
		{name: "jku ignored, key from the bundle", token: func(t *testing.T, now time.Time) string {
			return signRaw(t, "ES256", hdr("ES256", "a1", "jku", "https://attacker.example/jwks"), claims(t, now), k.attacker)
		}, want: attest.ErrInvalid, wantText: "signature"},
		{name: "jti not a string", token: func(t *testing.T, now time.Time) string { return svidToken(t, now, set("jti", 7)) },
			want: attest.ErrInvalid},
		{name: "iss not a string", token: func(t *testing.T, now time.Time) string { return svidToken(t, now, set("iss", 7)) },
			want: attest.ErrMalformed},
	}

	// Malformed SPIFFE IDs in sub: refused by the Router (ErrMalformed, or as no
	// SPIFFE ID at all) and by the Verifier directly (ErrInvalid).
	malformed := map[string]string{
		"uppercase trust domain": "spiffe://A.example/w",
		"uppercase scheme":       "SPIFFE://a.example/w",
		"port":                   "spiffe://a.example:443/w",
		"userinfo":               "spiffe://user@a.example/w",
		"query":                  "spiffe://a.example/w?x=1",
		"fragment":               "spiffe://a.example/w#x",
		"dot segment":            "spiffe://a.example/ns/./w",
		"dot dot segment":        "spiffe://a.example/ns/../w",
		"empty segment":          "spiffe://a.example/ns//w",
		"trailing slash":         "spiffe://a.example/ns/w/",
		"percent-encoding":       "spiffe://a.example/ns/w%2Fx",
		"no trust domain":        "spiffe:///w",
		"space":                  "spiffe://a.example/w x",
		"not a SPIFFE ID":        "system:serviceaccount:prod:api",
		"empty":                  "",
	}
	for name, sub := range malformed {
		tok := func(t *testing.T, now time.Time) string { return svidToken(t, now, set("sub", sub)) }
		tests = append(tests,
			jwtCase{name: "sub " + name, token: tok, want: attest.ErrMalformed},
			jwtCase{name: "sub " + name + " direct", direct: true, token: tok, want: attest.ErrInvalid})
	}
	// A well-formed SPIFFE ID too long for a subject reaches the verifier, which
	// refuses it.
	tests = append(tests, jwtCase{name: "sub too long", token: func(t *testing.T, now time.Time) string {
		return svidToken(t, now, set("sub", "spiffe://a.example/"+strings.Repeat("a", attest.MaxSubjectLength)))
	}, want: attest.ErrInvalid, wantText: "bytes"})

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newJWTEnv(t)
			now := e.clock.Now()
			raw := tt.token(t, now)
			typ := tt.tokenType
			if typ == "" {
				typ = attest.TypeJWT
			}
			var w *attest.Workload
			var err error
			if tt.direct {
				w, err = e.a.Verify(t.Context(), raw, typ)
			} else {
				w, err = e.router.Attest(t.Context(), raw, typ)
			}
			if tt.want != nil {
				t.Logf("refused: %v", err)
				if !errors.Is(err, tt.want) {
					t.Fatalf("error %v, want %v", err, tt.want)
				}
				if tt.wantText != "" && !strings.Contains(err.Error(), tt.wantText) {
					t.Fatalf("error %q lacks %q", err, tt.wantText)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if tt.check != nil {
				tt.check(t, now, w)
			}
			// Differential: whatever is attested, go-spiffe's own ParseAndValidate
			// accepts as well, with the same ID (the clock is the real one, near
			// enough, and the trust domain's bundle only).
			bundle, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString(tdA), goodBundle(t, tdA))
			if err != nil {
				t.Fatal(err)
			}
			svid, err := jwtsvid.ParseAndValidate(raw, bundle, []string{aud, "other.example"})
			if err != nil {
				t.Fatalf("attested, but go-spiffe refuses: %v", err)
			}
			if svid.ID.String() != w.Subject {
				t.Fatalf("go-spiffe ID %s, ours %s", svid.ID, w.Subject)
			}
		})
	}
}

// The audience expectation can never be empty (go-spiffe skips the check then).
func TestAudienceRequired(t *testing.T) {
	for name, auds := range map[string][]string{"nil": nil, "empty": {}, "empty entry": {aud, ""}} {
		_, err := spiffe.New(t.Context(), spiffe.Config{
			Name: "a", TrustDomain: tdA, Audiences: auds,
			BundleFile: writeFile(t, "b.json", goodBundle(t, tdA)),
		})
		if err == nil || !strings.Contains(err.Error(), "audience") {
			t.Errorf("%s: got %v", name, err)
		}
	}
}

// Issuer breadth and path templates.
func TestBreadthAndTemplates(t *testing.T) {
	templates := []string{
		"/ns/{namespace}/sa/{service_account}",
		"/ns/{namespace}/*/{service_account}",
		"/region/{region}/{service}",
	}
	tests := []struct {
		name     string
		sub      string
		subjects []string
		want     map[string]string // captures; nil: refused
	}{
		{name: "first template", sub: "/ns/prod/sa/api", want: map[string]string{"namespace": "prod", "service_account": "api"}},
		{name: "second template", sub: "/ns/prod/pod/api", want: map[string]string{"namespace": "prod", "service_account": "api"}},
		{name: "third template", sub: "/region/eu/billing", want: map[string]string{"region": "eu", "service": "billing"}},
		{name: "no template", sub: "/ns/prod/sa/api/extra", want: map[string]string{}},
		{name: "too short", sub: "/ns/prod", want: map[string]string{}},
		{name: "inside breadth", sub: "/ns/prod/sa/api", subjects: []string{"spiffe://a.example/ns/prod/*"},
			want: map[string]string{"namespace": "prod", "service_account": "api"}},
		{name: "second pattern", sub: "/region/eu/billing", subjects: []string{"spiffe://a.example/ns/prod/*", "spiffe://a.example/region/*"},
			want: map[string]string{"region": "eu", "service": "billing"}},
		{name: "outside breadth", sub: "/ns/kube-system/sa/admin", subjects: []string{"spiffe://a.example/ns/prod/*"}},
		{name: "namespace extending prod", sub: "/ns/prod-evil/sa/api", subjects: []string{"spiffe://a.example/ns/prod/*"}},
		{name: "literal pattern", sub: "/ns/prod/sa/api", subjects: []string{"spiffe://a.example/ns/prod/sa/api"},
			want: map[string]string{"namespace": "prod", "service_account": "api"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newClock()
			v := fileVerifier(t, tdA, goodBundle(t, tdA), clock, func(c *spiffe.Config) {
				c.PathTemplates = templates
				c.Subjects = tt.subjects
			})
			id := "spiffe://" + tdA + tt.sub
			check := func(what string, w *attest.Workload, err error) {
				t.Helper()
				if tt.want == nil {
					if !errors.Is(err, attest.ErrInvalid) || !strings.Contains(err.Error(), "outside the upstream's allowed subjects") {
						t.Fatalf("%s: got %v, want refusal for breadth", what, err)
					}
					return
				}
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				if len(w.Attributes) != 4+len(tt.want) || w.Attributes["path"] != tt.sub || w.Attributes["sub"] != id {
					t.Fatalf("%s: attributes %v", what, w.Attributes)
				}
				for name, val := range tt.want {
					if w.Attributes[name] != val {
						t.Fatalf("%s: attribute %s = %q, want %q", what, name, w.Attributes[name], val)
					}
				}
			}
			w, err := v.Verify(t.Context(), svidToken(t, clock.Now(), set("sub", id)), attest.TypeJWT)
			check("JWT-SVID", w, err)
			w, err = v.VerifyX509(t.Context(), []*x509.Certificate{testCAs()[tdA].svid(t, id)})
			check("X.509-SVID", w, err)
		})
	}
}

// The upstream's guard applies to JWT-SVIDs and X.509-SVIDs alike, over the
// path templates' captures, after the breadth check.
func TestGuard(t *testing.T) {
	g, err := attrs.NewGuard(attrs.GuardConfig{
		Condition:       `attributes.service_account != "admin"`,
		AttributeBounds: map[string][]string{"namespace": {"prod", "prod-*"}},
		Known:           []string{"sub", "iss", "trust_domain", "path", "namespace", "service_account"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ sub, check string }{
		{"/ns/prod/sa/api", ""},
		{"/ns/prod-2/sa/api", ""},
		{"/ns/payments/sa/api", "attribute_bounds.namespace"},
		{"/ns/prod/sa/admin", "condition"},
		// No template matches: service_account is absent, and the condition,
		// which reads it unguarded, fails closed.
		{"/other", "condition"},
	} {
		clock := newClock()
		v := fileVerifier(t, tdA, goodBundle(t, tdA), clock, func(c *spiffe.Config) {
			c.PathTemplates = []string{"/ns/{namespace}/sa/{service_account}"}
			c.Guard = g
		})
		id := "spiffe://" + tdA + tc.sub
		check := func(what string, w *attest.Workload, err error) {
			t.Helper()
			var ce *attest.ConditionError
			switch {
			case tc.check == "" && err != nil:
				t.Fatalf("%s %s: %v", what, tc.sub, err)
			case tc.check == "":
			case !errors.As(err, &ce) || ce.Check != tc.check || !errors.Is(err, attest.ErrInvalid) || w != nil:
				t.Fatalf("%s %s: got %v, want refusal by %s", what, tc.sub, err, tc.check)
			}
		}
		w, err := v.Verify(t.Context(), svidToken(t, clock.Now(), set("sub", id)), attest.TypeJWT)
		check("JWT-SVID", w, err)
		w, err = v.VerifyX509(t.Context(), []*x509.Certificate{testCAs()[tdA].svid(t, id)})
		check("X.509-SVID", w, err)
	}
}

// MaxTokenAge applies to JWT-SVIDs as max_token_age does to OIDC tokens: iat
// required, at most MaxTokenAge (plus ClockSkew) old. Without it, an old or absent
// iat is accepted.
func TestMaxTokenAge(t *testing.T) {
	bounded := newJWTEnv(t, func(c *spiffe.Config) { c.MaxTokenAge = 10 * time.Minute })
	unbounded := newJWTEnv(t)
	now := bounded.clock.Now()
	for _, tc := range []struct {
		iat           any
		want, wantAny error
	}{
		{now.Unix() - 300, nil, nil},
		{now.Unix() - 630, nil, nil}, // within the 30 s skew
		{now.Unix() - 631, attest.ErrInvalid, nil},
		{nil, attest.ErrInvalid, nil},
	} {
		for _, e := range []struct {
			name string
			v    *spiffe.Verifier
			want error
		}{{"bounded", bounded.a, tc.want}, {"unbounded", unbounded.a, tc.wantAny}} {
			_, err := e.v.Verify(t.Context(), svidToken(t, now, set("iat", tc.iat)), attest.TypeJWT)
			if !errors.Is(err, e.want) || (e.want == nil && err != nil) {
				t.Errorf("%s, iat %v: got %v, want %v", e.name, tc.iat, err, e.want)
			}
			if e.want != nil && err != nil && !strings.Contains(err.Error(), "max token age") {
				t.Errorf("%s, iat %v: %v does not name the max token age", e.name, tc.iat, err)
			}
		}
	}
	if _, err := spiffe.New(t.Context(), spiffe.Config{
		Name: "a", TrustDomain: tdA, Audiences: []string{aud}, MaxTokenAge: -time.Second,
		BundleFile: writeFile(t, "b.json", goodBundle(t, tdA)),
	}); err == nil || !strings.Contains(err.Error(), "max_token_age") {
		t.Errorf("negative MaxTokenAge: got %v", err)
	}
}
