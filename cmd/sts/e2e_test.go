package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google/externalaccount"

	"github.com/safeconduct/safeconduct/config"
	"github.com/safeconduct/safeconduct/internal/stsclient"
	"github.com/safeconduct/safeconduct/internal/testissuer"
	"github.com/safeconduct/safeconduct/internal/testproc"
	"github.com/safeconduct/safeconduct/internal/testredis"
)

// End-to-end tests: the real sts and stsctl binaries, real TLS on 127.0.0.1, a real
// OIDC upstream (discovery + JWKS over TLS) and a JWKS-file upstream, verification
// with go-oidc from the STS's own discovery, and a third-party RFC 8693 client.

var binDir string

func TestMain(m *testing.M) { testproc.MainWithCommands(m, &binDir, "sts", "stsctl") }

const (
	ledger   = "https://ledger.internal"
	payments = "system:serviceaccount:payments:api"
	outsider = "system:serviceaccount:billing:api"
)

const e2ePolicy = `rules:
  - name: payments-to-ledger
    effect: allow
    upstreams: [cluster-a, cluster-b]
    subjects: ["system:serviceaccount:payments:*"]
    audiences: ["https://ledger.internal"]
    scopes: [ledger.read, ledger.write]
    max_ttl: 10m
`

type e2e struct {
	t      *testing.T
	dir    string
	url    string
	cfg    string
	caFile string
	client *http.Client
	a, b   *testissuer.Issuer
	proc   *testproc.Process // the running sts
	log    *testproc.Buffer  // its output (from start)
	// ops is the metrics_listen address (plain HTTP: /metrics, /healthz, /readyz).
	ops string
}

// setup writes TLS files, upstream keys, config and policy. revocation is the YAML
// revocation section ("" for the embedded store).
func setup(t *testing.T, revocation string) *e2e {
	t.Helper()
	e := &e2e{t: t, dir: t.TempDir(), a: testissuer.New(t, "https://issuer.example"), b: testissuer.Serve(t)}
	port := testproc.FreePort(t)
	e.url = fmt.Sprintf("https://127.0.0.1:%d", port)
	e.ops = fmt.Sprintf("127.0.0.1:%d", testproc.FreePort(t))
	// A throwaway CA for the STS certificate (the quickstart's generator).
	if err := ensureTLS(e.path("ca.crt"), e.path("tls.crt"), e.path("tls.key")); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	ca, _ := os.ReadFile(e.path("ca.crt"))
	pool.AppendCertsFromPEM(ca)
	e.caFile = e.path("ca.crt")
	e.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	if revocation == "" {
		revocation = "revocation:\n  backend: embedded\n  embedded: {path: data/revocation.db}\n"
	}
	e.write("sts.yaml", fmt.Sprintf(`issuer: %s
listen: 127.0.0.1:%d
tls: {cert_file: tls.crt, key_file: tls.key}
signing: {algorithm: ES256, key_dir: keys}
tokens: {default_ttl: 5m, max_ttl: 1h}
upstreams:
  - name: cluster-a
    kind: oidc
    issuer: https://issuer.example
    audiences: [sts]
    jwks_file: cluster-a-jwks.json
  - name: cluster-b
    kind: oidc
    issuer: %s
    audiences: [sts]
policy_files: [policy.yaml]
policy_reload_interval: 1s
metrics_listen: %s
%s`, e.url, port, e.b.URL, e.ops, revocation))
	e.write("policy.yaml", e2ePolicy)
	e.write("cluster-a-jwks.json", string(e.a.JWKS()))
	e.cfg = e.path("sts.yaml")
	return e
}

