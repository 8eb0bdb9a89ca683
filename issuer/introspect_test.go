package issuer

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/testissuer"
	"github.com/safeconduct/safeconduct/internal/testspiffe"
	"github.com/safeconduct/safeconduct/revocation"
)

const (
	auditAPI   = "https://audit.internal"
	vault      = "https://vault.internal"
	auditSVID  = "spiffe://prod.example/ns/audit/sa/api"
	paySVID    = "spiffe://prod.example/ns/payments/sa/api"
	otherSVID  = "spiffe://prod.example/ns/payments/sa/other"
	ledgerAPI  = "ledger-api"
	ciRunnerID = "ci-runner"
)

// rsPolicy: cluster-a payments to ledger and audit (testPolicy), prod SVIDs to
// ledger and (sender-constrained) to vault, and secops may introspect.
const rsPolicy = testPolicy + `  - name: svid-ledger
    effect: allow
    upstreams: [prod]
    subjects: ["spiffe://prod.example/ns/payments/sa/*"]
    audiences: ["https://ledger.internal"]
  - name: svid-vault
    effect: allow
    upstreams: [prod]
    subjects: ["spiffe://prod.example/ns/payments/sa/*"]
    audiences: ["https://vault.internal"]
    require_sender_constraint: true
admin:
  - name: secops
    upstreams: [cluster-a]
    subjects: ["` + secops + `"]
    actions: [introspect]
    within_upstreams: ["*"]
`

// rsFixture is an STS with resource servers: ledger-api (private_key_jwt, for
// the ledger), the audit API (mTLS, by SPIFFE ID) and ci-runner (a client that
// is no resource server), and a SPIFFE upstream whose workloads use mTLS.
type rsFixture struct {
	*testSTS
	td             *testspiffe.TrustDomain
	ledgerKeys, ci *testissuer.Issuer
}

func startRS(t *testing.T) *rsFixture {
	t.Helper()
	f := &rsFixture{td: testspiffe.New(t, "prod.example"), ledgerKeys: testissuer.New(t, ledgerAPI), ci: testissuer.New(t, ciRunnerID)}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "prod-bundle.json"), f.td.Bundle(t), 0o600); err != nil {
		t.Fatal(err)
	}
	f.testSTS = startSTS(t, stsOptions{
		dir:        dir,
		policy:     rsPolicy,
		clientCert: true,
		tlsExtra:   ", client_certificates: request",
		upstreams: `  - name: prod
    kind: spiffe
    trust_domain: prod.example
    audiences: [sts]
    bundle_file: prod-bundle.json
`,
		extra: "clients:\n" +
			"  - {id: ledger-api, jwks_file: ledger.jwks, introspect_audiences: [\"https://ledger.internal\"]}\n" +
			"  - {id: ci-runner, jwks_file: ci.jwks}\n" +
			"  - {id: \"" + auditSVID + "\", introspect_audiences: [\"https://audit.internal\"]}\n",
		files: map[string]string{"ledger.jwks": string(f.ledgerKeys.JWKS()), "ci.jwks": string(f.ci.JWKS())},
	})
	return f
}

// mint exchanges a payments token (cluster-a) for aud; form edits it first.
func (f *rsFixture) mint(t *testing.T, aud string, edits ...func(url.Values)) string {
	t.Helper()
	form := f.form(f.a.Token(t, payments))
	form.Set("audience", aud)
	form.Del("scope")
	for _, e := range edits {
		e(form)
	}
	r := f.post(t, form)
	if r.status != http.StatusOK {
		t.Fatalf("exchange: %d %s", r.status, r.raw)
	}
	return r.body["access_token"].(string)
}

// mintSVID exchanges the X.509-SVID of id over mTLS for aud.
func (f *rsFixture) mintSVID(t *testing.T, id, aud string) string {
	t.Helper()
	r := f.via(f.mtls(t, id)).post(t, spiffeForm(id, TypeX509SVID, aud))
	if r.status != http.StatusOK {
		t.Fatalf("exchange: %d %s", r.status, r.raw)
	}
	return r.body["access_token"].(string)
}

func (f *rsFixture) mtls(t *testing.T, id string) *http.Client {
	return f.withClientCert(f.td.TLSCertificate(t, id))
}

// via is the fixture's STS called through c.
func (f *rsFixture) via(c *http.Client) *testSTS {
	ts := *f.testSTS
	ts.client = c
	return &ts
}

// clientAuth adds a fresh client assertion of c (aud: the endpoint called).
func (f *rsFixture) clientAuth(t *testing.T, c *testissuer.Issuer, path string, form url.Values) url.Values {
	t.Helper()
	return withAssertion(form, assertion(t, f.testSTS, c, func(m map[string]any) { m["aud"] = f.url + path }))
}

