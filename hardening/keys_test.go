package hardening

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"testing"
	"time"
)

// attackerKeyServer serves the attacker's JWKS and certificate at every path,
// counting requests: what a verifier that honours jku or x5u would fetch.
func attackerKeyServer(t *testing.T, att *attacker) *counter {
	t.Helper()
	jwks := att.JWKS(t)
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: att.CertDER})
	return newCounter(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/cert.pem" {
			_, _ = w.Write(cert)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(jwks)
	}))
}

// decoyIssuer is an OIDC issuer nobody configured, serving discovery and a JWKS of
// the attacker's key: everything a confused STS would need to accept the
// attacker's tokens, and a count of whoever asked.
func decoyIssuer(t *testing.T, att *attacker) *counter {
	t.Helper()
	var c *counter
	jwks := att.JWKS(t)
	c = newCounter(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/.well-known/openid-configuration" {
			_ = json.NewEncoder(w).Encode(map[string]any{
				"issuer": c.URL, "jwks_uri": c.URL + "/jwks",
				"response_types_supported": []string{"id_token"}, "subject_types_supported": []string{"public"},
				"id_token_signing_alg_values_supported": []string{"ES256"},
			})
			return
		}
		_, _ = w.Write(jwks)
	}))
	return c
}

// TestKeyInjection: keys named or carried by the token itself (jku, x5u, jwk, x5c)
// are never fetched nor trusted. The tokens are signed by the attacker's key, which
// the header links or embeds; the attacker's server must receive no request.
func TestKeyInjection(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	att := newAttacker(t)
	srv := attackerKeyServer(t, att)
	e.addSecrets(att.ECKid, srv.URL)
	x5c := []string{base64.StdEncoding.EncodeToString(att.CertDER)}

	type upstream struct {
		name   string
		claims func() map[string]any
		kid    string // the upstream's own EC kid
	}
	var cases []forgeCase
	for _, up := range []upstream{
		{"jwks_file upstream", func() map[string]any { return e.a.Claims(payments) }, e.a.ECKid},
		{"discovery upstream", func() map[string]any { return e.b.Claims(payments) }, e.b.ECKid},
	} {
		for _, h := range []struct {
			name   string
			header func() string
		}{
			{"jku", func() string { return obj("alg", "ES256", "kid", att.ECKid, "typ", "JWT", "jku", srv.URL+"/jwks.json") }},
			{"jku without kid", func() string { return obj("alg", "ES256", "typ", "JWT", "jku", srv.URL+"/jwks.json") }},
			{"jku with the upstream's kid", func() string { return obj("alg", "ES256", "kid", up.kid, "jku", srv.URL+"/jwks.json") }},
			{"x5u", func() string { return obj("alg", "ES256", "kid", att.ECKid, "x5u", srv.URL+"/cert.pem") }},
			{"jwk", func() string { return obj("alg", "ES256", "kid", att.ECKid, "jwk", att.JWK(t)) }},
			{"jwk with the upstream's kid", func() string { return obj("alg", "ES256", "kid", up.kid, "jwk", att.JWK(t)) }},
			{"jwk without kid", func() string { return obj("alg", "ES256", "jwk", att.JWK(t)) }},
			{"x5c", func() string { return obj("alg", "ES256", "kid", att.ECKid, "x5c", x5c) }},
			{"x5c with the upstream's kid", func() string { return obj("alg", "ES256", "kid", up.kid, "x5c", x5c) }},
			{"all four", func() string {
				return obj("alg", "ES256", "kid", att.ECKid, "jku", srv.URL+"/jwks.json", "x5u", srv.URL+"/cert.pem", "jwk", att.JWK(t), "x5c", x5c)
			}},
		} {
			cases = append(cases, forgeCase{name: up.name + " " + h.name, token: func(t *testing.T) string {
				return compact(t, h.header(), mustJSON(up.claims()), "ES256", att.EC)
			}})
		}
	}
	t.Run("forged", func(t *testing.T) { e.run(t, cases) })
	if hits := srv.Hits(); len(hits) != 0 {
		t.Fatalf("the STS fetched from the attacker's server: %v", hits)
	}
	t.Run("control: the upstreams still work", func(t *testing.T) {
		e.wantIssued(t, e.exchange(t, e.a.Token(t, payments), ""))
		e.wantIssued(t, e.exchange(t, e.b.Token(t, payments), ""))
	})
}

