package issuer

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/safeconduct/safeconduct/internal/testspiffe"
)

const spiffePolicy = `rules:
  - name: payments-api-ledger
    effect: allow
    upstreams: [prod]
    subjects: ["spiffe://prod.example/ns/payments/sa/*"]
    trust_domains: [prod.example]
    attributes: {namespace: payments}
    audiences: ["https://ledger.internal"]
    scopes: [ledger.read]
    copy_attributes: [namespace, service_account]
  - name: bound-vault
    effect: allow
    upstreams: [prod]
    subjects: ["spiffe://prod.example/ns/payments/sa/*"]
    audiences: ["https://vault.internal"]
    require_sender_constraint: true
`

// startSPIFFESTS runs the STS with a spiffe upstream for prod.example (bundle
// file), requesting client certificates.
func startSPIFFESTS(t *testing.T) (*testSTS, *testspiffe.TrustDomain) {
	t.Helper()
	td := testspiffe.New(t, "prod.example")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "prod-bundle.json"), td.Bundle(t), 0o600); err != nil {
		t.Fatal(err)
	}
	ts := startSTS(t, stsOptions{
		dir:        dir,
		policy:     spiffePolicy,
		clientCert: true,
		tlsExtra:   ", client_certificates: request",
		upstreams: `  - name: prod
    kind: spiffe
    trust_domain: prod.example
    audiences: [sts]
    bundle_file: prod-bundle.json
    path_templates: ["/ns/{namespace}/sa/{service_account}"]
`,
	})
	return ts, td
}

func spiffeForm(subject, subjectType, audience string) url.Values {
	return url.Values{
		"grant_type":         {GrantTypeTokenExchange},
		"subject_token":      {subject},
		"subject_token_type": {subjectType},
		"audience":           {audience},
	}
}

func TestSPIFFEJWTSVIDExchange(t *testing.T) {
	ts, td := startSPIFFESTS(t)
	id := "spiffe://prod.example/ns/payments/sa/api"
	r := ts.post(t, spiffeForm(td.JWTSVID(t, id, "sts"), TypeJWT, ledger))
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	c := decodeSegment(t, r.body["access_token"].(string), 1)
	if c["sub"] != id || c["upstream"] != "prod" {
		t.Fatalf("claims %v", c)
	}
	if a, _ := c["attributes"].(map[string]any); a["namespace"] != "payments" || a["service_account"] != "api" {
		t.Fatalf("path template attributes %v", c["attributes"])
	}
	// Another trust domain's SVID (its own keys) is refused; so is a token for
	// another audience and another namespace.
	other := testspiffe.New(t, "other.example")
	for name, tok := range map[string]string{
		"other trust domain":         other.JWTSVID(t, "spiffe://other.example/ns/payments/sa/api", "sts"),
		"other domain claiming prod": other.JWTSVID(t, id, "sts"),
		"wrong audience":             td.JWTSVID(t, id, "not-sts"),
		"namespace outside policy":   td.JWTSVID(t, "spiffe://prod.example/ns/billing/sa/api", "sts"),
		"malformed SPIFFE ID":        td.JWTSVID(t, "spiffe://Prod.Example/ns/payments/sa/api", "sts"),
	} {
		t.Run(name, func(t *testing.T) {
			assertRefused(t, ts.post(t, spiffeForm(tok, TypeJWT, ledger)), 400, codeInvalidRequest)
		})
	}
}

func TestSPIFFEMTLS(t *testing.T) {
	ts, td := startSPIFFESTS(t)
	id := "spiffe://prod.example/ns/payments/sa/api"
	cert := td.TLSCertificate(t, id)
	mtls := ts.withClientCert(cert)
	post := func(c *http.Client, f url.Values) *reply {
		t.Helper()
		saved := ts.client
		ts.client = c
		defer func() { ts.client = saved }()
		return ts.post(t, f)
	}

	// (b) the SVID as the subject identity; (a) it also authenticates the client.
	r := post(mtls, spiffeForm(id, TypeX509SVID, ledger))
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	c := decodeSegment(t, r.body["access_token"].(string), 1)
	if c["sub"] != id || c["client_id"] != id || c["cnf"] != nil {
		t.Fatalf("claims %v", c)
	}
	// (c) a rule requiring sender constraint binds the token to the certificate.
	r = post(mtls, spiffeForm(id, TypeX509SVID, "https://vault.internal"))
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	c = decodeSegment(t, r.body["access_token"].(string), 1)
	sum := sha256.Sum256(cert.Leaf.Raw)
	if cnf, _ := c["cnf"].(map[string]any); cnf["x5t#S256"] != base64.RawURLEncoding.EncodeToString(sum[:]) {
		t.Fatalf("cnf %v", c["cnf"])
	}
	// The same rule refuses a request without mTLS (a JWT-SVID over plain TLS).
	assertRefused(t, ts.post(t, spiffeForm(td.JWTSVID(t, id, "sts"), TypeJWT, "https://vault.internal")), 400, codeInvalidRequest)
	// A JWT-SVID subject over mTLS: the client is authenticated as the SVID.
	r = post(mtls, spiffeForm(td.JWTSVID(t, "spiffe://prod.example/ns/payments/sa/batch", "sts"), TypeJWT, ledger))
	if r.status != 200 || decodeSegment(t, r.body["access_token"].(string), 1)["client_id"] != id {
		t.Fatalf("%d %s", r.status, r.raw)
	}

	// The x509-svid subject type needs a certificate, and must name it.
	assertRefused(t, ts.post(t, spiffeForm(id, TypeX509SVID, ledger)), 400, codeInvalidRequest)
	assertRefused(t, post(mtls, spiffeForm("spiffe://prod.example/ns/payments/sa/other", TypeX509SVID, ledger)), 400, codeInvalidRequest)

	// A certificate from an untrusted CA, or with two URI SANs, is 401 invalid_client.
	other := testspiffe.New(t, "prod.example") // same name, different CA
	r = post(ts.withClientCert(other.TLSCertificate(t, id)), spiffeForm(id, TypeX509SVID, ledger))
	assertRefused(t, r, 401, codeInvalidClient)
	if !strings.Contains(r.header.Get("WWW-Authenticate"), "invalid_client") {
		t.Fatal("no WWW-Authenticate")
	}
	// mTLS plus a client secret: two methods.
	f := spiffeForm(id, TypeX509SVID, ledger)
	f.Set("client_secret", "x")
	assertRefused(t, post(mtls, f), 400, codeInvalidRequest)
}
