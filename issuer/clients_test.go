package issuer

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/testissuer"
)

const deploy = "https://deploy.internal"

// clientPolicy adds a rule that grants deploy only to the authenticated client
// ci-runner.
const clientPolicy = testPolicy + `  - name: deploy-from-ci
    effect: allow
    upstreams: [cluster-a]
    subjects: ["system:serviceaccount:payments:*"]
    audiences: ["https://deploy.internal"]
    clients: [ci-runner]
`

// clientSTS starts an STS with two registered private_key_jwt clients:
// ci-runner (ES256 only) and laptop.
func clientSTS(t *testing.T) (*testSTS, *testissuer.Issuer, *testissuer.Issuer) {
	t.Helper()
	ci, laptop := testissuer.New(t, "ci-runner"), testissuer.New(t, "laptop")
	ts := startSTS(t, stsOptions{
		policy: clientPolicy,
		extra: "clients:\n  - id: ci-runner\n    jwks_file: ci-runner.jwks\n    algorithms: [ES256]\n" +
			"  - id: laptop\n    jwks_file: laptop.jwks\n",
		files: map[string]string{"ci-runner.jwks": string(ci.JWKS()), "laptop.jwks": string(laptop.JWKS())},
	})
	return ts, ci, laptop
}

// assertion is a valid client assertion of c for ts, after edits.
func assertion(t *testing.T, ts *testSTS, c *testissuer.Issuer, edits ...func(map[string]any)) string {
	t.Helper()
	claims := c.Claims(c.URL)
	claims["aud"] = ts.url + PathToken
	claims["exp"] = time.Now().Add(2 * time.Minute).Unix()
	for _, e := range edits {
		e(claims)
	}
	return c.Sign(t, claims)
}

func withAssertion(form url.Values, a string) url.Values {
	form.Set("client_assertion_type", AssertionTypeJWTBearer)
	form.Set("client_assertion", a)
	return form
}

