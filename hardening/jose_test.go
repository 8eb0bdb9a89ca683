package hardening

import (
	"bytes"
	"compress/flate"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/internal/testissuer"
)

// forgeCase is one forged subject token: how to make it, and the answer it gets.
type forgeCase struct {
	name  string
	token func(t *testing.T) string
	// typ is the subject_token_type ("" = jwt).
	typ string
	// status and code of the answer; 0 = 400 invalid_request.
	status int
	code   string
}

// run sends every case as a subject token and checks its answer. A case expecting
// 200 must be issued; any other must be refused with nothing revealed.
func (e *env) run(t *testing.T, cases []forgeCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok := tc.token(t)
			r := e.exchange(t, tok, tc.typ)
			switch {
			case tc.status == http.StatusOK:
				e.wantIssued(t, r)
			case tc.status == 0:
				e.wantError(t, r, http.StatusBadRequest, "invalid_request", tok)
			default:
				e.wantError(t, r, tc.status, tc.code, tok)
			}
		})
	}
}

// TestJOSEParsing: algorithm attacks, unsupported and dangerous headers, other
// serializations, compression, duplicate member names and sizes. Every forged
// token names a configured issuer and carries claims that policy would grant, so
// the JOSE check under test is the only thing that can refuse it.
func TestJOSEParsing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.a, e.b
	att := newAttacker(t)
	e.addSecrets(att.ECKid)

	claimsA := func() string { return mustJSON(a.Claims(payments)) }
	claimsB := func() string { return mustJSON(b.Claims(payments)) }
	// signedA is a token of cluster-a with header h, really signed by its EC key.
	signedA := func(t *testing.T, h string) string { return compact(t, h, claimsA(), "ES256", a.EC) }

	var cases []forgeCase
	cases = append(cases,
		forgeCase{name: "control: cluster-a ES256", token: func(t *testing.T) string {
			return signedA(t, obj("alg", "ES256", "kid", a.ECKid, "typ", "JWT"))
		}, status: 200},
		forgeCase{name: "control: cluster-b RS256", token: func(t *testing.T) string { return b.SignRS256(t, b.Claims(payments)) }, status: 200},
	)

	// alg none, in every spelling, with an empty and with a junk signature.
	for _, alg := range []string{"none", "None", "NONE", "nOnE"} {
		for _, sig := range []struct{ name, value string }{{"empty signature", ""}, {"junk signature", "c2lnbmF0dXJl"}} {
			cases = append(cases, forgeCase{name: "alg " + alg + " " + sig.name,
				token: func(*testing.T) string {
					return b64([]byte(obj("alg", alg, "kid", a.ECKid, "typ", "JWT"))) + "." + b64([]byte(claimsA())) + "." + sig.value
				}})
		}
	}
	// Key confusion: HMAC keyed with the upstream's public key, in the forms a
	// confused verifier would use it.
	for _, tc := range []struct {
		name, alg, kid string
		secret         func(t *testing.T) []byte
	}{
		{"HS256 keyed with the RSA public key PEM", "HS256", a.RSAKid, func(*testing.T) []byte { return testissuer.PublicPEM(&a.RSA.PublicKey) }},
		{"HS256 keyed with the EC public key PEM", "HS256", a.ECKid, func(*testing.T) []byte { return testissuer.PublicPEM(&a.EC.PublicKey) }},
		{"HS256 keyed with the EC public JWK", "HS256", a.ECKid, func(t *testing.T) []byte { return publicJWK(t, &a.EC.PublicKey, a.ECKid) }},
		{"HS384 keyed with the RSA public key PEM", "HS384", a.RSAKid, func(*testing.T) []byte { return testissuer.PublicPEM(&a.RSA.PublicKey) }},
		{"HS512 keyed with the RSA public key PEM", "HS512", a.RSAKid, func(*testing.T) []byte { return testissuer.PublicPEM(&a.RSA.PublicKey) }},
		{"hs256 lower case", "hs256", a.ECKid, func(*testing.T) []byte { return testissuer.PublicPEM(&a.EC.PublicKey) }},
		{"HS256 without kid", "HS256", "", func(*testing.T) []byte { return testissuer.PublicPEM(&a.EC.PublicKey) }},
		{"HS256 on the all-algorithms upstream", "HS256", b.ECKid, func(*testing.T) []byte { return testissuer.PublicPEM(&b.EC.PublicKey) }},
	} {
		cases = append(cases, forgeCase{name: "key confusion " + tc.name, token: func(t *testing.T) string {
			h := obj("alg", tc.alg, "kid", tc.kid, "typ", "JWT")
			if tc.kid == "" {
				h = obj("alg", tc.alg, "typ", "JWT")
			}
			payload := claimsA()
			if tc.kid == b.ECKid {
				payload = claimsB()
			}
			return compact(t, h, payload, tc.alg, tc.secret(t))
		}})
	}
	cases = append(cases,
		// cluster-a allows ES256 only: a genuine RS256 signature by a key in its
		// own JWKS is still refused.
		forgeCase{name: "alg outside the allowlist: RS256 by cluster-a's own RSA key", token: func(t *testing.T) string {
			return a.SignRS256(t, a.Claims(payments))
		}},
		forgeCase{name: "alg outside the allowlist: PS256 by cluster-a's own RSA key", token: func(t *testing.T) string {
			return compact(t, obj("alg", "PS256", "kid", a.RSAKid, "typ", "JWT"), claimsA(), "PS256", a.RSA)
		}},
		forgeCase{name: "unknown alg ES256K", token: func(t *testing.T) string {
			return compact(t, obj("alg", "ES256K", "kid", a.ECKid), claimsA(), "ES256", a.EC)
		}},
		forgeCase{name: "alg with trailing space", token: func(t *testing.T) string {
			return compact(t, obj("alg", "ES256 ", "kid", a.ECKid), claimsA(), "ES256", a.EC)
		}},
		forgeCase{name: "alg not a string", token: func(t *testing.T) string {
			return compact(t, obj("alg", []string{"ES256"}, "kid", a.ECKid), claimsA(), "ES256", a.EC)
		}},
		forgeCase{name: "alg missing", token: func(t *testing.T) string {
			return compact(t, obj("kid", a.ECKid, "typ", "JWT"), claimsA(), "ES256", a.EC)
		}},
		// An alg that does not fit the key (cluster-b allows every algorithm, so
		// only the key fit can refuse these).
		forgeCase{name: "alg does not fit the key: PS256 by an RSA key published for RS256", token: func(t *testing.T) string {
			return compact(t, obj("alg", "PS256", "kid", b.RSAKid, "typ", "JWT"), claimsB(), "PS256", b.RSA)
		}},
		forgeCase{name: "alg does not fit the key: ES384 over the P-256 key", token: func(t *testing.T) string {
			return compact(t, obj("alg", "ES384", "kid", b.ECKid, "typ", "JWT"), claimsB(), "ES384", b.EC)
		}},
		forgeCase{name: "alg does not fit the key: RS256 naming the EC key", token: func(t *testing.T) string {
			return compact(t, obj("alg", "RS256", "kid", b.ECKid, "typ", "JWT"), claimsB(), "RS256", att.RSA)
		}},
		forgeCase{name: "alg does not fit the key: ES256 naming the RSA key", token: func(t *testing.T) string {
			return compact(t, obj("alg", "ES256", "kid", b.RSAKid, "typ", "JWT"), claimsB(), "ES256", att.EC)
		}},
		forgeCase{name: "alg does not fit the key: EdDSA naming the EC key", token: func(t *testing.T) string {
			return compact(t, obj("alg", "EdDSA", "kid", b.ECKid, "typ", "JWT"), claimsB(), "EdDSA", att.Ed)
		}},
		forgeCase{name: "signature of another key under the right kid", token: func(t *testing.T) string {
			return compact(t, obj("alg", "ES256", "kid", a.ECKid, "typ", "JWT"), claimsA(), "ES256", att.EC)
		}},
		forgeCase{name: "signature over another payload", token: func(t *testing.T) string {
			good := signedA(t, obj("alg", "ES256", "kid", a.ECKid, "typ", "JWT"))
			other := a.Claims(payments)
			other["scope"] = "admin"
			parts := strings.Split(good, ".")
			return parts[0] + "." + b64([]byte(mustJSON(other))) + "." + parts[2]
		}},
	)

	// Headers that change how the token must be processed.
	for _, tc := range []struct{ name, header string }{
		{"crit with an unknown extension", obj("alg", "ES256", "kid", a.ECKid, "typ", "JWT", "crit", []string{"urn:hardening:ext"}, "urn:hardening:ext", true)},
		{"crit naming a registered claim", obj("alg", "ES256", "kid", a.ECKid, "crit", []string{"exp"}, "exp", 1)},
		{"crit empty", obj("alg", "ES256", "kid", a.ECKid, "crit", []string{})},
		{"b64 false with crit", obj("alg", "ES256", "kid", a.ECKid, "b64", false, "crit", []string{"b64"})},
		{"b64 false without crit", obj("alg", "ES256", "kid", a.ECKid, "b64", false)},
		{"b64 true", obj("alg", "ES256", "kid", a.ECKid, "b64", true, "crit", []string{"b64"})},
		{"enc in a JWS header", obj("alg", "ES256", "kid", a.ECKid, "enc", "A256GCM")},
		{"nested JWT cty JWT", obj("alg", "ES256", "kid", a.ECKid, "cty", "JWT")},
		{"nested JWT cty jwt", obj("alg", "ES256", "kid", a.ECKid, "cty", "jwt")},
		{"nested JWT cty application/JWT", obj("alg", "ES256", "kid", a.ECKid, "cty", "application/JWT")},
		{"kid not a string", obj("alg", "ES256", "kid", 7)},
		{"typ not a string", obj("alg", "ES256", "kid", a.ECKid, "typ", 1)},
		{"header nested too deep", obj("alg", "ES256", "kid", a.ECKid, "x", map[string]any{"a": map[string]any{"b": map[string]any{"c": map[string]any{"d": 1}}}})},
	} {
		cases = append(cases, forgeCase{name: tc.name, token: func(t *testing.T) string { return signedA(t, tc.header) }})
	}
	cases = append(cases,
		forgeCase{name: "nested JWT: a valid token as the payload", token: func(t *testing.T) string {
			inner := a.Token(t, payments)
			return compact(t, obj("alg", "ES256", "kid", a.ECKid, "cty", "JWT"), inner, "ES256", a.EC)
		}},
		forgeCase{name: "header not JSON", token: func(t *testing.T) string {
			return compact(t, "alg=ES256", claimsA(), "ES256", a.EC)
		}},
		forgeCase{name: "header a JSON array", token: func(t *testing.T) string {
			return compact(t, `[{"alg":"ES256"}]`, claimsA(), "ES256", a.EC)
		}},
		forgeCase{name: "payload a JSON array", token: func(t *testing.T) string {
			return compact(t, obj("alg", "ES256", "kid", a.ECKid), `[`+claimsA()+`]`, "ES256", a.EC)
		}},
		forgeCase{name: "payload two JSON objects", token: func(t *testing.T) string {
			return compact(t, obj("alg", "ES256", "kid", a.ECKid), claimsA()+claimsA(), "ES256", a.EC)
		}},
		forgeCase{name: "payload invalid UTF-8", token: func(t *testing.T) string {
			body := strings.TrimSuffix(claimsA(), "}") + `,"x":"` + "\xff" + `"}`
			return compact(t, obj("alg", "ES256", "kid", a.ECKid), body, "ES256", a.EC)
		}},
	)

	// Other serializations.
	cases = append(cases,
		forgeCase{name: "JWE compact (5 parts) encrypted to the upstream's key", token: func(t *testing.T) string {
			return jwe(t, a, a.Token(t, payments), "")
		}},
		forgeCase{name: "JWE compact with zip DEF", token: func(t *testing.T) string {
			return jwe(t, a, a.Token(t, payments), jose.DEFLATE)
		}},
		forgeCase{name: "JWE-shaped dir/A256GCM", token: func(t *testing.T) string {
			return b64([]byte(obj("alg", "dir", "enc", "A256GCM", "kid", a.ECKid))) + "..aXYxMjM0NTY3ODkw.Y2lwaGVydGV4dA.dGFn"
		}},
		forgeCase{name: "JSON serialization with two signatures", token: func(t *testing.T) string {
			s, err := jose.NewMultiSigner([]jose.SigningKey{
				{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: a.EC, KeyID: a.ECKid}},
				{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: att.EC, KeyID: att.ECKid}},
			}, nil)
			if err != nil {
				t.Fatal(err)
			}
			jws, err := s.Sign([]byte(claimsA()))
			if err != nil {
				t.Fatal(err)
			}
			return jws.FullSerialize()
		}},
		forgeCase{name: "flattened JSON serialization, one valid signature", token: func(t *testing.T) string {
			s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: a.EC, KeyID: a.ECKid}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			jws, err := s.Sign([]byte(claimsA()))
			if err != nil {
				t.Fatal(err)
			}
			return jws.FullSerialize()
		}},
	)

	// Compression: a DEFLATE bomb (about 10 KiB that inflates to 8 MiB) under a
	// zip header, genuinely signed. It must be refused on the header, unread.
	cases = append(cases, forgeCase{name: "zip DEF payload bomb", token: func(t *testing.T) string {
		c := a.Claims(payments)
		c["pad"] = strings.Repeat("A", 8<<20)
		var buf bytes.Buffer
		w, err := flate.NewWriter(&buf, flate.BestCompression)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write([]byte(mustJSON(c)))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		in := b64([]byte(obj("alg", "ES256", "kid", a.ECKid, "typ", "JWT", "zip", "DEF"))) + "." + b64(buf.Bytes())
		tok := in + "." + b64(rawSign(t, "ES256", a.EC, []byte(in)))
		if len(tok) >= 16<<10 {
			t.Fatalf("bomb of %d bytes: it must stay under the 16 KiB cap to reach the header check", len(tok))
		}
		return tok
	}})

	// Duplicate member names: a parser keeping the first and one keeping the last
	// would disagree on who the subject is, which issuer vouches, or when it ends.
	hdr := obj("alg", "ES256", "kid", a.ECKid, "typ", "JWT")
	dupPayload := func(pairs ...any) func(t *testing.T) string {
		return func(t *testing.T) string {
			c := a.Claims(payments)
			for i := 0; i < len(pairs); i += 2 {
				delete(c, pairs[i].(string))
			}
			body := strings.TrimSuffix(mustJSON(c), "}") + "," + strings.TrimPrefix(obj(pairs...), "{")
			return compact(t, hdr, body, "ES256", a.EC)
		}
	}
	cases = append(cases,
		forgeCase{name: "duplicate sub in the payload (allowed first)", token: dupPayload("sub", payments, "sub", outsider)},
		forgeCase{name: "duplicate sub in the payload (allowed last)", token: dupPayload("sub", outsider, "sub", payments)},
		forgeCase{name: "duplicate iss in the payload", token: dupPayload("iss", a.URL, "iss", b.URL)},
		forgeCase{name: "duplicate iss, the same value twice", token: dupPayload("iss", a.URL, "iss", a.URL)},
		forgeCase{name: "duplicate aud in the payload", token: dupPayload("aud", "sts", "aud", "other")},
		forgeCase{name: "duplicate exp in the payload", token: dupPayload("exp", time.Now().Add(-time.Hour).Unix(), "exp", time.Now().Add(time.Hour).Unix())},
		forgeCase{name: "duplicate sub spelled with an escape", token: func(t *testing.T) string {
			c := a.Claims(payments)
			body := strings.TrimSuffix(mustJSON(c), "}") + `,"\u0073ub":"` + outsider + `"}`
			return compact(t, hdr, body, "ES256", a.EC)
		}},
		forgeCase{name: "duplicate member in a nested object", token: func(t *testing.T) string {
			c := a.Claims(payments)
			body := strings.TrimSuffix(mustJSON(c), "}") + `,"kubernetes.io":{"namespace":"payments","namespace":"kube-system"}}`
			return compact(t, hdr, body, "ES256", a.EC)
		}},
		forgeCase{name: "duplicate alg in the header", token: func(t *testing.T) string {
			return signedA(t, obj("alg", "ES256", "kid", a.ECKid, "alg", "none"))
		}},
		forgeCase{name: "duplicate alg in the header, the same value", token: func(t *testing.T) string {
			return signedA(t, obj("alg", "ES256", "alg", "ES256", "kid", a.ECKid))
		}},
		forgeCase{name: "duplicate kid in the header", token: func(t *testing.T) string {
			return signedA(t, obj("alg", "ES256", "kid", att.ECKid, "kid", a.ECKid))
		}},
		forgeCase{name: "duplicate typ in the header", token: func(t *testing.T) string {
			return signedA(t, obj("alg", "ES256", "kid", a.ECKid, "typ", "JWT", "typ", "logout+jwt"))
		}},
	)

	// Sizes and shapes, refused before anything is split or decoded.
	cases = append(cases,
		forgeCase{name: "token over 16 KiB, genuinely signed", token: func(t *testing.T) string {
			c := a.Claims(payments)
			c["pad"] = strings.Repeat("A", 17<<10)
			return compact(t, hdr, mustJSON(c), "ES256", a.EC)
		}},
		forgeCase{name: "token of 60 KiB", token: func(*testing.T) string { return strings.Repeat("A", 60<<10) }},
		forgeCase{name: "thousands of dots", token: func(*testing.T) string { return strings.Repeat("a.", 8000) + "a" }},
		forgeCase{name: "only dots", token: func(*testing.T) string { return strings.Repeat(".", 16000) }},
		forgeCase{name: "four dots in a signed token", token: func(t *testing.T) string { return signedA(t, hdr) + ".x" }},
		forgeCase{name: "empty payload segment", token: func(t *testing.T) string {
			p := strings.Split(signedA(t, hdr), ".")
			return p[0] + ".." + p[2]
		}},
		forgeCase{name: "padded base64", token: func(t *testing.T) string {
			p := strings.Split(signedA(t, hdr), ".")
			return p[0] + "=." + p[1] + "." + p[2]
		}},
		forgeCase{name: "standard base64 alphabet", token: func(t *testing.T) string {
			p := strings.Split(signedA(t, hdr), ".")
			return p[0] + "." + p[1] + "." + strings.NewReplacer("-", "+", "_", "/").Replace(p[2]) + "+/"
		}},
		forgeCase{name: "trailing newline", token: func(t *testing.T) string { return signedA(t, hdr) + "\n" }},
		forgeCase{name: "leading space", token: func(t *testing.T) string { return " " + signedA(t, hdr) }},
		forgeCase{name: "NUL in the token", token: func(t *testing.T) string { return signedA(t, hdr) + "\x00" }},
	)
	e.run(t, cases)
}

// jwe is a compact JWE of plaintext encrypted to iss's RSA key.
func jwe(t *testing.T, iss *testissuer.Issuer, plaintext string, zip jose.CompressionAlgorithm) string {
	t.Helper()
	opts := &jose.EncrypterOptions{Compression: zip}
	enc, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: jose.RSA_OAEP_256, Key: &iss.RSA.PublicKey, KeyID: iss.RSAKid}, opts.WithContentType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	ct, err := enc.Encrypt([]byte(plaintext))
	if err != nil {
		t.Fatal(err)
	}
	s, err := ct.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(s, "."); n != 4 {
		t.Fatalf("JWE with %d dots", n)
	}
	return s
}
