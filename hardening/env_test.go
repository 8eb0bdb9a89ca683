package hardening

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/stsclient"
	"github.com/safeconduct/safeconduct/internal/testissuer"
	"github.com/safeconduct/safeconduct/internal/testproc"
)

// stsBin is the `sts` binary built by TestMain.
var stsBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sts-hardening-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	stsBin = filepath.Join(dir, "sts")
	// Built by import path into the temporary directory, never into the repo tree.
	cmd := exec.Command("go", "build", "-o", stsBin, "github.com/safeconduct/safeconduct/cmd/sts")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build sts: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// Identities and targets of the policy every test runs under.
const (
	ledger   = "https://ledger.internal"
	auditAud = "https://audit.internal"
	evilAud  = "https://evil.example"
	payments = "system:serviceaccount:payments:api"
	outsider = "system:serviceaccount:billing:api"
	alice    = "alice@example.com"

	// Rule names: distinctive, so that a response quoting one is caught.
	ruleIssue = "hardening-rule-payments-ledger"
	ruleAdmin = "hardening-admin-secops"
)

// upstreamSpec is an upstream a test adds to the standard ones. Its tokens are
// granted by the issuance rule like cluster-a's and cluster-b's.
type upstreamSpec struct {
	name    string
	issuer  string
	jwksURI string // "" = discovery at issuer
	// servers are the TLS servers the STS reaches for this upstream; served is the
	// testissuer.Serve issuer behind it, if any. The STS trusts their certificates
	// through SSL_CERT_FILE.
	servers []*httptest.Server
	served  *testissuer.Issuer
}

// env is one running STS and its upstreams:
//
//   - cluster-a: issuer https://cluster-a.example, keys from a jwks_file (no network),
//     algorithms [ES256] only;
//   - cluster-b: a served OIDC issuer (testissuer.Serve: discovery + JWKS over TLS),
//     every asymmetric algorithm;
//   - corp: the IdP admins log in with (jwks_file); alice may use every admin action;
//   - pods: a jwks_file upstream with binding_attributes (so the workload change
//     endpoint has something to report on); no issuance rule names it.
type env struct {
	url    string
	client *http.Client
	a, b   *testissuer.Issuer
	corp   *testissuer.Issuer
	pods   *testissuer.Issuer
	log    *testproc.Buffer
	pid    int // of the sts process

	mu      sync.Mutex
	secrets []string // substrings no response may contain
}

// newEnv starts an STS with the standard upstreams plus extra, and stops it (and
// everything else it started) at the end of the test.
func newEnv(t *testing.T, extra ...upstreamSpec) *env {
	t.Helper()
	return newEnvWith(t, envOptions{}, extra...)
}

// envOptions adds to the standard configuration.
type envOptions struct {
	clusterA string            // more YAML keys of the cluster-a upstream (4-space indent)
	config   string            // more top-level YAML
	policy   string            // more rules (2-space indent, under rules:)
	files    map[string]string // more files in the config directory
	limits   string            // the limits: mapping, instead of the standard one
}

// limitsYAML is the limits: mapping of the configuration. The standard one lets
// every request reach verification instead of some being shed with 429 (the
// unknown-kid storm sends 200 concurrent requests, the admin tests many in a
// row): the limits are not under test there.
func (o envOptions) limitsYAML() string {
	if o.limits != "" {
		return o.limits
	}
	return "{max_in_flight: 1024, admin_per_ip_rps: -1, admin_max_in_flight: 1024}"
}