// addCorp adds the corp upstream (alice's IdP, a JWKS file) to the config, with
// extra appended to the file, and returns its issuer.
func (e *e2e) addCorp(extra string) *testissuer.Issuer {
	e.t.Helper()
	corp := testissuer.New(e.t, "https://idp.example")
	cfg, err := os.ReadFile(e.cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.write("sts.yaml", strings.Replace(string(cfg), "policy_files:", `  - name: corp
    kind: oidc
    issuer: https://idp.example
    audiences: [sts]
    jwks_file: corp-jwks.json
policy_files:`, 1)+extra)
	e.write("corp-jwks.json", string(corp.JWKS()))
	return corp
}

func (e *e2e) path(name string) string { return filepath.Join(e.dir, name) }

func (e *e2e) write(name, data string) {
	e.t.Helper()
	if err := os.WriteFile(e.path(name), []byte(data), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// start runs `sts serve` from another working directory (paths resolve against the
// config file) and waits until discovery answers.
func (e *e2e) start() {
	t := e.t
	t.Helper()
	e.proc = testproc.Start(t, e.serveCmd())
	e.log = e.proc.Log
	t.Cleanup(func() { e.stop() })
	e.proc.WaitReady(t, 20*time.Second, func() bool { return testproc.StatusOK(e.client, e.url+"/.well-known/openid-configuration") })
}

// serveCmd is `sts serve` run from another working directory (paths resolve
// against the config file).
func (e *e2e) serveCmd() *exec.Cmd {
	cmd := exec.Command(filepath.Join(binDir, "sts"), "serve", "--config", e.cfg)
	cmd.Dir = e.t.TempDir()
	// The served upstream's certificate is trusted the way operators do it.
	cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+e.b.WriteCA(e.t, e.dir))
	return cmd
}

// stop sends SIGTERM and waits (bounded) for a clean exit.
func (e *e2e) stop() error {
	if e.proc == nil {
		return nil
	}
	return e.proc.Stop(15 * time.Second)
}

func (e *e2e) exchange(subject string) (*stsclient.Response, error) {
	return stsclient.Exchange(context.Background(), e.client, e.url+"/token", stsclient.Request{
		SubjectToken: subject, SubjectTokenType: stsclient.TypeJWT,
		Audiences: []string{ledger}, Scopes: []string{"ledger.read"},
	})
}

func TestE2EExchangeAndVerify(t *testing.T) {
	e := setup(t, "")
	e.start()
	for name, subject := range map[string]string{
		"jwks-file upstream": e.a.Token(t, payments),
		"discovery upstream": e.b.Token(t, payments),
	} {
		t.Run(name, func(t *testing.T) {
			resp, err := e.exchange(subject)
			if err != nil {
				t.Fatal(err)
			}
			claims, err := stsclient.Verify(context.Background(), e.client, e.url, ledger, resp.AccessToken)
			if err != nil {
				t.Fatalf("go-oidc rejects the minted token: %v", err)
			}
			if claims["sub"] != payments || claims["aud"] != ledger || claims["scope"] != "ledger.read" {
				t.Fatalf("claims %v", claims)
			}
			// A verifier for another audience refuses it.
			if _, err := stsclient.Verify(context.Background(), e.client, e.url, "https://other.internal", resp.AccessToken); err == nil {
				t.Fatal("token accepted for another audience")
			}
		})
	}
	if _, err := e.exchange(e.a.Token(t, outsider)); err == nil || !strings.Contains(err.Error(), "invalid_request") {
		t.Fatalf("outsider: %v", err)
	}
	// Nothing secret in the log: no token, no key.
	if err := e.stop(); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	if strings.Contains(e.log.String(), "eyJ") || strings.Contains(e.log.String(), "PRIVATE") {
		t.Fatal("log holds token or key material")
	}
	if !strings.Contains(e.log.String(), `"subject_token_sha256"`) {
		t.Fatalf("no audit event in the log:\n%s", e.log)
	}
}

// TestE2EExternalAccountClient: golang.org/x/oauth2's external-account client, an RFC
// 8693 client we did not write, obtains a token that verifies.
func TestE2EExternalAccountClient(t *testing.T) {
	e := setup(t, "")
	e.start()
	file := e.path("subject.jwt")
	e.write("subject.jwt", e.a.Token(t, payments))
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, e.client)
	ts, err := externalaccount.NewTokenSource(ctx, externalaccount.Config{
		Audience:         ledger,
		SubjectTokenType: stsclient.TypeJWT,
		TokenURL:         e.url + "/token",
		CredentialSource: &externalaccount.CredentialSource{File: file},
		Scopes:           []string{"ledger.read"},
	})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ts.Token()
	if err != nil {
		t.Fatalf("externalaccount: %v", err)
	}
	if _, err := stsclient.Verify(context.Background(), e.client, e.url, ledger, tok.AccessToken); err != nil {
		t.Fatal(err)
	}
}

// TestE2EStsctl: stsctl exchange prints the response; stsctl verify validates it.
func TestE2EStsctl(t *testing.T) {
	e := setup(t, "")
	e.start()
	e.write("subject.jwt", e.a.Token(t, payments))
	out := runBin(t, 0, "stsctl", "exchange", "--sts", e.url, "--cacert", e.caFile,
		"--subject-token", "@"+e.path("subject.jwt"), "--audience", ledger, "--scope", "ledger.read", "--token-only")
	e.write("minted.jwt", strings.TrimSpace(out))
	out = runBin(t, 0, "stsctl", "verify", "--issuer", e.url, "--cacert", e.caFile, "--audience", ledger, "--token", "@"+e.path("minted.jwt"))
	if !strings.Contains(out, `"sub": "`+payments+`"`) {
		t.Fatalf("verify output:\n%s", out)
	}
	out = runBin(t, 1, "stsctl", "verify", "--issuer", e.url, "--cacert", e.caFile, "--audience", "https://other", "--token", "@"+e.path("minted.jwt"))
	if !strings.Contains(out, "token rejected") {
		t.Fatalf("verify for another audience:\n%s", out)
	}
	out = runBin(t, 1, "stsctl", "exchange", "--sts", e.url, "--cacert", e.caFile,
		"--subject-token", "@"+e.path("subject.jwt"), "--audience", "https://evil.example")
	if !strings.Contains(out, "invalid_target") {
		t.Fatalf("refused exchange:\n%s", out)
	}
}

// TestE2ERedisBackend: with Redis as the store the exchange works; when Redis dies the
// STS fails closed (503, nothing minted) and reports not ready.
func TestE2ERedisBackend(t *testing.T) {
	addr, stopRedis := testredis.StartProcess(t)
	e := setup(t, fmt.Sprintf("revocation:\n  backend: redis\n  redis: {addrs: [%q], prefix: %q}\n", addr, testredis.Prefix(t)))
	e.start()
	if _, err := e.exchange(e.a.Token(t, payments)); err != nil {
		t.Fatal(err)
	}
	stopRedis()
	_, err := e.exchange(e.a.Token(t, payments))
	if se, ok := err.(*stsclient.Error); !ok || se.Status != 503 || se.Code != "temporarily_unavailable" {
		t.Fatalf("with Redis down: %v", err)
	}
	resp, err := e.client.Get(e.url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("readyz %d with Redis down", resp.StatusCode)
	}
}

// TestE2EPolicyReloadOnSIGHUP: a new policy takes effect on SIGHUP; a broken one is
// refused with file:line in the log and the last good policy stays.
func TestE2EPolicyReloadOnSIGHUP(t *testing.T) {
	e := setup(t, "")
	e.start()
	if _, err := e.exchange(e.a.Token(t, outsider)); err == nil {
		t.Fatal("outsider allowed before reload")
	}
	e.write("policy.yaml", strings.Replace(e2ePolicy, "payments:*", "*", 1))
	hup := func() { _ = e.proc.Cmd.Process.Signal(syscall.SIGHUP) }
	hup()
	waitFor(t, func() bool { _, err := e.exchange(e.a.Token(t, outsider)); return err == nil })
	e.write("policy.yaml", "rules:\n  - name: broken\n    effect: maybe\n")
	hup()
	waitFor(t, func() bool { return strings.Contains(e.log.String(), "policy reload failed") })
	if !strings.Contains(e.log.String(), "policy.yaml:3") {
		t.Fatalf("reload error lacks file:line:\n%s", e.log)
	}
	if _, err := e.exchange(e.a.Token(t, outsider)); err != nil {
		t.Fatalf("last good policy dropped: %v", err)
	}
}

// TestE2EPolicyReloadOnFileChange: an edited policy file takes effect without a
// signal; a broken edit keeps the last good policy.
func TestE2EPolicyReloadOnFileChange(t *testing.T) {
	e := setup(t, "")
	e.start()
	e.write("policy.yaml", strings.Replace(e2ePolicy, "payments:*", "*", 1))
	waitFor(t, func() bool { _, err := e.exchange(e.a.Token(t, outsider)); return err == nil })
	e.write("policy.yaml", "rules: [")
	waitFor(t, func() bool {
		return strings.Contains(e.log.String(), `"trigger":"file change"`) && strings.Contains(e.log.String(), "policy reload failed")
	})
	if _, err := e.exchange(e.a.Token(t, outsider)); err != nil {
		t.Fatalf("last good policy dropped: %v", err)
	}
}

func TestE2ECheckConfig(t *testing.T) {
	e := setup(t, "")
	out := runBin(t, 0, "sts", "check-config", "--config", e.cfg)
	if !strings.Contains(out, ": ok") {
		t.Fatalf("good config:\n%s", out)
	}
	// A version 1 policy with '*' patterns that may cross ':' is valid, and warned about.
	if !strings.Contains(out, "warning: "+e.path("policy.yaml")+": version: ") || !strings.Contains(out, "add `version: 2`") {
		t.Fatalf("no crossing-pattern warning:\n%s", out)
	}
	e.write("policy.yaml", "version: 2\n"+e2ePolicy)
	if out := runBin(t, 0, "sts", "check-config", "--config", e.cfg); strings.Contains(out, "warning") || !strings.Contains(out, ": ok") {
		t.Fatalf("version 2 policy:\n%s", out)
	}
	if _, err := os.Stat(e.path("keys")); err == nil {
		t.Fatal("check-config created the key directory")
	}
	e.write("policy.yaml", "rules:\n  - name: r\n    effect: allow\n    upstreams: [cluster-z]\n    subjects: [\"*\"]\n    audiences: [a]\n")
	out = runBin(t, 1, "sts", "check-config", "--config", e.cfg)
	if !strings.Contains(out, "policy.yaml:4") || !strings.Contains(out, "cluster-z") {
		t.Fatalf("unknown upstream in policy:\n%s", out)
	}
	e.write("bad.yaml", "issuer: https://x\nlisten: nope\ncolour: blue\nupstreams: []\n")
	out = runBin(t, 1, "sts", "check-config", "--config", e.path("bad.yaml"))
	for _, want := range []string{"bad.yaml:2: listen: must be host:port", "bad.yaml:3: colour: unknown key", "bad.yaml:4: upstreams: at least one upstream"} {
		if !strings.Contains(out, want) {
			t.Errorf("check-config output lacks %q:\n%s", want, out)
		}
	}
}

// runBin executes a built binary and checks its exit code; it returns stdout+stderr.
func runBin(t *testing.T, wantCode int, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, name), args...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if code != wantCode {
		t.Fatalf("%s %s: exit %d, want %d\n%s", name, strings.Join(args, " "), code, wantCode, out)
	}
	return string(out)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	testproc.WaitUntil(t, 10*time.Second, "a condition", cond)
}

