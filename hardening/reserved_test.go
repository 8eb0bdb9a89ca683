package hardening

import (
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/testissuer"
)

// TestReplayOneTimeSubjectToken: cluster-a is marked one_time. A token is good for
// one exchange; its replay (also concurrent ones, also after a refused request
// for another target) is refused like any invalid token, and a token without
// jti is refused outright.
func TestReplayOneTimeSubjectToken(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, envOptions{clusterA: "    one_time: true\n"})
	a := e.a

	tok := a.Token(t, payments)
	e.wantIssued(t, e.exchange(t, tok, ""))
	replay := e.exchange(t, tok, "")
	e.wantError(t, replay, http.StatusBadRequest, "invalid_request", tok)
	// A replay looks exactly like a forged token.
	forged := e.exchange(t, compact(t, obj("alg", "ES256", "kid", a.ECKid, "typ", "JWT"), mustJSON(a.Claims(payments)), "ES256", newAttacker(t).EC), "")
	if string(replay.body) != string(forged.body) {
		t.Fatalf("a replay is told apart from a forgery:\n%s\n%s", replay.body, forged.body)
	}

	noJTI := a.Token(t, payments, func(c map[string]any) { delete(c, "jti") })
	e.wantError(t, e.exchange(t, noJTI, ""), http.StatusBadRequest, "invalid_request", noJTI)

	// A refused request does not use the token up; the next one does.
	tok = a.Token(t, payments)
	f := exchangeForm(tok, "")
	f.Set("audience", "https://not-granted.example")
	e.wantError(t, e.postToken(t, f.Encode()), http.StatusBadRequest, "invalid_target", tok)
	e.wantIssued(t, e.exchange(t, tok, ""))

	// 20 concurrent uses of one token: exactly one is issued.
	tok = a.Token(t, payments)
	var wg sync.WaitGroup
	var mu sync.Mutex
	issued := 0
	for range 20 {
		wg.Go(func() {
			r, err := e.send(http.MethodPost, "/token", formHeader(), exchangeForm(tok, "").Encode())
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			switch r.status {
			case http.StatusOK:
				issued++
			case http.StatusBadRequest:
			default:
				t.Errorf("status %d: %s", r.status, r.body)
			}
		})
	}
	wg.Wait()
	if issued != 1 {
		t.Fatalf("%d of 20 concurrent uses of a one-time token were issued", issued)
	}

	// cluster-b is not one_time.
	tb := e.b.Token(t, payments)
	e.wantIssued(t, e.exchange(t, tb, ""))
	e.wantIssued(t, e.exchange(t, tb, ""))
}