// newEnvWith is newEnv with additions to the configuration.
func newEnvWith(t *testing.T, o envOptions, extra ...upstreamSpec) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{
		a:    testissuer.New(t, "https://cluster-a.example"),
		b:    testissuer.Serve(t),
		corp: testissuer.New(t, "https://idp.example"),
		pods: testissuer.New(t, "https://pods.example"),
	}
	port := testproc.FreePort(t)
	e.url = fmt.Sprintf("https://127.0.0.1:%d", port)
	pool := writeServingCert(t, dir)
	e.client = &http.Client{
		Timeout: 30 * time.Second,
		// A TLSClientConfig of our own keeps the client on HTTP/1.1, so that header
		// limits are the server's to enforce, not the client's.
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			MaxIdleConnsPerHost: 32,
		},
		// Redirects are answers to check, never to follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	t.Cleanup(e.client.CloseIdleConnections)

	// Upstream TLS roots for the child: every httptest server's certificate.
	caPEM, err := os.ReadFile(e.b.WriteCA(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"cluster-a", "cluster-b"}
	var upstreamYAML strings.Builder
	for _, u := range extra {
		names = append(names, u.name)
		fmt.Fprintf(&upstreamYAML, "  - name: %s\n    kind: oidc\n    issuer: %s\n    audiences: [sts]\n", u.name, u.issuer)
		if u.jwksURI != "" {
			fmt.Fprintf(&upstreamYAML, "    jwks_uri: %s\n", u.jwksURI)
		}
		for _, s := range u.servers {
			caPEM = append(caPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})...)
		}
		if u.served != nil {
			p, err := os.ReadFile(u.served.WriteCA(t, t.TempDir()))
			if err != nil {
				t.Fatal(err)
			}
			caPEM = append(caPEM, p...)
			e.addIssuerKeys(t, u.served)
		}
		e.addSecrets(u.name, u.issuer, strings.TrimPrefix(u.issuer, "https://"))
		if u.jwksURI != "" {
			e.addSecrets(u.jwksURI, strings.TrimPrefix(u.jwksURI, "https://"))
		}
	}
	caFile := filepath.Join(dir, "upstream-roots.pem")
	writeFile(t, caFile, string(caPEM))

	writeFile(t, filepath.Join(dir, "sts.yaml"), fmt.Sprintf(`issuer: %s
listen: 127.0.0.1:%d
tls: {cert_file: tls.crt, key_file: tls.key}
signing: {algorithm: ES256, key_dir: keys}
tokens: {default_ttl: 5m, max_ttl: 1h}
upstreams:
  - name: cluster-a
    kind: oidc
    issuer: %s
    audiences: [sts]
    jwks_file: cluster-a-jwks.json
    algorithms: [ES256]
%s  - name: cluster-b
    kind: oidc
    issuer: %s
    audiences: [sts]
  - name: corp
    kind: oidc
    issuer: %s
    audiences: [sts]
    jwks_file: corp-jwks.json
  - name: pods
    kind: oidc
    issuer: %s
    audiences: [sts]
    jwks_file: pods-jwks.json
    preset: kubernetes
    binding_attributes: [pod_uid]
%spolicy_files: [policy.yaml]
revocation: {backend: embedded, embedded: {path: data/revocation.db}}
limits: %s
%s`, e.url, port, e.a.URL, o.clusterA, e.b.URL, e.corp.URL, e.pods.URL, upstreamYAML.String(), o.limitsYAML(), o.config))
	writeFile(t, filepath.Join(dir, "policy.yaml"), fmt.Sprintf(`rules:
  - name: %s
    effect: allow
    upstreams: [%s]
    subjects: ["system:serviceaccount:payments:*"]
    audiences: [%q, %q]
    scopes: [ledger.read, ledger.write]
    max_ttl: 10m
%sadmin:
  - name: %s
    upstreams: [corp]
    subjects: [%q]
    actions: [revoke, block, lift, list, report_change, read_feed, introspect]
    within_upstreams: ["*"]
`, ruleIssue, strings.Join(names, ", "), ledger, auditAud, o.policy, ruleAdmin, alice))
	for name, data := range o.files {
		writeFile(t, filepath.Join(dir, name), data)
	}
	writeFile(t, filepath.Join(dir, "cluster-a-jwks.json"), string(e.a.JWKS()))
	writeFile(t, filepath.Join(dir, "corp-jwks.json"), string(e.corp.JWKS()))
	writeFile(t, filepath.Join(dir, "pods-jwks.json"), string(e.pods.JWKS()))

	e.addSecrets(ruleIssue, ruleAdmin, "cluster-a", "cluster-b", "pods", "corp",
		e.a.URL, e.b.URL, strings.TrimPrefix(e.b.URL, "https://"), e.corp.URL, e.pods.URL)
	for _, iss := range []*testissuer.Issuer{e.a, e.b, e.corp, e.pods} {
		e.addIssuerKeys(t, iss)
	}
	e.start(t, filepath.Join(dir, "sts.yaml"), caFile)
	return e
}

