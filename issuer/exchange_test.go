package issuer

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/safeconduct/safeconduct/internal/testissuer"
	"github.com/safeconduct/safeconduct/internal/testspiffe"
	"github.com/safeconduct/safeconduct/revocation"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/exchange_outcomes.golden")

// exchangeCase is one request of TestExchangeOutcomesGolden.
type exchangeCase struct {
	name  string
	do    func(t *testing.T) *reply
	audit *testSTS // whose audit log receives the event
}

// volatile matches what differs between runs in a response or audit event: token
// hashes, jti, exp, revocation entry IDs, the key IDs of test issuers and how an
// unreachable Redis failed.
var volatile = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`"(jti|subject_token_sha256|event_id|request_id|revocation_entry)":"[^"]*"`), `"$1":"<v>"`},
	{regexp.MustCompile(`"exp":[0-9]+`), `"exp":<v>`},
	{regexp.MustCompile(`"access_token":"[^"]*"`), `"access_token":"<v>"`},
	{regexp.MustCompile(`"expires_in":[0-9]+`), `"expires_in":<v>`},
	{regexp.MustCompile(`by entry [^:]+:`), `by entry <id>:`},
	{regexp.MustCompile(`kid \\"[^"\\]*\\"`), `kid \"<kid>\"`},
	{regexp.MustCompile(`127\.0\.0\.1:[0-9]+`), `127.0.0.1:<port>`},
	{regexp.MustCompile(`redisstore: [^"\\]*`), `redisstore: <err>`},
}

// outcome renders what the client and the audit log saw of one exchange, with
// the volatile parts masked.
func outcome(t *testing.T, r *reply, ev map[string]any) string {
	t.Helper()
	delete(ev, "time")
	evJSON, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "status %d", r.status)
	for _, h := range []string{"Retry-After", "WWW-Authenticate", "Cache-Control"} {
		if v := r.header.Get(h); v != "" {
			fmt.Fprintf(&b, " %s=%q", h, v)
		}
	}
	fmt.Fprintf(&b, "\nbody  %s\naudit %s\n", strings.TrimSpace(r.raw), evJSON)
	out := b.String()
	for _, v := range volatile {
		out = v.re.ReplaceAllString(out, v.with)
	}
	return out
}

// deployForm asks for a payments token for deploy, which clientPolicy grants
// only to the client ci-runner.
func (ts *testSTS) deployForm(t *testing.T) url.Values {
	f := ts.form(ts.a.Token(t, payments))
	f.Set("audience", deploy)
	f.Del("scope")
	return f
}

// lastExchangeEvent returns the audit event of the latest exchange in ts's log.
func lastExchangeEvent(t *testing.T, ts *testSTS) map[string]any {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(ts.audit.String()), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		var ev map[string]any
		if json.Unmarshal([]byte(lines[i]), &ev) == nil && ev["msg"] == "exchange" {
			return ev
		}
	}
	t.Fatal("no exchange event in the audit log")
	return nil
}