func TestPrivateKeyJWT(t *testing.T) {
	ts, ci, laptop := clientSTS(t)
	deployForm := func() url.Values {
		f := ts.form(ts.a.Token(t, payments))
		f.Set("audience", deploy)
		f.Del("scope")
		return f
	}

	t.Run("required by policy", func(t *testing.T) {
		r := ts.post(t, deployForm())
		assertRefused(t, r, http.StatusUnauthorized, codeInvalidClient)
		if !strings.Contains(r.header.Get("WWW-Authenticate"), "invalid_client") {
			t.Fatalf("WWW-Authenticate %q", r.header.Get("WWW-Authenticate"))
		}
		if !strings.Contains(r.body["error_description"].(string), "required") {
			t.Fatalf("description %q does not say authentication is required", r.body["error_description"])
		}
	})

	t.Run("authenticated client gets the token", func(t *testing.T) {
		a := assertion(t, ts, ci)
		r := ts.post(t, withAssertion(deployForm(), a))
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.raw)
		}
		claims := decodeSegment(t, r.body["access_token"].(string), 1)
		if claims["client_id"] != "ci-runner" || claims["aud"] != deploy {
			t.Fatalf("claims %v", claims)
		}
		if _, ok := claims["cnf"]; ok {
			t.Fatal("a private_key_jwt client got a sender-constrained token")
		}
		if !strings.Contains(ts.audit.String(), `"client":"ci-runner","client_auth":"private_key_jwt"`) {
			t.Fatalf("audit does not record the client: %s", ts.audit.String())
		}

		// The same assertion again is a replay, whatever the request.
		r = ts.post(t, withAssertion(deployForm(), a))
		assertRefused(t, r, http.StatusUnauthorized, codeInvalidClient)
		if !strings.Contains(ts.audit.String(), "replay") {
			t.Fatal("audit does not say the assertion was replayed")
		}
	})

	t.Run("another registered client is refused by the rule", func(t *testing.T) {
		r := ts.post(t, withAssertion(deployForm(), assertion(t, ts, laptop)))
		assertRefused(t, r, http.StatusBadRequest, codeInvalidRequest)
		if !strings.Contains(ts.audit.String(), `does not list the authenticated client \"laptop\"`) {
			t.Fatalf("audit does not name the refused client: %s", ts.audit.String())
		}
	})

	t.Run("client authentication is optional elsewhere", func(t *testing.T) {
		r := ts.post(t, withAssertion(ts.form(ts.a.Token(t, payments)), assertion(t, ts, laptop)))
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.raw)
		}
		if c := decodeSegment(t, r.body["access_token"].(string), 1); c["client_id"] != "laptop" {
			t.Fatalf("client_id %v", c["client_id"])
		}
		if r := ts.post(t, ts.form(ts.a.Token(t, payments))); r.status != 200 {
			t.Fatalf("public client: %d %s", r.status, r.raw)
		}
	})

	t.Run("issuer as audience", func(t *testing.T) {
		a := assertion(t, ts, ci, func(c map[string]any) { c["aud"] = ts.url })
		if r := ts.post(t, withAssertion(deployForm(), a)); r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.raw)
		}
	})

	stranger := testissuer.New(t, "ci-runner") // same client ID, other keys
	unknown := testissuer.New(t, "nobody")
	bad := []struct {
		name   string
		form   func() url.Values
		status int
		code   string
	}{
		{"wrong audience", func() url.Values {
			return withAssertion(deployForm(), assertion(t, ts, ci, func(c map[string]any) { c["aud"] = "https://elsewhere.example/token" }))
		}, 401, codeInvalidClient},
		{"expired", func() url.Values {
			return withAssertion(deployForm(), assertion(t, ts, ci, func(c map[string]any) {
				c["exp"], c["iat"], c["nbf"] = time.Now().Add(-time.Hour).Unix(), time.Now().Add(-2*time.Hour).Unix(), time.Now().Add(-2*time.Hour).Unix()
			}))
		}, 401, codeInvalidClient},
		{"valid for an hour", func() url.Values {
			return withAssertion(deployForm(), assertion(t, ts, ci, func(c map[string]any) { c["exp"] = time.Now().Add(time.Hour).Unix() }))
		}, 401, codeInvalidClient},
		{"no jti", func() url.Values {
			return withAssertion(deployForm(), assertion(t, ts, ci, func(c map[string]any) { delete(c, "jti") }))
		}, 401, codeInvalidClient},
		{"sub is not the client", func() url.Values {
			return withAssertion(deployForm(), assertion(t, ts, ci, func(c map[string]any) { c["sub"] = "laptop" }))
		}, 401, codeInvalidClient},
		{"signed with another key", func() url.Values { return withAssertion(deployForm(), assertion(t, ts, stranger)) }, 401, codeInvalidClient},
		{"unregistered client", func() url.Values { return withAssertion(deployForm(), assertion(t, ts, unknown)) }, 401, codeInvalidClient},
		{"client_id disagrees", func() url.Values {
			f := withAssertion(deployForm(), assertion(t, ts, ci))
			f.Set("client_id", "laptop")
			return f
		}, 401, codeInvalidClient},
		{"algorithm the client may not use", func() url.Values {
			c := ci.Claims("ci-runner")
			c["aud"], c["exp"] = ts.url+PathToken, time.Now().Add(time.Minute).Unix()
			return withAssertion(deployForm(), ci.SignRS256(t, c))
		}, 401, codeInvalidClient},
		{"unsupported assertion type", func() url.Values {
			f := withAssertion(deployForm(), assertion(t, ts, ci))
			f.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:saml2-bearer")
			return f
		}, 401, codeInvalidClient},
		{"not a JWT", func() url.Values { return withAssertion(deployForm(), "abc.def") }, 401, codeInvalidClient},
		{"assertion without its type", func() url.Values {
			f := deployForm()
			f.Set("client_assertion", assertion(t, ts, ci))
			return f
		}, 400, codeInvalidRequest},
		{"repeated assertion", func() url.Values {
			f := withAssertion(deployForm(), assertion(t, ts, ci))
			f.Add("client_assertion", assertion(t, ts, ci))
			return f
		}, 400, codeInvalidRequest},
		{"assertion and client_secret", func() url.Values {
			f := withAssertion(deployForm(), assertion(t, ts, ci))
			f.Set("client_secret", "s3cret")
			return f
		}, 400, codeInvalidRequest},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			r := ts.post(t, c.form())
			assertRefused(t, r, c.status, c.code)
			if c.status == 401 {
				if r.body["error_description"] != errClientAuth.Description {
					t.Fatalf("description %q tells more than that authentication failed", r.body["error_description"])
				}
				if r.header.Get("WWW-Authenticate") == "" {
					t.Fatal("401 without WWW-Authenticate")
				}
			}
		})
	}

	t.Run("assertion and basic auth", func(t *testing.T) {
		r := ts.do(t, http.MethodPost, PathToken, "application/x-www-form-urlencoded",
			withAssertion(deployForm(), assertion(t, ts, ci)).Encode(), func(r *http.Request) { r.SetBasicAuth("ci-runner", "x") })
		assertRefused(t, r, 400, codeInvalidRequest)
	})

	t.Run("discovery", func(t *testing.T) {
		r := ts.do(t, http.MethodGet, PathOpenID, "", "", nil)
		methods := toStrings(r.body["token_endpoint_auth_methods_supported"])
		// This listener requests no client certificates: no tls_client_auth.
		if !slices.Contains(methods, "private_key_jwt") || slices.Contains(methods, "tls_client_auth") {
			t.Fatalf("auth methods %v", methods)
		}
		if algs := toStrings(r.body["token_endpoint_auth_signing_alg_values_supported"]); !slices.Contains(algs, "ES256") || slices.Contains(algs, "none") {
			t.Fatalf("auth signing algs %v", algs)
		}
	})
}