// addSecrets records substrings that must never appear in a response.
func (e *env) addSecrets(s ...string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, v := range s {
		if v != "" {
			e.secrets = append(e.secrets, v)
		}
	}
}

// addIssuerKeys records an issuer's key IDs and public key material as secrets.
func (e *env) addIssuerKeys(t *testing.T, iss *testissuer.Issuer) {
	t.Helper()
	e.addSecrets(iss.ECKid, iss.RSAKid,
		jwkMember(t, &iss.EC.PublicKey, "x")[:16], jwkMember(t, &iss.RSA.PublicKey, "n")[:16])
}

// start runs `sts serve` and waits until discovery answers.
func (e *env) start(t *testing.T, cfg, caFile string) {
	t.Helper()
	cmd := exec.Command(stsBin, "serve", "--config", cfg)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+caFile)
	e.log = &testproc.Buffer{}
	cmd.Stdout, cmd.Stderr = e.log, e.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e.pid = cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("sts did not stop within 15s")
		}
		if t.Failed() {
			t.Logf("sts output:\n%s", e.log)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("sts exited early: %v\n%s", err, e.log)
		default:
		}
		if resp, err := e.client.Get(e.url + "/.well-known/openid-configuration"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("sts not ready within 30s\n%s", e.log)
}

// skipBug skips a case the server gets wrong today (see the package comment),
// unless HARDENING_BUGS=1 asks to run it, e.g. to check a fix.
func skipBug(t *testing.T, reason string) {
	t.Helper()
	if os.Getenv("HARDENING_BUGS") != "1" {
		t.Skip("BUG: " + reason)
	}
}

// response is an answer of the STS, read whole.
type response struct {
	status  int
	header  http.Header
	body    []byte
	elapsed time.Duration
}

func (r response) String() string {
	return fmt.Sprintf("%d %s", r.status, bytes.TrimSpace(r.body))
}

// do sends one request to the STS. path is sent as written (escapes, double
// slashes and dot segments included).
func (e *env) do(t *testing.T, method, path string, header http.Header, body string) response {
	t.Helper()
	r, err := e.send(method, path, header, body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// send is do for any goroutine: it returns errors instead of failing the test.
func (e *env) send(method, path string, header http.Header, body string) (response, error) {
	u, err := url.Parse(e.url + path)
	if err != nil {
		return response{}, err
	}
	req, err := http.NewRequestWithContext(context.Background(), method, e.url, strings.NewReader(body))
	if err != nil {
		return response{}, err
	}
	req.URL = u
	if body == "" {
		req.Body, req.GetBody, req.ContentLength = http.NoBody, nil, 0
	}
	for k, v := range header {
		req.Header[k] = v
	}
	start := time.Now()
	resp, err := e.client.Do(req)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return response{}, fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data, elapsed: time.Since(start)}, nil
}

// formHeader is the header of a well-formed token request.
func formHeader() http.Header {
	return http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
}

// postToken posts a raw form body to /token.
func (e *env) postToken(t *testing.T, body string) response {
	t.Helper()
	return e.do(t, http.MethodPost, "/token", formHeader(), body)
}

// exchangeForm is a well-formed request for subject (of type typ; "" = jwt) asking
// for ledger with scope ledger.read.
func exchangeForm(subject, typ string) url.Values {
	if typ == "" {
		typ = stsclient.TypeJWT
	}
	return stsclient.Request{
		SubjectToken: subject, SubjectTokenType: typ,
		Audiences: []string{ledger}, Scopes: []string{"ledger.read"},
	}.Form()
}

// exchange posts exchangeForm(subject, typ).
func (e *env) exchange(t *testing.T, subject, typ string) response {
	t.Helper()
	return e.postToken(t, exchangeForm(subject, typ).Encode())
}

// oauthError is an RFC 6749 §5.2 body: these two members and nothing else.
type oauthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// wantError asserts status and error code, that nothing was issued and that the
// body reveals nothing. presented are values the caller sent (tokens, URLs) that
// must not be echoed either.
func (e *env) wantError(t *testing.T, r response, status int, code string, presented ...string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d (%s)", r.status, status, r)
	}
	e.wantNoLeak(t, r, presented...)
	if r.header.Get("Content-Type") == "" || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		t.Fatalf("error answer of type %q, want application/json: %s", r.header.Get("Content-Type"), r)
	}
	var oe oauthError
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&oe); err != nil {
		t.Fatalf("error body is not an RFC 6749 error object (%v): %s", err, r)
	}
	if oe.Error != code {
		t.Fatalf("error %q, want %q (%s)", oe.Error, code, r)
	}
}

