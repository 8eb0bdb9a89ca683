package issuer

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/stsclient"
	"github.com/safeconduct/safeconduct/internal/testissuer"
	"github.com/safeconduct/safeconduct/internal/testproc"
	"github.com/safeconduct/safeconduct/policy"
	"github.com/safeconduct/safeconduct/revocation"
)

const (
	ledger     = "https://ledger.internal"
	payments   = "system:serviceaccount:payments:api"
	blocked    = "system:serviceaccount:payments:blocked"
	outsider   = "system:serviceaccount:billing:api"
	shortLived = "system:serviceaccount:batch:short"
)

const testPolicy = `rules:
  - name: payments-to-ledger
    effect: allow
    upstreams: [cluster-a, cluster-b]
    subjects: ["system:serviceaccount:payments:*"]
    audiences: ["https://ledger.internal", "https://audit.internal"]
    scopes: [ledger.read, ledger.write]
    max_ttl: 10m
  - name: short-to-ledger
    effect: allow
    upstreams: [cluster-a]
    subjects: ["system:serviceaccount:batch:short"]
    audiences: ["https://ledger.internal"]
    max_ttl: 2m
  - name: block-payments-blocked
    effect: deny
    upstreams: [cluster-a]
    subjects: ["system:serviceaccount:payments:blocked"]
`

// testSTS is an in-process STS on a real TLS listener, wired from a real config
// file by New, with a JWKS-file upstream (a) and a served discovery upstream (b).
type testSTS struct {
	srv    *Server
	url    string
	client *http.Client
	a, b   *testissuer.Issuer
	audit  *testproc.Buffer
	dir    string
	hs     *httptest.Server
}