// mintRaw signs claims with the STS's active key (for tokens no exchange
// mints: expired, another issuer's).
func (f *rsFixture) mintRaw(t *testing.T, iss string, edit func(*claims)) string {
	t.Helper()
	m, err := newMinter(iss, f.srv.currentRing().active)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	c := &claims{Subject: payments, Audience: []string{ledger}, IssuedAt: now.Add(-time.Minute), Expiry: now.Add(5 * time.Minute),
		ID: newTokenID(), ClientID: payments, Upstream: "cluster-a"}
	edit(c)
	tok, err := m.mint(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// introspect posts form to /introspect.
func (ts *testSTS) introspect(t *testing.T, form url.Values, edit func(*http.Request)) *reply {
	t.Helper()
	return ts.do(t, http.MethodPost, PathIntrospect, "application/x-www-form-urlencoded", form.Encode(), edit)
}

// wantInactive: 200 and exactly {"active":false}.
func wantInactive(t *testing.T, r *reply) {
	t.Helper()
	if r.status != http.StatusOK || strings.TrimSpace(r.raw) != `{"active":false}` {
		t.Fatalf("want exactly {\"active\":false}: %d %s", r.status, r.raw)
	}
}

func wantActive(t *testing.T, r *reply, aud string) {
	t.Helper()
	if r.status != http.StatusOK || r.body["active"] != true || r.body["token_type"] != "Bearer" {
		t.Fatalf("want active: %d %s", r.status, r.raw)
	}
	if !hasAudience(r.body, []string{aud}) || r.body["sub"] == nil || r.body["exp"] == nil || r.body["jti"] == nil {
		t.Fatalf("active answer lacks the token's claims: %s", r.raw)
	}
	if r.header.Get("Cache-Control") != "no-store" || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		t.Fatalf("headers %v", r.header)
	}
}

// TestIntrospectionForResourceServers: a resource server authenticated as a
// client sees its own audience's tokens active and everything else inactive,
// with no admin rule; admins keep introspecting any token.
func TestIntrospectionForResourceServers(t *testing.T) {
	f := startRS(t)
	ledgerTok := f.mint(t, ledger)
	auditTok := f.mint(t, auditAPI)
	revokedTok := f.mint(t, ledger)
	if _, err := f.srv.store.Create(context.Background(), revocation.Entry{Kind: revocation.KindRevoke,
		Selector: "jti=" + decodeSegment(t, revokedTok, 1)["jti"].(string), Reason: "test", Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	expired := f.mintRaw(t, f.url, func(c *claims) { c.IssuedAt, c.Expiry = time.Now().Add(-time.Hour), time.Now().Add(-time.Minute) })
	otherIssuer := f.mintRaw(t, "https://other-sts.example", func(*claims) {})
	multiAud := f.mintRaw(t, f.url, func(c *claims) { c.Audience = []string{"https://elsewhere.example", ledger} })

	ledgerRS := func(tok string) *reply {
		return f.introspect(t, f.clientAuth(t, f.ledgerKeys, PathIntrospect, url.Values{"token": {tok}}), nil)
	}
	t.Run("own audience is active", func(t *testing.T) {
		wantActive(t, ledgerRS(ledgerTok), ledger)
		wantActive(t, ledgerRS(multiAud), ledger)
	})
	for name, tok := range map[string]string{
		"foreign audience":          auditTok,
		"revoked":                   revokedTok,
		"expired":                   expired,
		"another issuer (same key)": otherIssuer,
		"an upstream's token":       f.a.Token(t, payments),
		"garbage":                   "not.a.jwt",
		"tampered":                  ledgerTok[:len(ledgerTok)-4] + "AAAA",
	} {
		t.Run("inactive/"+name, func(t *testing.T) { wantInactive(t, ledgerRS(tok)) })
	}

	t.Run("mTLS resource server", func(t *testing.T) {
		rs := f.via(f.mtls(t, auditSVID))
		wantActive(t, rs.introspect(t, url.Values{"token": {auditTok}}, nil), auditAPI)
		wantInactive(t, rs.introspect(t, url.Values{"token": {ledgerTok}}, nil))
	})

	t.Run("assertion audiences", func(t *testing.T) {
		for _, aud := range []string{f.url, f.url + PathToken, f.url + PathIntrospect} {
			a := assertion(t, f.testSTS, f.ledgerKeys, func(m map[string]any) { m["aud"] = aud })
			wantActive(t, f.introspect(t, withAssertion(url.Values{"token": {ledgerTok}}, a), nil), ledger)
		}
	})

	t.Run("admins keep introspecting any token", func(t *testing.T) {
		admin := bearer(f.a.Token(t, secops))
		wantActive(t, f.introspect(t, url.Values{"token": {auditTok}}, admin), auditAPI)
		wantActive(t, f.introspect(t, url.Values{"token": {ledgerTok}}, admin), ledger)
		wantInactive(t, f.introspect(t, url.Values{"token": {revokedTok}}, admin))
	})

	replayed := f.clientAuth(t, f.ledgerKeys, PathIntrospect, url.Values{"token": {ledgerTok}})
	wantActive(t, f.introspect(t, replayed, nil), ledger)
	stranger := testissuer.New(t, ledgerAPI) // same client ID, other keys
	basic := func(r *http.Request) { r.SetBasicAuth(ledgerAPI, "secret") }
	for _, tc := range []struct {
		name   string
		client *http.Client
		method string
		ctype  string
		form   url.Values
		edit   func(*http.Request)
		status int
		code   string
	}{
		{name: "replayed assertion", form: replayed, status: 401, code: codeInvalidClient},
		{name: "assertion signed by other keys", form: f.clientAuth(t, stranger, PathIntrospect, url.Values{"token": {ledgerTok}}), status: 401, code: codeInvalidClient},
		{name: "assertion for another audience", form: withAssertion(url.Values{"token": {ledgerTok}},
			assertion(t, f.testSTS, f.ledgerKeys, func(m map[string]any) { m["aud"] = "https://elsewhere.example" })), status: 401, code: codeInvalidClient},
		{name: "unknown assertion type", form: func() url.Values {
			v := f.clientAuth(t, f.ledgerKeys, PathIntrospect, url.Values{"token": {ledgerTok}})
			v.Set("client_assertion_type", "urn:x")
			return v
		}(), status: 401, code: codeInvalidClient},
		{name: "client_id of another client", form: func() url.Values {
			v := f.clientAuth(t, f.ledgerKeys, PathIntrospect, url.Values{"token": {ledgerTok}})
			v.Set("client_id", ciRunnerID)
			return v
		}(), status: 401, code: codeInvalidClient},
		{name: "client that is no resource server", form: f.clientAuth(t, f.ci, PathIntrospect, url.Values{"token": {ledgerTok}}), status: 403, code: "unauthorized_client"},
		{name: "missing token", form: f.clientAuth(t, f.ledgerKeys, PathIntrospect, url.Values{}), status: 400, code: codeInvalidRequest},
		{name: "client secret", form: url.Values{"token": {ledgerTok}, "client_id": {ledgerAPI}, "client_secret": {"s"}}, status: 401, code: codeInvalidClient},
		{name: "basic authentication", form: url.Values{"token": {ledgerTok}}, edit: basic, status: 401, code: codeInvalidClient},
		{name: "assertion and mTLS", client: f.mtls(t, auditSVID), form: f.clientAuth(t, f.ledgerKeys, PathIntrospect, url.Values{"token": {ledgerTok}}), status: 400, code: codeInvalidRequest},
		{name: "assertion without type", form: url.Values{"token": {ledgerTok}, "client_assertion": {"x.y.z"}}, status: 401, code: "invalid_token"},
		{name: "no credential", form: url.Values{"token": {ledgerTok}}, status: 401, code: "invalid_token"},
		{name: "assertion in a JSON body", ctype: "application/json", form: f.clientAuth(t, f.ledgerKeys, PathIntrospect, url.Values{"token": {ledgerTok}}), status: 401, code: "invalid_token"},
		{name: "workload mTLS identity (no admin, no resource server)", client: f.mtls(t, paySVID), form: url.Values{"token": {ledgerTok}}, status: 403, code: "insufficient_scope"},
		{name: "workload bearer token", form: url.Values{"token": {ledgerTok}}, edit: bearer(f.a.Token(t, payments)), status: 403, code: "insufficient_scope"},
		{name: "STS token as bearer credential", form: url.Values{"token": {ledgerTok}}, edit: bearer(ledgerTok), status: 401, code: "invalid_token"},
		{name: "GET", method: http.MethodGet, form: url.Values{}, status: 405},
		{name: "PUT", method: http.MethodPut, form: url.Values{"token": {ledgerTok}}, status: 405},
	} {
		t.Run("refused/"+tc.name, func(t *testing.T) {
			ts := f.testSTS
			if tc.client != nil {
				ts = f.via(tc.client)
			}
			method, ctype := http.MethodPost, "application/x-www-form-urlencoded"
			if tc.method != "" {
				method = tc.method
			}
			if tc.ctype != "" {
				ctype = tc.ctype
			}
			r := ts.do(t, method, PathIntrospect, ctype, tc.form.Encode(), tc.edit)
			if r.status != tc.status || (tc.code != "" && r.body["error"] != tc.code) {
				t.Fatalf("%d %s, want %d %s", r.status, r.raw, tc.status, tc.code)
			}
			if r.body["active"] != nil || strings.Contains(r.raw, payments) {
				t.Fatalf("a refusal tells about the token: %s", r.raw)
			}
		})
	}
	if strings.Contains(f.audit.String(), ledgerTok) {
		t.Fatal("the audit log holds a token")
	}
}

// TestDiscoveryAdvertisesIntrospectionAndRevocation: RFC 8414 metadata.
func TestDiscoveryAdvertisesIntrospectionAndRevocation(t *testing.T) {
	f := startRS(t)
	r := f.do(t, http.MethodGet, PathOAuthMeta, "", "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	strs := func(name string) []string {
		var out []string
		for _, v := range r.body[name].([]any) {
			out = append(out, v.(string))
		}
		return out
	}
	if r.body["introspection_endpoint"] != f.url+PathIntrospect || r.body["revocation_endpoint"] != f.url+PathRevoke {
		t.Fatalf("endpoints: %s", r.raw)
	}
	if got := strings.Join(strs("introspection_endpoint_auth_methods_supported"), " "); got != "tls_client_auth private_key_jwt" {
		t.Fatalf("introspection auth methods %q", got)
	}
	if got := strings.Join(strs("revocation_endpoint_auth_methods_supported"), " "); got != "none tls_client_auth private_key_jwt" {
		t.Fatalf("revocation auth methods %q", got)
	}
	if len(strs("introspection_endpoint_auth_signing_alg_values_supported")) == 0 || len(strs("revocation_endpoint_auth_signing_alg_values_supported")) == 0 {
		t.Fatalf("signing algorithms: %s", r.raw)
	}
	// Without registered private_key_jwt clients and without client
	// certificates requested, no client authenticates there: not advertised.
	plain := startSTS(t, stsOptions{})
	r = plain.do(t, http.MethodGet, PathOpenID, "", "", nil)
	if m, ok := r.body["introspection_endpoint_auth_methods_supported"]; ok {
		t.Fatalf("introspection auth methods without clients or client certificates: %v", m)
	}
	if r.body["introspection_endpoint"] != plain.url+PathIntrospect {
		t.Fatalf("introspection endpoint (admins) not advertised: %s", r.raw)
	}
}

// BenchmarkIntrospect is one introspection in process (no HTTP, no TLS): a
// resource server with a fresh private_key_jwt assertion per request (verified,
// and its jti claimed in the embedded store: a synced write), and an admin with
// a bearer token; both for an active token (signature, revoke and block checks).
func BenchmarkIntrospect(b *testing.B) {
	rsKeys := testissuer.New(b, ledgerAPI)
	ts := startSTS(b, stsOptions{
		policy: rsPolicy[:strings.Index(rsPolicy, "  - name: svid-ledger")] + "admin:\n  - {name: secops, upstreams: [cluster-a], subjects: [\"" + secops + "\"], actions: [introspect], within_upstreams: [\"*\"]}\n",
		extra:  "limits: {admin_per_ip_rps: -1}\nclients:\n  - {id: ledger-api, jwks_file: ledger.jwks, introspect_audiences: [\"https://ledger.internal\"]}\n",
		files:  map[string]string{"ledger.jwks": string(rsKeys.JWKS())},
	})
	ts.srv.audit = newAuditWriter(io.Discard, true, ts.srv.metrics, slog.New(slog.DiscardHandler), time.Now)
	ts.srv.auditLog = slog.New(newAuditHandler(ts.srv.audit, nil)).With(slog.String("log", "audit"))
	b.Cleanup(func() { _ = ts.srv.audit.close() })
	h := ts.srv.Handler()
	serve := func(body, auth string) {
		req := httptest.NewRequest(http.MethodPost, PathIntrospect, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != 200 || !strings.Contains(w.Body.String(), `"active":true`) {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
	w := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, PathToken, strings.NewReader(ts.form(ts.a.Token(b, payments)).Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	h.ServeHTTP(w, req)
	var minted struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &minted); err != nil || minted.AccessToken == "" {
		b.Fatalf("exchange: %d %s", w.Code, w.Body)
	}
	b.Run("resource-server-private_key_jwt", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			c := rsKeys.Claims(ledgerAPI)
			c["aud"], c["exp"] = ts.url, time.Now().Add(time.Minute).Unix()
			body := url.Values{"token": {minted.AccessToken}, "client_assertion_type": {AssertionTypeJWTBearer}, "client_assertion": {rsKeys.Sign(b, c)}}.Encode()
			b.StartTimer()
			serve(body, "")
		}
	})
	b.Run("admin-bearer", func(b *testing.B) {
		c := ts.a.Claims(secops)
		c["exp"] = time.Now().Add(time.Hour).Unix()
		auth, body := "Bearer "+ts.a.Sign(b, c), url.Values{"token": {minted.AccessToken}}.Encode()
		b.ReportAllocs()
		for b.Loop() {
			serve(body, auth)
		}
	})
}