// TestExchangeOutcomesGolden pins, for a request reaching each refusal of the
// pipeline (and a few successes), the exact response (status, headers, body)
// and audit event. Run with -update to rewrite the golden file after an
// intended change.
func TestExchangeOutcomesGolden(t *testing.T) {
	ts, ci, _ := clientSTS(t)
	deployForm := func() url.Values { return ts.deployForm(t) }
	post := func(ts *testSTS, f url.Values) func(t *testing.T) *reply {
		return func(t *testing.T) *reply { return ts.post(t, f) }
	}
	raw := func(ctype, path, body string, edit func(*http.Request)) func(t *testing.T) *reply {
		return func(t *testing.T) *reply { return ts.do(t, http.MethodPost, path, ctype, body, edit) }
	}
	form := "application/x-www-form-urlencoded"
	good := ts.form(ts.a.Token(t, payments)).Encode()
	edit := func(f url.Values, e func(url.Values)) url.Values { e(f); return f }
	cases := []exchangeCase{
		{name: "issued", do: post(ts, ts.form(ts.a.Token(t, payments)))},
		{name: "issued to an authenticated client", do: post(ts, withAssertion(deployForm(), assertion(t, ts, ci)))},
		{name: "JSON body", do: raw("application/json", "/token", `{}`, nil)},
		{name: "query parameters", do: raw(form, "/token?x=1", good, nil)},
		{name: "body too large", do: raw(form, "/token", good+"&pad="+strings.Repeat("a", maxBodyBytes), nil)},
		{name: "no grant_type", do: raw(form, "/token", "subject_token=x", nil)},
		{name: "basic auth and client_secret", do: raw(form, "/token", good+"&client_secret=s", func(r *http.Request) { r.SetBasicAuth("c", "s") })},
		{name: "basic auth", do: raw(form, "/token", good, func(r *http.Request) { r.SetBasicAuth("c", "s") })},
		{name: "client_secret", do: post(ts, edit(ts.form(ts.a.Token(t, payments)), func(f url.Values) { f.Set("client_secret", "s") }))},
		{name: "unregistered client", do: post(ts, withAssertion(deployForm(), assertion(t, ts, testissuer.New(t, "nobody"))))},
		{name: "forged subject", do: post(ts, ts.form(testissuer.New(t, "https://issuer.example").Token(t, payments)))},
		{name: "forged subject, authenticated client", do: post(ts, withAssertion(ts.form(testissuer.New(t, "https://issuer.example").Token(t, payments)), assertion(t, ts, ci)))},
		{name: "not a JWT", do: post(ts, ts.form("opaque"))},
		{name: "x509-svid subject without mTLS", do: post(ts, edit(ts.form("spiffe://prod.example/x"), func(f url.Values) { f.Set("subject_token_type", TypeX509SVID) }))},
		{name: "bad act claim", do: post(ts, ts.form(ts.a.Token(t, payments, func(c map[string]any) { c["act"] = "gateway" })))},
		{name: "no rule", do: post(ts, ts.form(ts.a.Token(t, outsider)))},
		{name: "deny rule", do: post(ts, ts.form(ts.a.Token(t, blocked)))},
		{name: "target refused", do: post(ts, edit(ts.form(ts.a.Token(t, payments)), func(f url.Values) { f.Set("audience", "https://evil.example") }))},
		{name: "scope refused", do: post(ts, edit(ts.form(ts.a.Token(t, payments)), func(f url.Values) { f.Set("scope", "ledger.admin") }))},
		{name: "client required", do: post(ts, deployForm())},
		{name: "actor refused", do: post(ts, actorForm(ts.form(ts.a.Token(t, payments)), ts.a.Token(t, "system:serviceaccount:payments:actor")))},
		{name: "actor forged", do: post(ts, actorForm(ts.form(ts.a.Token(t, payments)), "opaque"))},
		{name: "blocked", do: func(t *testing.T) *reply {
			sel := revocation.MustParseSelector("upstream=cluster-b,sub=" + payments)
			if _, err := ts.srv.store.Create(context.Background(), revocation.Entry{Kind: revocation.KindBlock, Selector: sel.String(), Reason: "incident 42", Actor: "test"}); err != nil {
				t.Fatal(err)
			}
			return ts.post(t, ts.form(ts.b.Token(t, payments)))
		}},
	}
	for i := range cases {
		cases[i].audit = ts
	}

	once := startSTS(t, stsOptions{aExtra: "    one_time: true\n"})
	replayed := once.a.Token(t, payments)
	cases = append(cases,
		exchangeCase{name: "one_time: first use", do: post(once, once.form(replayed)), audit: once},
		exchangeCase{name: "one_time: replay", do: post(once, once.form(replayed)), audit: once},
		exchangeCase{name: "one_time: no jti", do: post(once, once.form(once.a.Token(t, payments, func(c map[string]any) { delete(c, "jti") }))), audit: once},
	)

	addr := closedAddr(t)
	down := startSTS(t, stsOptions{revocation: fmt.Sprintf("revocation:\n  backend: redis\n  redis: {addrs: [%q]}\n", addr)})
	downOnce := startSTS(t, stsOptions{aExtra: "    one_time: true\n", revocation: fmt.Sprintf("revocation:\n  backend: redis\n  redis: {addrs: [%q]}\n", addr)})
	cases = append(cases,
		exchangeCase{name: "store down", do: post(down, down.form(down.a.Token(t, payments))), audit: down},
		exchangeCase{name: "store down: one_time", do: post(downOnce, downOnce.form(downOnce.a.Token(t, payments))), audit: downOnce},
	)

	dl := startDelegationSTS(t)
	gateway := "system:serviceaccount:gateway:edge"
	var hop1 string
	cases = append(cases,
		exchangeCase{name: "delegation: issued", audit: dl, do: func(t *testing.T) *reply {
			f := actorForm(dl.form(dl.a.Token(t, payments)), dl.a.Token(t, gateway))
			f.Set("audience", "sts-self")
			r := dl.post(t, f)
			hop1, _ = r.body["access_token"].(string)
			return r
		}},
		exchangeCase{name: "delegation: no actor_token", audit: dl, do: func(t *testing.T) *reply { return dl.post(t, dl.form(hop1)) }},
		exchangeCase{name: "delegation: actor not named", audit: dl, do: post(dl, actorForm(dl.form(dl.a.Token(t, payments)), dl.a.Token(t, "system:serviceaccount:billing:api")))},
		exchangeCase{name: "delegation: audit-mode rule", audit: dl, do: post(dl, dl.form(dl.a.Token(t, payments)))},
	)

	sp, td := startSPIFFESTS(t)
	id := "spiffe://prod.example/ns/payments/sa/api"
	viaCert := func(c *http.Client, f url.Values) func(t *testing.T) *reply {
		return func(t *testing.T) *reply {
			saved := sp.client
			sp.client = c
			defer func() { sp.client = saved }()
			return sp.post(t, f)
		}
	}
	mtls := sp.withClientCert(td.TLSCertificate(t, id))
	untrusted := sp.withClientCert(testspiffe.New(t, "prod.example").TLSCertificate(t, id))
	withSecret := spiffeForm(id, TypeX509SVID, ledger)
	withSecret.Set("client_secret", "x")
	cases = append(cases,
		exchangeCase{name: "mTLS: x509-svid subject", audit: sp, do: viaCert(mtls, spiffeForm(id, TypeX509SVID, ledger))},
		exchangeCase{name: "mTLS: sender-constrained", audit: sp, do: viaCert(mtls, spiffeForm(id, TypeX509SVID, "https://vault.internal"))},
		exchangeCase{name: "mTLS: sender constraint without mTLS", audit: sp, do: post(sp, spiffeForm(td.JWTSVID(t, id, "sts"), TypeJWT, "https://vault.internal"))},
		exchangeCase{name: "mTLS: subject names another SVID", audit: sp, do: viaCert(mtls, spiffeForm("spiffe://prod.example/ns/payments/sa/other", TypeX509SVID, ledger))},
		exchangeCase{name: "mTLS: untrusted certificate", audit: sp, do: viaCert(untrusted, spiffeForm(id, TypeX509SVID, ledger))},
		exchangeCase{name: "mTLS: and client_secret", audit: sp, do: viaCert(mtls, withSecret)},
	)

	var got bytes.Buffer
	for _, c := range cases {
		mark := len(c.audit.audit.String())
		r := c.do(t)
		ev := map[string]any{}
		if len(c.audit.audit.String()) > mark {
			ev = lastExchangeEvent(t, c.audit)
		}
		fmt.Fprintf(&got, "== %s\n%s", c.name, outcome(t, r, ev))
	}
	golden := filepath.Join("testdata", "exchange_outcomes.golden")
	if *updateGolden {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		gl, wl := strings.Split(got.String(), "\n"), strings.Split(string(want), "\n")
		for i := range max(len(gl), len(wl)) {
			g, w := "", ""
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Errorf("line %d:\n got  %s\n want %s", i+1, g, w)
			}
		}
	}
}
