package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/safeconduct/safeconduct/config"
	"github.com/safeconduct/safeconduct/internal/testissuer"
	"github.com/safeconduct/safeconduct/internal/testspiffe"
	"github.com/safeconduct/safeconduct/issuer"
)

// The agreement test runs the same token, config and request through the real
// server (config.Build, served over HTTPS, POST /token) and through `stsctl policy
// test --config`, and requires both to reach the same decision. The server's clock
// and --now are hours in the past, so a stsctl that judged tokens at its own time,
// or only read their claims, would disagree.
const agreementPolicy = `rules:
  - name: payments-ledger
    effect: allow
    upstreams: [k8s]
    subjects: ["system:serviceaccount:*"]
    attributes: {namespace: payments}
    audiences: ["https://ledger.internal"]
    scopes: [ledger.read]
  - name: anyone-metrics
    effect: allow
    upstreams: [k8s]
    subjects: ["*"]
    audiences: ["https://metrics.internal"]
  - name: ci-deploy
    effect: allow
    upstreams: [ci]
    subjects: ["repo:*"]
    audiences: ["https://deploy.internal"]
  - name: spiffe-payments
    effect: allow
    upstreams: [spiffe]
    subjects: ["spiffe://prod.example/*"]
    attributes: {namespace: payments, service_account: api}
    audiences: ["https://ledger.internal"]
  - name: gateway-for-payments
    effect: allow
    upstreams: [k8s]
    subjects: ["system:serviceaccount:payments:*"]
    audiences: ["https://orders.internal"]
    actors: [{upstreams: [k8s], subjects: ["system:serviceaccount:gateway*"]}]
  - name: reports-until
    effect: allow
    upstreams: [k8s]
    subjects: ["system:serviceaccount:payments:*"]
    audiences: ["https://reports.internal"]
    when: now < timestamp("UNTIL")
  - name: archive-after
    effect: allow
    upstreams: [k8s]
    subjects: ["system:serviceaccount:payments:*"]
    audiences: ["https://archive.internal"]
    when: now > timestamp("UNTIL")
`

const agreementConfig = `issuer: STS
listen: 127.0.0.1:0
tls: {cert_file: unused.crt, key_file: unused.key}
signing: {key_dir: keys}
tokens: {default_ttl: 5m, max_ttl: 1h}
upstreams:
  - name: k8s
    kind: oidc
    issuer: https://k8s.example
    audiences: [sts]
    jwks_file: k8s-jwks.json
    preset: kubernetes
    max_token_age: 1h
    subjects: ["system:serviceaccount:payments:*", "system:serviceaccount:gateway:*", "system:serviceaccount:batch:*"]
  - name: ci
    kind: oidc
    issuer: https://ci.example
    audiences: [sts]
    jwks_file: ci-jwks.json
    required_claims: {repository_owner: my-org}
  - name: spiffe
    kind: spiffe
    trust_domain: prod.example
    audiences: [sts]
    bundle_file: bundle.json
    path_templates: ["/ns/{namespace}/sa/{service_account}"]
policy_files: [policy.yaml]
revocation: {backend: embedded, embedded: {path: data/rev.db}}
`

// agreement is the shared material: upstreams, the server and the clock.
type agreement struct {
	now       time.Time // the server's clock and stsctl's --now
	k8s, ci   *testissuer.Issuer
	rogue     *testissuer.Issuer // same issuer as k8s, other keys
	unknown   *testissuer.Issuer
	td        *testspiffe.TrustDomain
	cfg       string
	tokenURL  string
	stsClient *http.Client
}