// withClientCert returns a client of the STS that presents cert.
func (ts *testSTS) withClientCert(cert tls.Certificate) *http.Client {
	tr := ts.hs.Client().Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.Certificates = []tls.Certificate{cert}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

type stsOptions struct {
	alg        string // signing algorithm; default ES256
	revocation string // YAML of the revocation section; default embedded
	tokens     string // YAML of the tokens section
	dir        string // reuse a directory (restart)
	policy     string
	aExtra     string // more YAML keys of the cluster-a upstream (4-space indent)
	tlsExtra   string // more YAML keys of the tls section (", key: value")
	clientCert bool   // the listener requests client certificates
	upstreams  string // more upstream entries
	extra      string // more top-level YAML (after the revocation section)
	files      map[string]string
}

func startSTS(t testing.TB, o stsOptions) *testSTS {
	t.Helper()
	ts := &testSTS{a: testissuer.New(t, "https://issuer.example"), b: testissuer.Serve(t), dir: o.dir}
	if ts.dir == "" {
		ts.dir = t.TempDir()
	}
	if o.alg == "" {
		o.alg = "ES256"
	}
	if o.revocation == "" {
		o.revocation = "revocation:\n  backend: embedded\n  embedded: {path: data/revocation.db}\n"
	}
	if o.tokens == "" {
		o.tokens = "tokens: {default_ttl: 5m, max_ttl: 1h}\n"
	}
	if o.policy == "" {
		o.policy = testPolicy
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.url = "https://" + l.Addr().String()
	cfgText := fmt.Sprintf(`issuer: %s
listen: %s
tls: {cert_file: unused.crt, key_file: unused.key%s}
signing: {algorithm: %s, key_dir: keys}
%supstreams:
  - name: cluster-a
    kind: oidc
    issuer: https://issuer.example
    audiences: [sts]
    jwks_file: a-jwks.json
%s  - name: cluster-b
    kind: oidc
    issuer: %s
    audiences: [sts, other]
%spolicy_files: [policy.yaml]
%s%s`, ts.url, l.Addr(), o.tlsExtra, o.alg, o.tokens, o.aExtra, ts.b.URL, o.upstreams, o.revocation, o.extra)
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(ts.dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("sts.yaml", strings.ReplaceAll(cfgText, "SELF", ts.url))
	write("policy.yaml", o.policy)
	write("a-jwks.json", string(ts.a.JWKS()))
	for name, data := range o.files {
		write(name, data)
	}
	ts.audit = &testproc.Buffer{}
	// Every audit event a test produces matches the published schema (checked
	// after the server closed: its last events are written by then).
	t.Cleanup(func() { checkAuditSchema(t, ts.audit.String()) })
	ts.srv, err = buildFromConfig(filepath.Join(ts.dir, "sts.yaml"), slog.New(slog.NewJSONHandler(io.Discard, nil)),
		slog.New(slog.NewJSONHandler(ts.audit, nil)), ts.b.Client())
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(ts.srv.Handler())
	hs.Listener.Close()
	hs.Listener = l
	if o.clientCert {
		hs.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
		hs.Config.ConnContext = func(c context.Context, _ net.Conn) context.Context {
			return context.WithValue(c, connKey{}, &connIdentity{})
		}
	}
	hs.StartTLS()
	t.Cleanup(func() {
		hs.Close()
		ts.srv.Close()
	})
	ts.client = hs.Client()
	ts.hs = hs
	return ts
}

func (ts *testSTS) form(subject string) url.Values {
	return url.Values{
		"grant_type":         {GrantTypeTokenExchange},
		"subject_token":      {subject},
		"subject_token_type": {TypeJWT},
		"audience":           {ledger},
		"scope":              {"ledger.read"},
	}
}

type reply struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (ts *testSTS) post(t *testing.T, form url.Values) *reply {
	t.Helper()
	return ts.do(t, http.MethodPost, "/token", "application/x-www-form-urlencoded", form.Encode(), nil)
}

func (ts *testSTS) do(t *testing.T, method, path, ctype, body string, edit func(*http.Request)) *reply {
	t.Helper()
	req, err := http.NewRequest(method, ts.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if edit != nil {
		edit(req)
	}
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	r := &reply{status: resp.StatusCode, header: resp.Header, raw: string(data)}
	_ = json.Unmarshal(data, &r.body)
	return r
}

func decodeSegment(t *testing.T, tok string, i int) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestExchangeMintsVerifiableToken(t *testing.T) {
	for _, alg := range []string{"ES256", "EdDSA", "RS256", "PS256"} {
		t.Run(alg, func(t *testing.T) {
			ts := startSTS(t, stsOptions{alg: alg})
			subjectClaims := ts.a.Claims(payments)
			before := time.Now().Unix()
			r := ts.post(t, ts.form(ts.a.Sign(t, subjectClaims)))
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.raw)
			}
			if cc := r.header.Get("Cache-Control"); cc != "no-store" {
				t.Fatalf("Cache-Control %q", cc)
			}
			tok, _ := r.body["access_token"].(string)
			if r.body["issued_token_type"] != TypeAccessToken || r.body["token_type"] != "Bearer" || r.body["scope"] != "ledger.read" {
				t.Fatalf("response %v", r.body)
			}
			// Exactly as a downstream API: discovery + JWKS through go-oidc.
			claims, err := stsclient.Verify(context.Background(), ts.client, ts.url, ledger, tok)
			if err != nil {
				t.Fatalf("go-oidc rejects the token: %v", err)
			}
			h := decodeSegment(t, tok, 0)
			if h["typ"] != "at+jwt" || h["kid"] != ts.srv.ActiveKeyID() || h["alg"] != alg {
				t.Fatalf("header %v", h)
			}
			if claims["iss"] != ts.url || claims["sub"] != payments || claims["aud"] != ledger ||
				claims["client_id"] != payments || claims["scope"] != "ledger.read" || claims["upstream"] != "cluster-a" {
				t.Fatalf("claims %v", claims)
			}
			iat, nbf, exp := int64(claims["iat"].(float64)), int64(claims["nbf"].(float64)), int64(claims["exp"].(float64))
			if iat < before-1 || iat > time.Now().Unix() || nbf != iat {
				t.Fatalf("iat %d nbf %d, now %d", iat, nbf, time.Now().Unix())
			}
			if exp-iat != 300 || r.body["expires_in"] != float64(300) {
				t.Fatalf("lifetime %d (expires_in %v), want the 5m default", exp-iat, r.body["expires_in"])
			}
			if jti, _ := claims["jti"].(string); len(jti) < 20 {
				t.Fatalf("jti %q", jti)
			}
		})
	}
}

func TestExchangeDiscoveryUpstreamAndRS256(t *testing.T) {
	ts := startSTS(t, stsOptions{})
	r := ts.post(t, ts.form(ts.b.SignRS256(t, ts.b.Claims(payments))))
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.raw)
	}
	claims := decodeSegment(t, r.body["access_token"].(string), 1)
	if claims["upstream"] != "cluster-b" {
		t.Fatalf("claims %v", claims)
	}
}