// wantIssued asserts a successful exchange and returns the minted token.
func (e *env) wantIssued(t *testing.T, r response) string {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("status %d, want 200 (%s)", r.status, r)
	}
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control %q on a token response, want no-store", cc)
	}
	var ok stsclient.Response
	if err := json.Unmarshal(r.body, &ok); err != nil || ok.AccessToken == "" || ok.TokenType != "Bearer" {
		t.Fatalf("malformed success (%v): %s", err, r)
	}
	return ok.AccessToken
}

// leakMarkers are substrings of internal detail that no answer may carry: Go and
// library error text, stack traces, JOSE material, key IDs.
var leakMarkers = []string{
	"kid", "crypto/", "x509", "json:", "go-jose", "jose", "strictjson", "oidc",
	"goroutine", "panic", ".go:", "runtime/", "begin ", "private key", "eyj",
	"signature", "thumbprint", "modulus", "deflate", "redirect", "timeout",
	"deadline", "status 3", "status 5", "unexpected", "127.0.0.1",
}

// wantNoLeak asserts that r's body (and headers) hold no internal detail, no
// configured secret and nothing of what the caller presented.
func (e *env) wantNoLeak(t *testing.T, r response, presented ...string) {
	t.Helper()
	var all strings.Builder
	all.Write(r.body)
	for k, vs := range r.header {
		if k == "Date" {
			continue
		}
		for _, v := range vs {
			all.WriteString("\n" + k + ": " + v)
		}
	}
	text := strings.ToLower(all.String())
	for _, m := range leakMarkers {
		if strings.Contains(text, m) {
			t.Fatalf("answer reveals %q: %s", m, r)
		}
	}
	e.mu.Lock()
	secrets := append([]string(nil), e.secrets...)
	e.mu.Unlock()
	for _, s := range append(secrets, presented...) {
		for _, piece := range secretPieces(s) {
			if strings.Contains(text, strings.ToLower(piece)) {
				t.Fatalf("answer reveals %q: %s", piece, r)
			}
		}
	}
}

// secretPieces are the parts of s worth looking for in an answer: s itself, and
// for a token each segment's first 12 characters (a quoted prefix is a leak too).
func secretPieces(s string) []string {
	if len(s) < 4 {
		return nil
	}
	out := []string{s}
	if strings.Count(s, ".") >= 2 {
		for _, seg := range strings.Split(s, ".") {
			if len(seg) >= 12 {
				out = append(out, seg[:12])
			}
		}
	}
	return out
}

// counter is an httptest TLS server counting every request it receives.
type counter struct {
	*httptest.Server
	mu   sync.Mutex
	hits []string
}

// newCounter serves h (nil: 404 to everything) and counts requests.
func newCounter(t *testing.T, h http.Handler) *counter {
	t.Helper()
	c := &counter{}
	c.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.hits = append(c.hits, r.Method+" "+r.URL.String())
		c.mu.Unlock()
		if h == nil {
			http.NotFound(w, r)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(c.Close)
	return c
}

// Hits returns the requests received so far.
func (c *counter) Hits() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.hits...)
}

// writeServingCert writes a self-signed certificate for 127.0.0.1 as tls.crt and
// tls.key into dir and returns a pool trusting it.
func writeServingCert(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "hardening sts"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "tls.crt"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(t, filepath.Join(dir, "tls.key"), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})))
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}