// TestIssuerMixUp: a token is checked only against the keys of the issuer it
// names, and naming an issuer no upstream claims costs no outbound request.
func TestIssuerMixUp(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.a, e.b
	att := newAttacker(t)
	decoy := decoyIssuer(t, att)
	e.addSecrets(att.ECKid, decoy.URL)

	withIss := func(c map[string]any, iss any) map[string]any {
		c["iss"] = iss
		return c
	}
	e.run(t, []forgeCase{
		{name: "control: cluster-a", token: func(t *testing.T) string { return a.Token(t, payments) }, status: 200},
		{name: "control: cluster-b", token: func(t *testing.T) string { return b.Token(t, payments) }, status: 200},
		{name: "iss cluster-a, signed by cluster-b's key under its kid", token: func(t *testing.T) string {
			return compact(t, obj("alg", "ES256", "kid", b.ECKid, "typ", "JWT"), mustJSON(a.Claims(payments)), "ES256", b.EC)
		}},
		{name: "iss cluster-a, signed by cluster-b's key under cluster-a's kid", token: func(t *testing.T) string {
			return compact(t, obj("alg", "ES256", "kid", a.ECKid, "typ", "JWT"), mustJSON(a.Claims(payments)), "ES256", b.EC)
		}},
		{name: "iss cluster-b, signed by cluster-a's key under its kid", token: func(t *testing.T) string {
			return compact(t, obj("alg", "ES256", "kid", a.ECKid, "typ", "JWT"), mustJSON(b.Claims(payments)), "ES256", a.EC)
		}},
		{name: "iss cluster-b, signed by cluster-a's RSA key", token: func(t *testing.T) string {
			return compact(t, obj("alg", "RS256", "kid", a.RSAKid, "typ", "JWT"), mustJSON(b.Claims(payments)), "RS256", a.RSA)
		}},
		{name: "iss cluster-b without kid, signed by cluster-a's key", token: func(t *testing.T) string {
			return compact(t, obj("alg", "ES256", "typ", "JWT"), mustJSON(b.Claims(payments)), "ES256", a.EC)
		}},
		{name: "iss cluster-b with a trailing slash, signed by cluster-b", token: func(t *testing.T) string {
			return b.Sign(t, withIss(b.Claims(payments), b.URL+"/"))
		}},
		{name: "iss cluster-a in upper case, signed by cluster-a", token: func(t *testing.T) string {
			return a.Sign(t, withIss(a.Claims(payments), "https://CLUSTER-A.example"))
		}},
		{name: "iss an array naming cluster-a", token: func(t *testing.T) string {
			return a.Sign(t, withIss(a.Claims(payments), []string{a.URL}))
		}},
		{name: "iss empty", token: func(t *testing.T) string { return a.Sign(t, withIss(a.Claims(payments), "")) }},
		{name: "iss missing", token: func(t *testing.T) string {
			c := a.Claims(payments)
			delete(c, "iss")
			return a.Sign(t, c)
		}},
		{name: "unconfigured issuer (the decoy)", token: func(t *testing.T) string {
			return compact(t, obj("alg", "ES256", "kid", att.ECKid, "typ", "JWT"), mustJSON(withIss(a.Claims(payments), decoy.URL)), "ES256", att.EC)
		}},
		{name: "unconfigured issuer (the decoy) with jku to it", token: func(t *testing.T) string {
			return compact(t, obj("alg", "ES256", "kid", att.ECKid, "jku", decoy.URL+"/jwks"), mustJSON(withIss(a.Claims(payments), decoy.URL)), "ES256", att.EC)
		}},
		{name: "unconfigured issuer on cluster-b's host with another path", token: func(t *testing.T) string {
			return compact(t, obj("alg", "ES256", "kid", att.ECKid), mustJSON(withIss(b.Claims(payments), b.URL+"/evil")), "ES256", att.EC)
		}},
	})
	if hits := decoy.Hits(); len(hits) != 0 {
		t.Fatalf("a token naming an unconfigured issuer caused outbound requests: %v", hits)
	}
}

// TestRefusalsLookAlike: a forged, expired, unknown-issuer, malformed or
// policy-denied subject token gets the very same answer, so a caller cannot probe
// which check failed (the detail is in the audit event only).
func TestRefusalsLookAlike(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.a
	att := newAttacker(t)
	claims := func() string { return mustJSON(a.Claims(payments)) }
	expiredClaims := a.Claims(payments)
	expiredClaims["exp"] = time.Now().Add(-time.Hour).Unix()
	tokens := map[string]string{
		"bad signature":      compact(t, obj("alg", "ES256", "kid", a.ECKid, "typ", "JWT"), claims(), "ES256", att.EC),
		"unknown kid":        compact(t, obj("alg", "ES256", "kid", att.ECKid, "typ", "JWT"), claims(), "ES256", att.EC),
		"expired":            a.Token(t, payments, func(c map[string]any) { c["exp"] = time.Now().Add(-time.Hour).Unix() }),
		"expired and forged": compact(t, obj("alg", "ES256", "kid", a.ECKid), mustJSON(expiredClaims), "ES256", att.EC),
		"unknown issuer":     compact(t, obj("alg", "ES256", "kid", att.ECKid), mustJSON(map[string]any{"iss": "https://unknown.example", "sub": payments, "aud": "sts", "exp": time.Now().Add(time.Hour).Unix()}), "ES256", att.EC),
		"wrong audience":     a.Token(t, payments, func(c map[string]any) { c["aud"] = "other" }),
		"denied by policy":   a.Token(t, outsider),
		"alg none":           b64([]byte(obj("alg", "none"))) + "." + b64([]byte(claims())) + ".x",
		"malformed":          "not.a.jwt",
		"JWE":                jwe(t, a, a.Token(t, payments), ""),
	}
	var first response
	var firstName string
	for name, tok := range tokens {
		r := e.exchange(t, tok, "")
		e.wantError(t, r, http.StatusBadRequest, "invalid_request", tok)
		if firstName == "" {
			first, firstName = r, name
			continue
		}
		if !bytes.Equal(r.body, first.body) || r.header.Get("Content-Type") != first.header.Get("Content-Type") {
			t.Errorf("%s is answered %s, %s is answered %s", name, r, firstName, first)
		}
	}
}