func TestExchangeJTIsUnique(t *testing.T) {
	ts := startSTS(t, stsOptions{})
	seen := map[string]bool{}
	for range 20 {
		r := ts.post(t, ts.form(ts.a.Token(t, payments)))
		jti := decodeSegment(t, r.body["access_token"].(string), 1)["jti"].(string)
		if seen[jti] {
			t.Fatalf("jti %s repeated", jti)
		}
		seen[jti] = true
	}
}

func TestExchangeTTL(t *testing.T) {
	cases := []struct {
		name    string
		tokens  string
		subject string
		exp     time.Duration // subject token's remaining life
		want    int64         // expires_in, seconds (±1 for exp truncation)
	}{
		{"default", "", payments, 10 * time.Minute, 300},
		{"rule max below default", "", shortLived, 10 * time.Minute, 120},
		{"config max below default", "tokens: {default_ttl: 5m, max_ttl: 5m}\n", payments, time.Hour, 300},
		{"default above rule max", "tokens: {default_ttl: 30m, max_ttl: 1h}\n", payments, time.Hour, 600},
		{"subject exp caps", "", payments, 90 * time.Second, 90},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := startSTS(t, stsOptions{tokens: tc.tokens})
			subExp := time.Now().Add(tc.exp).Unix()
			f := ts.form(ts.a.Token(t, tc.subject, func(c map[string]any) { c["exp"] = subExp }))
			f.Del("scope")
			r := ts.post(t, f)
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.raw)
			}
			got := int64(r.body["expires_in"].(float64))
			if got > tc.want || got < tc.want-1 {
				t.Fatalf("expires_in %d, want %d", got, tc.want)
			}
			c := decodeSegment(t, r.body["access_token"].(string), 1)
			if exp := int64(c["exp"].(float64)); exp > subExp {
				t.Fatalf("exp %d after subject exp %d", exp, subExp)
			}
			if _, ok := c["scope"]; ok {
				t.Fatal("scope claim without a requested scope")
			}
		})
	}
}