// TestClientAuthPrivateKeyJWT: a rule grants deploy only to the client
// ci-runner, which authenticates with private_key_jwt. Every failed client
// authentication is 401 invalid_client with WWW-Authenticate and one
// description; two methods at once are invalid_request; nothing leaks.
func TestClientAuthPrivateKeyJWT(t *testing.T) {
	t.Parallel()
	const deploy = "https://deploy.internal"
	ci := testissuer.New(t, "ci-runner")
	e := newEnvWith(t, envOptions{
		config: "clients:\n  - id: ci-runner\n    jwks_file: ci-runner.jwks\n    algorithms: [ES256]\n",
		policy: `  - name: deploy-from-ci
    effect: allow
    upstreams: [cluster-a]
    subjects: ["system:serviceaccount:payments:*"]
    audiences: ["` + deploy + `"]
    clients: [ci-runner]
`,
		files: map[string]string{"ci-runner.jwks": string(ci.JWKS())},
	})
	e.addIssuerKeys(t, ci)
	e.addSecrets("deploy-from-ci")
	att := newAttacker(t)

	claims := func(edits ...func(map[string]any)) map[string]any {
		c := ci.Claims("ci-runner")
		c["aud"] = e.url + "/token"
		c["exp"] = time.Now().Add(2 * time.Minute).Unix()
		for _, ed := range edits {
			ed(c)
		}
		return c
	}
	form := func(assertion string) url.Values {
		f := exchangeForm(e.a.Token(t, payments), "")
		f.Set("audience", deploy)
		f.Del("scope")
		if assertion != "" {
			f.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
			f.Set("client_assertion", assertion)
		}
		return f
	}
	post := func(t *testing.T, f url.Values, header http.Header) response {
		t.Helper()
		h := formHeader()
		for k, v := range header {
			h[k] = v
		}
		return e.do(t, http.MethodPost, "/token", h, f.Encode())
	}

	good := ci.Sign(t, claims())
	e.wantIssued(t, post(t, form(good), nil))

	var description string
	cases := []struct {
		name      string
		assertion func(t *testing.T) string
	}{
		{"replayed", func(*testing.T) string { return good }},
		{"signed by an attacker with the client's kid", func(t *testing.T) string {
			return compact(t, obj("alg", "ES256", "kid", ci.ECKid, "typ", "JWT"), mustJSON(claims()), "ES256", att.EC)
		}},
		{"alg none", func(t *testing.T) string {
			return compact(t, obj("alg", "none", "typ", "JWT"), mustJSON(claims()), "none", nil)
		}},
		{"HS256 keyed with the client's public key", func(t *testing.T) string {
			return compact(t, obj("alg", "HS256", "kid", ci.ECKid, "typ", "JWT"), mustJSON(claims()), "HS256", testissuer.PublicPEM(&ci.EC.PublicKey))
		}},
		{"jwk header with the attacker's key", func(t *testing.T) string {
			return compact(t, `{"alg":"ES256","typ":"JWT","jwk":`+string(att.JWK(t))+`}`, mustJSON(claims()), "ES256", att.EC)
		}},
		{"RS256, outside the client's algorithms", func(t *testing.T) string { return ci.SignRS256(t, claims()) }},
		{"audience of another server", func(t *testing.T) string {
			return ci.Sign(t, claims(func(c map[string]any) { c["aud"] = "https://other-sts.example/token" }))
		}},
		{"expired", func(t *testing.T) string {
			old := time.Now().Add(-time.Hour)
			return ci.Sign(t, claims(func(c map[string]any) { c["exp"], c["iat"], c["nbf"] = old.Unix(), old.Unix()-60, old.Unix()-60 }))
		}},
		{"valid for a day", func(t *testing.T) string {
			return ci.Sign(t, claims(func(c map[string]any) { c["exp"] = time.Now().Add(24 * time.Hour).Unix() }))
		}},
		{"no jti", func(t *testing.T) string { return ci.Sign(t, claims(func(c map[string]any) { delete(c, "jti") })) }},
		{"sub names another client", func(t *testing.T) string {
			return ci.Sign(t, claims(func(c map[string]any) { c["sub"] = "laptop" }))
		}},
		{"unregistered client", func(t *testing.T) string {
			return ci.Sign(t, claims(func(c map[string]any) { c["iss"], c["sub"] = "laptop", "laptop" }))
		}},
		{"a workload token as assertion", func(t *testing.T) string { return e.a.Token(t, payments) }},
		{"JWE", func(*testing.T) string { return "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := tc.assertion(t)
			r := post(t, form(a), nil)
			e.wantError(t, r, http.StatusUnauthorized, "invalid_client", a)
			if r.header.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
			if description == "" {
				description = string(r.body)
			} else if string(r.body) != description {
				t.Fatalf("client authentication failures are told apart:\n%s\n%s", description, r.body)
			}
		})
	}

	t.Run("no client authentication where a rule requires it", func(t *testing.T) {
		r := post(t, form(""), nil)
		e.wantError(t, r, http.StatusUnauthorized, "invalid_client")
	})
	t.Run("assertion and HTTP Basic", func(t *testing.T) {
		a := ci.Sign(t, claims())
		e.wantError(t, post(t, form(a), http.Header{"Authorization": {"Basic Y2ktcnVubmVyOng="}}), http.StatusBadRequest, "invalid_request", a)
	})
	t.Run("assertion sent twice", func(t *testing.T) {
		a := ci.Sign(t, claims())
		f := form(a)
		f.Add("client_assertion", a)
		e.wantError(t, post(t, f, nil), http.StatusBadRequest, "invalid_request", a)
	})
}
