package hardening

import (
	"strings"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/stsclient"
)

// TestClaims: genuinely signed cluster-a tokens whose claims are unacceptable. The
// subjects would be granted by policy, so only the claim checks can refuse them.
func TestClaims(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	now := time.Now()
	// token signs cluster-a's valid claims for payments after edit.
	token := func(edit func(c map[string]any)) func(t *testing.T) string {
		return func(t *testing.T) string { return e.a.Token(t, payments, edit) }
	}
	set := func(name string, v any) func(t *testing.T) string {
		return token(func(c map[string]any) { c[name] = v })
	}
	del := func(name string) func(t *testing.T) string {
		return token(func(c map[string]any) { delete(c, name) })
	}
	e.run(t, []forgeCase{
		{name: "control: valid", token: token(func(map[string]any) {}), status: 200},
		{name: "control: aud array with one accepted value", token: set("aud", []string{"other", "sts"}), status: 200},
		{name: "control: no nbf, no iat", token: token(func(c map[string]any) { delete(c, "nbf"); delete(c, "iat") }), status: 200},

		{name: "expired an hour ago", token: set("exp", now.Add(-time.Hour).Unix())},
		{name: "expired beyond the clock skew", token: set("exp", now.Add(-2*time.Minute).Unix())},
		// Within the skew the token verifies, but less than a second of it is left.
		{name: "expired within the clock skew", token: set("exp", now.Add(-10*time.Second).Unix())},
		{name: "exp zero", token: set("exp", 0)},
		{name: "exp missing", token: del("exp")},
		{name: "exp a string", token: set("exp", "9999999999")},
		{name: "exp negative", token: set("exp", -1)},
		{name: "exp beyond the year 9999", token: set("exp", 1e15)},
		{name: "nbf in the future", token: set("nbf", now.Add(10*time.Minute).Unix())},
		{name: "nbf a string", token: set("nbf", "0")},
		{name: "iat in the future", token: set("iat", now.Add(10*time.Minute).Unix())},
		{name: "aud missing", token: del("aud")},
		{name: "aud empty string", token: set("aud", "")},
		{name: "aud empty array", token: set("aud", []string{})},
		{name: "aud array of an empty string", token: set("aud", []string{""})},
		{name: "aud null", token: set("aud", nil)},
		{name: "aud another audience", token: set("aud", "https://other.example")},
		{name: "aud accepted value in another case", token: set("aud", "STS")},
		{name: "aud a number", token: set("aud", 1)},
		{name: "aud array with a non-string", token: set("aud", []any{"sts", 1})},
		{name: "sub missing", token: del("sub")},
		{name: "sub empty", token: set("sub", "")},
		{name: "sub a number", token: set("sub", 42)},
		{name: "sub with a newline", token: set("sub", payments+"\n")},
		{name: "sub with a NUL", token: set("sub", payments+"\x00admin")},
		{name: "sub with a tab", token: set("sub", "system:serviceaccount:payments:\tapi")},
		{name: "sub with a carriage return", token: set("sub", payments+"\r\nX-Injected: 1")},
		{name: "sub with DEL", token: set("sub", payments+"\x7f")},
		{name: "sub with a C1 control (NEL)", token: set("sub", payments+"\u0085")},
		{name: "sub with a right-to-left override", token: set("sub", "system:serviceaccount:payments:\u202eipa")},
		{name: "sub with a zero-width space", token: set("sub", payments+"\u200b")},
		{name: "sub with a trailing space", token: set("sub", payments+" ")},
		{name: "sub of absurd length", token: set("sub", "system:serviceaccount:payments:"+strings.Repeat("a", 2000))},
		{name: "jti a number", token: set("jti", 7)},
	})
}

// TestTokenTypeConfusion: a token whose typ names another kind than the one
// presented is refused; a generic JWT or no typ is not by itself a reason to refuse.
func TestTokenTypeConfusion(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.a
	// typed signs cluster-a's valid claims for payments under typ ("" = none).
	typed := func(typ string) func(t *testing.T) string {
		return func(t *testing.T) string {
			h := obj("alg", "ES256", "kid", a.ECKid, "typ", typ)
			if typ == "" {
				h = obj("alg", "ES256", "kid", a.ECKid)
			}
			return compact(t, h, mustJSON(a.Claims(payments)), "ES256", a.EC)
		}
	}
	idToken, accessToken, jwt := stsclient.TypeIDToken, stsclient.TypeAccessToken, stsclient.TypeJWT
	e.run(t, []forgeCase{
		{name: "at+jwt as id_token", token: typed("at+jwt"), typ: idToken},
		{name: "application/at+jwt as id_token", token: typed("application/at+jwt"), typ: idToken},
		{name: "AT+JWT as id_token", token: typed("AT+JWT"), typ: idToken},
		{name: "logout+jwt as access_token", token: typed("logout+jwt"), typ: accessToken},
		{name: "application/logout+jwt as access_token", token: typed("application/logout+jwt"), typ: accessToken},
		{name: "logout+jwt as jwt", token: typed("logout+jwt"), typ: jwt},
		{name: "logout+jwt as id_token", token: typed("logout+jwt"), typ: idToken},
		{name: "secevent+jwt as access_token", token: typed("secevent+jwt"), typ: accessToken},
		{name: "dpop+jwt as access_token", token: typed("dpop+jwt"), typ: accessToken},
		{name: "client-authentication+jwt as jwt", token: typed("client-authentication+jwt"), typ: jwt},

		{name: "control: JWT as id_token", token: typed("JWT"), typ: idToken, status: 200},
		{name: "control: jwt as access_token", token: typed("jwt"), typ: accessToken, status: 200},
		{name: "control: application/jwt as jwt", token: typed("application/jwt"), typ: jwt, status: 200},
		{name: "control: no typ as id_token", token: typed(""), typ: idToken, status: 200},
		{name: "control: no typ as access_token", token: typed(""), typ: accessToken, status: 200},
		{name: "control: at+jwt as access_token", token: typed("at+jwt"), typ: accessToken, status: 200},
		{name: "control: at+jwt as jwt", token: typed("at+jwt"), typ: jwt, status: 200},
	})
}