// TestExchangeRefusals: every refusal is RFC 6749 §5.2 JSON with no-store, the
// right status and code, the same generic description for every bad subject token,
// and never a token.
func TestExchangeRefusals(t *testing.T) {
	ts := startSTS(t, stsOptions{})
	good := func() url.Values { return ts.form(ts.a.Token(t, payments)) }
	attacker := testissuer.New(t, "https://issuer.example")
	hsToken := func() string {
		h := base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf(`{"alg":"HS256","kid":%q,"typ":"JWT"}`, ts.a.ECKid)))
		p := base64.RawURLEncoding.EncodeToString(mustJSON(ts.a.Claims(payments)))
		return h + "." + p + "." + hmacSig(testissuer.PublicPEM(&ts.a.EC.PublicKey), h+"."+p)
	}
	noneToken := func(alg string) string {
		h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"` + alg + `","typ":"JWT"}`))
		p := base64.RawURLEncoding.EncodeToString(mustJSON(ts.a.Claims(payments)))
		return h + "." + p + "."
	}
	tampered := func() string {
		parts := strings.Split(ts.a.Token(t, payments), ".")
		c := ts.a.Claims(payments)
		c["sub"] = "system:serviceaccount:payments:admin"
		parts[1] = base64.RawURLEncoding.EncodeToString(mustJSON(c))
		return strings.Join(parts, ".")
	}
	subj := func(tok string) url.Values { f := good(); f.Set("subject_token", tok); return f }
	cases := []struct {
		name   string
		form   url.Values
		status int
		code   string
	}{
		{"expired", subj(ts.a.Token(t, payments, func(c map[string]any) {
			c["exp"] = time.Now().Add(-time.Hour).Unix()
			c["iat"] = time.Now().Add(-2 * time.Hour).Unix()
			c["nbf"] = c["iat"]
		})), 400, codeInvalidRequest},
		{"not yet valid", subj(ts.a.Token(t, payments, func(c map[string]any) { c["nbf"] = time.Now().Add(time.Hour).Unix() })), 400, codeInvalidRequest},
		{"iat in future", subj(ts.a.Token(t, payments, func(c map[string]any) { c["iat"] = time.Now().Add(time.Hour).Unix() })), 400, codeInvalidRequest},
		{"wrong audience", subj(ts.a.Token(t, payments, func(c map[string]any) { c["aud"] = []string{"not-sts"} })), 400, codeInvalidRequest},
		{"no audience", subj(ts.a.Token(t, payments, func(c map[string]any) { delete(c, "aud") })), 400, codeInvalidRequest},
		{"unknown issuer", subj(ts.a.Token(t, payments, func(c map[string]any) { c["iss"] = "https://unknown.example" })), 400, codeInvalidRequest},
		{"issuer mix-up", subj(ts.a.Token(t, payments, func(c map[string]any) { c["iss"] = ts.b.URL })), 400, codeInvalidRequest},
		{"forged by unknown key", subj(attacker.Token(t, payments)), 400, codeInvalidRequest},
		{"alg none", subj(noneToken("none")), 400, codeInvalidRequest},
		{"alg NoNe", subj(noneToken("NoNe")), 400, codeInvalidRequest},
		{"HS256 with public key", subj(hsToken()), 400, codeInvalidRequest},
		{"tampered payload", subj(tampered()), 400, codeInvalidRequest},
		{"oversized token", subj(strings.Repeat("a", 20000) + ".b.c"), 400, codeInvalidRequest},
		{"not a JWT", subj("opaque-token"), 400, codeInvalidRequest},
		{"outside policy", subj(ts.a.Token(t, outsider)), 400, codeInvalidRequest},
		{"deny rule", subj(ts.a.Token(t, blocked)), 400, codeInvalidRequest},
		{"audience refused", func() url.Values { f := good(); f.Set("audience", "https://evil.example"); return f }(), 400, codeInvalidTarget},
		{"one of two audiences refused", func() url.Values { f := good(); f.Add("audience", "https://admin.internal"); return f }(), 400, codeInvalidTarget},
		{"resource refused", func() url.Values { f := good(); f.Set("resource", "https://admin.internal/x"); return f }(), 400, codeInvalidTarget},
		{"no target", func() url.Values { f := good(); f.Del("audience"); return f }(), 400, codeInvalidTarget},
		{"scope refused", func() url.Values { f := good(); f.Set("scope", "ledger.read ledger.admin"); return f }(), 400, codeInvalidScope},
		{"actor token", func() url.Values {
			f := good()
			f.Set("actor_token", ts.a.Token(t, "system:serviceaccount:payments:actor"))
			f.Set("actor_token_type", TypeJWT)
			return f
		}(), 400, codeInvalidRequest},
		{"unsupported grant", func() url.Values { f := good(); f.Set("grant_type", "password"); return f }(), 400, codeUnsupportedGrantType},
		{"client secret", func() url.Values { f := good(); f.Set("client_id", "c"); f.Set("client_secret", "s"); return f }(), 401, codeInvalidClient},
	}
	var subjectDescriptions []string
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := ts.post(t, tc.form)
			assertRefused(t, r, tc.status, tc.code)
			if tc.code == codeInvalidRequest && tc.name != "actor token" {
				subjectDescriptions = append(subjectDescriptions, r.body["error_description"].(string))
			}
		})
	}
	slices.Sort(subjectDescriptions)
	if len(slices.Compact(subjectDescriptions)) != 1 {
		t.Fatalf("bad subject tokens are distinguishable: %q", slices.Compact(subjectDescriptions))
	}
	// The audit log names reasons; it never holds a token.
	audit := ts.audit.String()
	for _, want := range []string{`"reason":"subject_token: `, `"subject_token_sha256":"`, `"rule":"block-payments-blocked"`} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit log lacks %s", want)
		}
	}
	if strings.Contains(audit, "eyJ") {
		t.Error("audit log contains a JWT")
	}
}

func TestTokenEndpointHTTP(t *testing.T) {
	ts := startSTS(t, stsOptions{})
	body := ts.form(ts.a.Token(t, payments)).Encode()
	cases := []struct {
		name   string
		method string
		path   string
		ctype  string
		body   string
		edit   func(*http.Request)
		status int
		code   string
	}{
		{"GET", http.MethodGet, "/token?" + body, "", "", nil, 405, codeInvalidRequest},
		{"PUT", http.MethodPut, "/token", "application/x-www-form-urlencoded", body, nil, 405, codeInvalidRequest},
		{"JSON body", http.MethodPost, "/token", "application/json", `{"grant_type":"x"}`, nil, 400, codeInvalidRequest},
		{"no content type", http.MethodPost, "/token", "", body, nil, 400, codeInvalidRequest},
		{"query parameters", http.MethodPost, "/token?subject_token=x", "application/x-www-form-urlencoded", body, nil, 400, codeInvalidRequest},
		{"body too large", http.MethodPost, "/token", "application/x-www-form-urlencoded", body + "&pad=" + strings.Repeat("a", maxBodyBytes), nil, 413, codeInvalidRequest},
		{"basic auth", http.MethodPost, "/token", "application/x-www-form-urlencoded", body, func(r *http.Request) { r.SetBasicAuth("c", "s") }, 401, codeInvalidClient},
		{"two auth methods", http.MethodPost, "/token", "application/x-www-form-urlencoded", body + "&client_secret=s", func(r *http.Request) { r.SetBasicAuth("c", "s") }, 400, codeInvalidRequest},
		{"charset param ok", http.MethodPost, "/token", "application/x-www-form-urlencoded; charset=UTF-8", body, nil, 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := ts.do(t, tc.method, tc.path, tc.ctype, tc.body, tc.edit)
			if tc.status == 200 {
				if r.status != 200 {
					t.Fatalf("status %d: %s", r.status, r.raw)
				}
				return
			}
			assertRefused(t, r, tc.status, tc.code)
			if tc.status == 405 && r.header.Get("Allow") != "POST" {
				t.Fatalf("Allow %q", r.header.Get("Allow"))
			}
			if tc.status == 401 && !strings.Contains(r.header.Get("WWW-Authenticate"), "invalid_client") {
				t.Fatalf("WWW-Authenticate %q", r.header.Get("WWW-Authenticate"))
			}
		})
	}
}

func assertRefused(t *testing.T, r *reply, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.raw)
	}
	if r.body["access_token"] != nil {
		t.Fatal("a refusal carries a token")
	}
	if r.body["error"] != code {
		t.Fatalf("error %v, want %s: %s", r.body["error"], code, r.raw)
	}
	if r.header.Get("Cache-Control") != "no-store" || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		t.Fatalf("headers %v", r.header)
	}
	if strings.Contains(r.raw, "kid") || strings.Contains(r.raw, "payments") || strings.Contains(r.raw, "rule") {
		t.Fatalf("error body leaks detail: %s", r.raw)
	}
}

func TestDiscoveryAndJWKS(t *testing.T) {
	ts := startSTS(t, stsOptions{})
	for _, path := range []string{PathOpenID, PathOAuthMeta} {
		r := ts.do(t, http.MethodGet, path, "", "", nil)
		if r.status != 200 || r.body["issuer"] != ts.url || r.body["token_endpoint"] != ts.url+"/token" || r.body["jwks_uri"] != ts.url+"/jwks" {
			t.Fatalf("%s: %d %v", path, r.status, r.body)
		}
		if !slices.Contains(toStrings(r.body["grant_types_supported"]), GrantTypeTokenExchange) ||
			!slices.Equal(toStrings(r.body["id_token_signing_alg_values_supported"]), []string{"ES256"}) {
			t.Fatalf("%s: %v", path, r.body)
		}
	}
	r := ts.do(t, http.MethodGet, PathJWKS, "", "", nil)
	keys, _ := r.body["keys"].([]any)
	if r.status != 200 || len(keys) != 1 || !strings.Contains(r.header.Get("Cache-Control"), "max-age") {
		t.Fatalf("jwks %d %v", r.status, r.body)
	}
	k := keys[0].(map[string]any)
	if k["kid"] != ts.srv.ActiveKeyID() || k["use"] != "sig" || k["alg"] != "ES256" || k["d"] != nil {
		t.Fatalf("jwk %v", k)
	}
	if r := ts.do(t, http.MethodPost, PathJWKS, "", "", nil); r.status != 405 {
		t.Fatalf("POST jwks: %d", r.status)
	}
}

func TestHealthReadyMetrics(t *testing.T) {
	ts := startSTS(t, stsOptions{})
	ts.post(t, ts.form(ts.a.Token(t, payments)))
	ts.post(t, ts.form(ts.a.Token(t, outsider)))
	if r := ts.do(t, http.MethodGet, "/healthz", "", "", nil); r.status != 200 {
		t.Fatalf("healthz %d", r.status)
	}
	if r := ts.do(t, http.MethodGet, "/readyz", "", "", nil); r.status != 200 {
		t.Fatalf("readyz %d", r.status)
	}
	// The metrics name rules, upstreams and key ages: never on the token listener.
	if r := ts.do(t, http.MethodGet, "/metrics", "", "", nil); r.status != 404 || strings.Contains(r.raw, "safeconduct_") {
		t.Fatalf("token listener /metrics: %d", r.status)
	}
	metricsText := ts.metrics(t)
	for _, want := range []string{
		`safeconduct_exchanges_total{error="",outcome="issued"} 1`,
		`safeconduct_exchanges_total{error="invalid_request",outcome="refused"} 1`,
		`safeconduct_http_requests_total{code="200",endpoint="token"} 1`,
		`safeconduct_exchange_duration_seconds_bucket`,
	} {
		if !strings.Contains(metricsText, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestKeysPersistAcrossRestart: the key created in an empty key_dir is reused by the
// next start (same kid), and stored 0600.
func TestKeysPersistAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	first := startSTS(t, stsOptions{dir: dir})
	kid := first.srv.ActiveKeyID()
	entries, err := filepath.Glob(filepath.Join(dir, "keys", "*.pem"))
	if err != nil || len(entries) != 1 {
		t.Fatalf("key files %v %v", entries, err)
	}
	st, err := os.Stat(entries[0])
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v %v", st.Mode(), err)
	}
	first.srv.Close()
	second := startSTS(t, stsOptions{dir: dir})
	if second.srv.ActiveKeyID() != kid {
		t.Fatalf("kid changed across restart: %s -> %s", kid, second.srv.ActiveKeyID())
	}
}

// TestRevocationStoreConsulted: a blocked workload gets nothing; the same subject
// from another upstream is not blocked.
func TestRevocationStoreConsulted(t *testing.T) {
	dir := t.TempDir()
	ts := startSTS(t, stsOptions{dir: dir})
	ctx := context.Background()
	sel := revocation.MustParseSelector("upstream=cluster-a,sub=" + payments)
	if _, err := ts.srv.store.Create(ctx, revocation.Entry{Kind: revocation.KindBlock, Selector: sel.String(), Reason: "incident 42", Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	assertRefused(t, ts.post(t, ts.form(ts.a.Token(t, payments))), 400, codeInvalidRequest)
	if !strings.Contains(ts.audit.String(), "incident 42") {
		t.Fatal("audit event lacks the block reason")
	}
	// The same subject from the other upstream is not blocked.
	if r := ts.post(t, ts.form(ts.b.Token(t, payments))); r.status != 200 {
		t.Fatalf("cluster-b subject refused: %d %s", r.status, r.raw)
	}
}

// TestRevocationStoreDownFailsClosed: with Redis unreachable, the exchange answers
// 503 with Retry-After, mints nothing, and /readyz fails.
func TestRevocationStoreDownFailsClosed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens here now
	ts := startSTS(t, stsOptions{revocation: fmt.Sprintf("revocation:\n  backend: redis\n  redis: {addrs: [%q]}\n", addr)})
	start := time.Now()
	r := ts.post(t, ts.form(ts.a.Token(t, payments)))
	if r.status != 503 || r.body["error"] != codeTemporarilyUnavailable || r.header.Get("Retry-After") == "" || r.body["access_token"] != nil {
		t.Fatalf("store down: %d %v %v", r.status, r.header, r.raw)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("fail-closed took %v", d)
	}
	if r := ts.do(t, http.MethodGet, "/readyz", "", "", nil); r.status != 503 {
		t.Fatalf("readyz %d while the store is down", r.status)
	}
}

func TestSetPolicySwaps(t *testing.T) {
	ts := startSTS(t, stsOptions{})
	if r := ts.post(t, ts.form(ts.a.Token(t, outsider))); r.status != 400 {
		t.Fatalf("outsider: %d", r.status)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(p, []byte(strings.Replace(testPolicy, "payments:*", "*", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	ts.srv.SetPolicy(pol)
	if r := ts.post(t, ts.form(ts.a.Token(t, outsider))); r.status != 200 {
		t.Fatalf("after reload: %d %s", r.status, r.raw)
	}
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
