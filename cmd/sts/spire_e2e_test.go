package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/safeconduct/safeconduct/internal/stsclient"
	"github.com/safeconduct/safeconduct/internal/testspire"
	"github.com/safeconduct/safeconduct/issuer"
)

const spirePolicy = `rules:
  - name: payments-to-ledger
    effect: allow
    upstreams: [spire]
    subjects: ["spiffe://example.org/ns/payments/sa/*"]
    attributes: {namespace: payments}
    audiences: ["https://ledger.internal"]
    scopes: [ledger.read]
  - name: payments-to-vault-bound
    effect: allow
    upstreams: [spire]
    subjects: ["spiffe://example.org/ns/payments/sa/*"]
    audiences: ["https://vault.internal"]
    require_sender_constraint: true
`

// setupSPIRE writes an STS config whose only upstream is the real SPIRE agent's
// trust domain, with bundles from the Workload API and client certificates
// requested. serving is the tls section's serving identity: files or the Workload
// API.
func setupSPIRE(t *testing.T, s *testspire.SPIRE, workloadAPIServing bool) *e2e {
	t.Helper()
	e := setup(t, "")
	serving := "cert_file: tls.crt, key_file: tls.key"
	if workloadAPIServing {
		serving = "workload_api_socket: " + s.SocketPath()
	}
	port := strings.TrimPrefix(e.url, "https://127.0.0.1:")
	e.write("sts.yaml", fmt.Sprintf(`issuer: %s
listen: 127.0.0.1:%s
tls: {%s, client_certificates: request}
signing: {algorithm: ES256, key_dir: keys}
upstreams:
  - name: spire
    kind: spiffe
    trust_domain: example.org
    audiences: [sts]
    workload_api_socket: %s
    path_templates: ["/ns/{namespace}/sa/{service_account}"]
policy_files: [policy.yaml]
revocation: {backend: embedded, embedded: {path: data/revocation.db}}
`, e.url, port, serving, s.SocketPath()))
	e.write("policy.yaml", spirePolicy)
	return e
}

// TestE2ESPIRE: a workload registered in a real SPIRE gets a JWT-SVID from the
// Workload API and exchanges it at the STS (which reads the trust bundle from the same
// agent); the minted token validates with go-oidc. Its X.509-SVID authenticates over
// mTLS, serves as the subject, and binds a token when policy asks.
func TestE2ESPIRE(t *testing.T) {
	s := testspire.Start(t, testspire.Options{})
	id := s.RegisterWorkload(t, "/ns/payments/sa/api")
	e := setupSPIRE(t, s, false)
	e.start()
	ctx := context.Background()

	jwtSVID := s.FetchJWTSVIDFor(t, id, "sts")
	resp, err := stsclient.Exchange(ctx, e.client, e.url+"/token", stsclient.Request{
		SubjectToken: jwtSVID, SubjectTokenType: stsclient.TypeJWT, Audiences: []string{ledger}, Scopes: []string{"ledger.read"},
	})
	if err != nil {
		t.Fatalf("exchange of a SPIRE JWT-SVID: %v\n%s", err, e.log)
	}
	claims, err := stsclient.Verify(ctx, e.client, e.url, ledger, resp.AccessToken)
	if err != nil {
		t.Fatalf("go-oidc: %v", err)
	}
	if claims["sub"] != id.String() {
		t.Fatalf("sub %v, want %s", claims["sub"], id)
	}

	// The X.509-SVID of the same workload over mTLS.
	svid := s.FetchX509SVIDFor(t, id)
	cert := tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, c := range svid.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	tr := e.client.Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.Certificates = []tls.Certificate{cert}
	mtls := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err = stsclient.Exchange(ctx, mtls, e.url+"/token", stsclient.Request{
		SubjectToken: id.String(), SubjectTokenType: issuer.TypeX509SVID, Audiences: []string{"https://vault.internal"},
	})
	if err != nil {
		t.Fatalf("mTLS exchange: %v\n%s", err, e.log)
	}
	claims, err = stsclient.Verify(ctx, e.client, e.url, "https://vault.internal", resp.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(svid.Certificates[0].Raw)
	if cnf, _ := claims["cnf"].(map[string]any); cnf["x5t#S256"] != base64.RawURLEncoding.EncodeToString(sum[:]) || claims["client_id"] != id.String() {
		t.Fatalf("claims %v", claims)
	}
	// Without mTLS the bound rule refuses.
	if _, err := stsclient.Exchange(ctx, e.client, e.url+"/token", stsclient.Request{
		SubjectToken: s.FetchJWTSVIDFor(t, id, "sts"), SubjectTokenType: stsclient.TypeJWT, Audiences: []string{"https://vault.internal"},
	}); err == nil {
		t.Fatal("sender-constrained rule allowed a request without a client certificate")
	}
}

// TestE2ESPIREServingIdentity: the STS serves with its own X.509-SVID from the
// Workload API; a SPIFFE-aware client (go-spiffe tlsconfig) reaches discovery.
func TestE2ESPIREServingIdentity(t *testing.T) {
	s := testspire.Start(t, testspire.Options{})
	id := s.RegisterWorkload(t, "/ns/sts/sa/sts")
	e := setupSPIRE(t, s, true)
	// start() polls with the file-CA client; use a SPIFFE-aware one instead.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(s.SocketPath())))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	e.client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: tlsconfig.TLSClientConfig(src, tlsconfig.AuthorizeID(id)),
	}}
	e.start()
	resp, err := e.client.Get(e.url + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatalf("discovery over the STS's X.509-SVID: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS.PeerCertificates[0].URIs[0].String() != id.String() {
		t.Fatalf("status %d, server identity %v", resp.StatusCode, resp.TLS.PeerCertificates[0].URIs)
	}
}