// TestPrivateKeyJWTWithoutClients: without registered clients, an assertion is
// refused and discovery does not offer private_key_jwt.
func TestPrivateKeyJWTWithoutClients(t *testing.T) {
	ts := startSTS(t, stsOptions{})
	c := testissuer.New(t, "ci-runner")
	r := ts.post(t, withAssertion(ts.form(ts.a.Token(t, payments)), assertion(t, ts, c)))
	assertRefused(t, r, http.StatusUnauthorized, codeInvalidClient)
	d := ts.do(t, http.MethodGet, PathOpenID, "", "", nil)
	if slices.Contains(toStrings(d.body["token_endpoint_auth_methods_supported"]), "private_key_jwt") {
		t.Fatal("discovery offers private_key_jwt with no client registered")
	}
}

// TestOneTimeUpstream: a token of an upstream marked one_time is exchanged once;
// a replay, a token without jti, and all but one of concurrent uses are refused.
func TestOneTimeUpstream(t *testing.T) {
	ts := startSTS(t, stsOptions{aExtra: "    one_time: true\n"})
	tok := ts.a.Token(t, payments)
	if r := ts.post(t, ts.form(tok)); r.status != 200 {
		t.Fatalf("first use: %d %s", r.status, r.raw)
	}
	r := ts.post(t, ts.form(tok))
	assertRefused(t, r, http.StatusBadRequest, codeInvalidRequest)
	if r.body["error_description"] != errSubjectRejected.Description {
		t.Fatalf("a replay is told apart from other refusals: %q", r.body["error_description"])
	}
	if !strings.Contains(ts.audit.String(), "already used") {
		t.Fatal("audit does not record the replay")
	}
	assertRefused(t, ts.post(t, ts.form(ts.a.Token(t, payments, func(c map[string]any) { delete(c, "jti") }))), 400, codeInvalidRequest)

	// A refused request (target not granted) does not use the token up.
	tok = ts.a.Token(t, payments)
	f := ts.form(tok)
	f.Set("audience", "https://not-granted.example")
	assertRefused(t, ts.post(t, f), 400, codeInvalidTarget)
	if r := ts.post(t, ts.form(tok)); r.status != 200 {
		t.Fatalf("after a refused request: %d %s", r.status, r.raw)
	}

	// Concurrent uses of one token: exactly one succeeds.
	tok = ts.a.Token(t, payments)
	var wg sync.WaitGroup
	statuses := make(chan int, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := ts.client.PostForm(ts.url+PathToken, ts.form(tok))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(statuses)
	ok := 0
	for s := range statuses {
		if s == 200 {
			ok++
		} else if s != 400 {
			t.Errorf("status %d", s)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of 16 concurrent uses of a one-time token succeeded", ok)
	}

	// Other upstreams are not one-time.
	tok = ts.b.Token(t, payments)
	for i := range 2 {
		if r := ts.post(t, ts.form(tok)); r.status != 200 {
			t.Fatalf("use %d of a cluster-b token: %d %s", i, r.status, r.raw)
		}
	}
}

// TestOneTimeStoreDown: when the replay check cannot reach the store, the
// exchange fails closed with 503.
func TestOneTimeStoreDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ts := startSTS(t, stsOptions{aExtra: "    one_time: true\n", revocation: fmt.Sprintf("revocation:\n  backend: redis\n  redis: {addrs: [%q]}\n", addr)})
	r := ts.post(t, ts.form(ts.a.Token(t, payments)))
	if r.status != 503 || r.header.Get("Retry-After") == "" {
		t.Fatalf("store down: %d %s", r.status, r.raw)
	}
	var body map[string]any
	_ = json.Unmarshal([]byte(r.raw), &body)
	if body["access_token"] != nil {
		t.Fatal("token minted with the store down")
	}
}