// TestDeployExamples: every example configuration under deploy/examples parses and
// its policy loads against its upstreams; the single-node one passes the full `sts
// check-config` once the files it names exist beside it.
func TestDeployExamples(t *testing.T) {
	configs, err := filepath.Glob("../../deploy/examples/*-sts.yaml")
	if err != nil || len(configs) == 0 {
		t.Fatalf("no example configs: %v", err)
	}
	for _, c := range configs {
		t.Run(filepath.Base(c), func(t *testing.T) {
			cfg, err := config.Load(c)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := config.PolicySource(cfg).Load(); err != nil {
				t.Fatal(err)
			}
		})
	}
	dir := t.TempDir()
	for _, name := range []string{"single-node-sts.yaml", "single-node-policy.yaml"} {
		data, err := os.ReadFile(filepath.Join("../../deploy/examples", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := ensureTLS(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")); err != nil {
		t.Fatal(err)
	}
	up := testissuer.New(t, "https://issuer.example")
	if err := os.WriteFile(filepath.Join(dir, "cluster-a-jwks.json"), up.JWKS(), 0o600); err != nil {
		t.Fatal(err)
	}
	runBin(t, 0, "sts", "check-config", "--config", filepath.Join(dir, "single-node-sts.yaml"))
}

// TestE2EAuditIgnoresLogLevel: log.level error silences the application log, never
// the audit events.
func TestE2EAuditIgnoresLogLevel(t *testing.T) {
	e := setup(t, "")
	cfg, _ := os.ReadFile(e.cfg)
	e.write("sts.yaml", string(cfg)+"log: {level: error}\n")
	e.start()
	if _, err := e.exchange(e.a.Token(t, payments)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(e.log.String(), `"event":"exchange"`) })
	if strings.Contains(e.log.String(), `"msg":"sts serving"`) {
		t.Fatal("info-level application log printed at level error")
	}
}