func startAgreement(t *testing.T) *agreement {
	t.Helper()
	a := &agreement{
		now:     time.Now().Add(-3 * time.Hour).Truncate(time.Second),
		k8s:     testissuer.New(t, "https://k8s.example"),
		ci:      testissuer.New(t, "https://ci.example"),
		rogue:   testissuer.New(t, "https://k8s.example"),
		unknown: testissuer.New(t, "https://unknown.example"),
		td:      testspiffe.New(t, "prod.example"),
	}
	a.rogue.ECKid = a.k8s.ECKid // a forgery names the real key
	dir := t.TempDir()
	hs := httptest.NewUnstartedServer(nil)
	sts := "https://" + hs.Listener.Addr().String()
	files := map[string]string{
		"sts.yaml":      strings.Replace(agreementConfig, "STS", sts, 1),
		"policy.yaml":   strings.ReplaceAll(agreementPolicy, "UNTIL", a.now.Add(30*time.Minute).UTC().Format(time.RFC3339)),
		"k8s-jwks.json": string(a.k8s.JWKS()),
		"ci-jwks.json":  string(a.ci.JWKS()),
		"bundle.json":   string(a.td.Bundle(t)),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	a.cfg = filepath.Join(dir, "sts.yaml")
	cfg, err := config.Load(a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := config.Build(context.Background(), cfg, config.Options{
		Logger:      slog.New(slog.NewJSONHandler(io.Discard, nil)),
		AuditLogger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Now:         func() time.Time { return a.now },
	})
	if err != nil {
		t.Fatal(err)
	}
	hs.Config.Handler = srv.Handler()
	hs.StartTLS()
	t.Cleanup(func() {
		hs.Close()
		srv.Close()
	})
	a.tokenURL, a.stsClient = sts+"/token", hs.Client()
	return a
}

// k8sToken is a Kubernetes service account token of ns:name at a.now, with the
// kubernetes.io claim, after edits.
func (a *agreement) k8sToken(t *testing.T, iss *testissuer.Issuer, ns, name string, edits ...func(map[string]any)) string {
	t.Helper()
	c := a.times(iss.Claims("system:serviceaccount:" + ns + ":" + name))
	c["kubernetes.io"] = map[string]any{"namespace": ns, "serviceaccount": map[string]any{"name": name}}
	for _, e := range edits {
		e(c)
	}
	return iss.Sign(t, c)
}

// times sets iat, nbf and exp around a.now (ten minutes of life).
func (a *agreement) times(c map[string]any) map[string]any {
	c["iat"], c["nbf"], c["exp"] = a.now.Unix(), a.now.Unix(), a.now.Add(10*time.Minute).Unix()
	return c
}

// jwtSVID is a JWT-SVID for id with audience sts, shaped like SPIRE's, at a.now.
func (a *agreement) jwtSVID(t *testing.T, id string) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: a.td.JWTKey, KeyID: a.td.JWTKid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(map[string]any{
		"sub": id, "aud": []string{"sts"}, "iat": a.now.Unix(), "exp": a.now.Add(5 * time.Minute).Unix(),
	}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// exchange is one request: tokens (made per case) and what is asked for.
type exchange struct {
	subject, actor string
	audience       string
	scope          string
}

// server posts the exchange to the real STS: allowed when it issues a token.
func (a *agreement) server(t *testing.T, x exchange) (bool, string) {
	t.Helper()
	form := url.Values{
		"grant_type":         {issuer.GrantTypeTokenExchange},
		"subject_token":      {x.subject},
		"subject_token_type": {issuer.TypeJWT},
		"audience":           {x.audience},
	}
	if x.scope != "" {
		form.Set("scope", x.scope)
	}
	if x.actor != "" {
		form.Set("actor_token", x.actor)
		form.Set("actor_token_type", issuer.TypeJWT)
	}
	resp, err := a.stsClient.PostForm(a.tokenURL, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode == http.StatusOK, fmt.Sprintf("%s %s", resp.Status, body)
}

// stsctl decides the exchange with `stsctl policy test --config --now --json`, in
// process, and holds the exit status to --expect.
func (a *agreement) stsctl(t *testing.T, x exchange, expect string) (bool, string) {
	t.Helper()
	args := []string{"policy", "test", "--config", a.cfg, "--now", a.now.Format(time.RFC3339),
		"--subject-token", x.subject, "--audience", x.audience, "--json", "--expect", expect}
	if x.scope != "" {
		args = append(args, "--scope", x.scope)
	}
	if x.actor != "" {
		args = append(args, "--actor-token", x.actor)
	}
	var out, errb bytes.Buffer
	code := run(args, strings.NewReader(""), &out, &errb)
	var v struct {
		Attested bool
		Decision struct{ Outcome, Reason string }
	}
	if err := json.Unmarshal(out.Bytes(), &v); err != nil {
		t.Fatalf("stsctl exit %d: %v\nstdout:\n%s\nstderr:\n%s", code, err, out.String(), errb.String())
	}
	if !v.Attested {
		t.Errorf("stsctl did not attest the tokens with --config:\n%s", out.String())
	}
	if code != 0 {
		t.Errorf("stsctl --expect %s: exit %d\n%s%s", expect, code, out.String(), errb.String())
	}
	return v.Decision.Outcome == "allow", v.Decision.Outcome + ": " + v.Decision.Reason
}

func TestPolicyTestAgreesWithServer(t *testing.T) {
	a := startAgreement(t)
	k8s := func(ns, name string, edits ...func(map[string]any)) func(*testing.T) string {
		return func(t *testing.T) string { return a.k8sToken(t, a.k8s, ns, name, edits...) }
	}
	ci := func(owner string) func(*testing.T) string {
		return func(t *testing.T) string {
			c := a.times(a.ci.Claims("repo:my-org/app:ref:refs/heads/main"))
			c["repository_owner"] = owner
			return a.ci.Sign(t, c)
		}
	}
	svid := func(id string) func(*testing.T) string {
		return func(t *testing.T) string { return a.jwtSVID(t, id) }
	}
	at := func(iat, nbf, exp time.Duration) func(map[string]any) {
		return func(c map[string]any) {
			c["iat"], c["nbf"], c["exp"] = a.now.Add(iat).Unix(), a.now.Add(nbf).Unix(), a.now.Add(exp).Unix()
		}
	}
	const ledger, orders = "https://ledger.internal", "https://orders.internal"
	tests := []struct {
		name     string
		subject  func(*testing.T) string
		actor    func(*testing.T) string
		audience string
		scope    string
		allow    bool
	}{
		{name: "allowed", subject: k8s("payments", "api"), audience: ledger, scope: "ledger.read", allow: true},
		{name: "subject outside the upstream's subjects", subject: k8s("billing", "api"), audience: "https://metrics.internal"},
		{name: "required claim met", subject: ci("my-org"), audience: "https://deploy.internal", allow: true},
		{name: "required claim unmet", subject: ci("other-org"), audience: "https://deploy.internal"},
		{name: "older than max_token_age", subject: k8s("payments", "api", at(-2*time.Hour, -2*time.Hour, 10*time.Minute)), audience: ledger},
		{name: "expired", subject: k8s("payments", "api", at(-20*time.Minute, -20*time.Minute, -10*time.Minute)), audience: ledger},
		{name: "not yet valid", subject: k8s("payments", "api", at(0, 10*time.Minute, 20*time.Minute)), audience: ledger},
		{name: "wrong audience", subject: k8s("payments", "api", func(c map[string]any) { c["aud"] = []string{"other"} }), audience: ledger},
		{name: "unknown issuer", subject: func(t *testing.T) string { return a.k8sToken(t, a.unknown, "payments", "api") }, audience: ledger},
		{name: "forged signature", subject: func(t *testing.T) string { return a.k8sToken(t, a.rogue, "payments", "api") }, audience: ledger},
		{name: "SPIFFE JWT-SVID, path template attributes", subject: svid("spiffe://prod.example/ns/payments/sa/api"), audience: ledger, allow: true},
		{name: "SPIFFE JWT-SVID, other namespace", subject: svid("spiffe://prod.example/ns/billing/sa/api"), audience: ledger},
		{name: "SPIFFE JWT-SVID, no template matches", subject: svid("spiffe://prod.example/payments/api"), audience: ledger},
		{name: "delegation with an allowed actor", subject: k8s("payments", "api"), actor: k8s("gateway", "proxy"), audience: orders, allow: true},
		{name: "delegated subject without actor token", audience: ledger, subject: k8s("payments", "api", func(c map[string]any) {
			c["act"] = map[string]any{"sub": "system:serviceaccount:gateway:proxy"}
		})},
		{name: "delegated subject with actor: depth 2", audience: orders, actor: k8s("gateway", "proxy"), subject: k8s("payments", "api", func(c map[string]any) {
			c["act"] = map[string]any{"sub": "system:serviceaccount:gateway:old"}
		})},
		{name: "actor not allowed", subject: k8s("payments", "api"), actor: k8s("batch", "job"), audience: orders},
		{name: "actor outside the upstream's subjects", subject: k8s("payments", "api"), actor: k8s("gateway-x", "proxy"), audience: orders},
		{name: "preset attribute mapping refuses another namespace", subject: k8s("payments", "api", func(c map[string]any) {
			c["kubernetes.io"] = map[string]any{"namespace": "billing"}
		}), audience: ledger},
		{name: "scope not granted", subject: k8s("payments", "api"), audience: ledger, scope: "ledger.write"},
		{name: "audience not granted", subject: k8s("payments", "api"), audience: "https://nope.internal"},
		{name: "when on now: before", subject: k8s("payments", "api"), audience: "https://reports.internal", allow: true},
		{name: "when on now: after", subject: k8s("payments", "api"), audience: "https://archive.internal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := exchange{subject: tt.subject(t), audience: tt.audience, scope: tt.scope}
			if tt.actor != nil {
				x.actor = tt.actor(t)
			}
			expect := map[bool]string{true: "allow", false: "deny"}[tt.allow]
			server, serverSaid := a.server(t, x)
			cli, cliSaid := a.stsctl(t, x, expect)
			if server != tt.allow || cli != tt.allow {
				t.Errorf("want %s; server: %v (%s); stsctl: %v (%s)", expect, server, serverSaid, cli, cliSaid)
			}
		})
	}
}
