package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/safeconduct/safeconduct/config"
	"github.com/safeconduct/safeconduct/internal/stsclient"
)

// Quickstart demo values.
const (
	demoUpstreamIssuer = "https://demo-upstream.safeconduct.invalid"
	demoSubject        = "system:serviceaccount:demo:app"
	demoAudience       = "https://api.demo.internal"
	demoScope          = "api.read"
)

// Quickstart admin values: a second upstream stands for the local user's own
// identity provider, and an admin rule lets that user use the admin API.
const (
	localUpstreamIssuer = "https://local-admin.safeconduct.invalid"
	localUpstream       = "local"
	quickstartAdminRule = "local-admin"
)

// cmdQuickstart writes a self-contained demo setup into a directory (self-signed CA
// and TLS certificate, a demo upstream issuer whose keys are a JWKS file, a policy,
// a subject token and an admin token for the local user), starts the STS on it,
// exchanges the subject token over HTTPS, validates the result from discovery like
// a downstream API, prints it all, and keeps serving until interrupted. Audit
// events go to stderr. A directory that exists is reused: its keys, certificates,
// sts.yaml and policy.yaml are kept as they are (edit them and run again); the
// JWKS file and the tokens are refreshed.
func cmdQuickstart(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sts quickstart", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "sts-quickstart", "directory for the demo files (reused when it exists: sts.yaml, policy.yaml, keys and certificates are kept)")
	listen := fs.String("listen", "127.0.0.1:8443", "address to serve on (for a new directory; a reused one keeps its sts.yaml's listen)")
	once := fs.Bool("once", false, "stop after the demo exchange instead of serving")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sts quickstart: unexpected arguments %q\n", fs.Args())
		return 2
	}
	listenSet := false
	fs.Visit(func(f *flag.Flag) { listenSet = listenSet || f.Name == "listen" })
	host, port, err := net.SplitHostPort(*listen)
	if err != nil || (host != "127.0.0.1" && host != "localhost") {
		fmt.Fprintln(stderr, "sts quickstart: --listen must be 127.0.0.1:PORT or localhost:PORT")
		return 2
	}
	cfgPath := filepath.Join(*dir, "sts.yaml")
	if cfg, err := config.Load(cfgPath); err == nil && listenSet && cfg.Listen != *listen {
		fmt.Fprintf(stderr, "sts quickstart: %s exists and listens on %s: edit its listen and issuer, or use another --dir\n", cfgPath, cfg.Listen)
		return 2
	}
	kept, err := writeQuickstart(*dir, "https://127.0.0.1:"+port, *listen)
	if err != nil {
		fmt.Fprintln(stderr, "sts quickstart:", err)
		return 1
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "sts quickstart:", err)
		return 1
	}
	base := strings.TrimSuffix(cfg.Issuer, "/")
	if len(kept) > 0 {
		fmt.Fprintf(stdout, "Reusing %s: kept %s as they are (remove the directory to start afresh).\n\n", *dir, strings.Join(kept, ", "))
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready := make(chan struct{})
	done := make(chan error, 1)
	// Audit events (one JSON line per decision) go to stderr, as with sts serve.
	go func() { done <- serve(ctx, cfg, log, stderr, func() { close(ready) }) }()
	select {
	case <-ready:
	case err := <-done:
		fmt.Fprintln(stderr, "sts quickstart:", err)
		return 1
	}
	if err := demoExchange(ctx, stdout, *dir, base, cfg); err != nil {
		fmt.Fprintln(stderr, "sts quickstart: demo exchange failed:", err)
		if *once {
			cancel()
			<-done
			return 1
		}
		fmt.Fprintf(stderr, "sts quickstart: (an edited %s or sts.yaml?) the STS keeps serving at %s\n", filepath.Join(*dir, "policy.yaml"), base)
	}
	if *once {
		cancel()
		<-done
		return 0
	}
	fmt.Fprintf(stdout, "\nThe STS keeps serving at %s; press Ctrl-C to stop.\n", base)
	if err := <-done; err != nil {
		fmt.Fprintln(stderr, "sts quickstart:", err)
		return 1
	}
	return 0
}

func demoExchange(ctx context.Context, w io.Writer, dir, base string, cfg *config.Config) error {
	client, err := stsclient.HTTPClient(filepath.Join(dir, "ca.crt"), 10*time.Second)
	if err != nil {
		return err
	}
	subject, err := os.ReadFile(filepath.Join(dir, "demo-subject.jwt"))
	if err != nil {
		return err
	}
	resp, err := stsclient.Exchange(ctx, client, base+"/token", stsclient.Request{
		SubjectToken:     strings.TrimSpace(string(subject)),
		SubjectTokenType: stsclient.TypeJWT,
		Audiences:        []string{demoAudience},
		Scopes:           []string{demoScope},
	})
	if err != nil {
		return err
	}
	claims, err := stsclient.Verify(ctx, client, base, demoAudience, resp.AccessToken)
	if err != nil {
		return fmt.Errorf("minted token does not verify: %w", err)
	}
	pretty, _ := json.MarshalIndent(claims, "  ", "  ")
	fmt.Fprintf(w, `safeconduct quickstart: STS at %[1]s (files in %[2]s)

1. A demo workload %[3]q presented an upstream token (%[2]s/demo-subject.jwt)
   and asked for audience %[4]s with scope %[5]s.
2. The STS verified it, applied %[2]s/policy.yaml and minted (expires in %[6]ds):
  %[7]s
3. The token verifies from %[1]s/.well-known/openid-configuration with go-oidc.
4. The decision was audited: one JSON line per decision ("log":"audit") on stderr.

Try it yourself (stsctl also reads STSCTL_STS, STSCTL_CACERT and STSCTL_TOKEN):
  go run ./cmd/stsctl exchange --sts %[1]s --cacert %[2]s/ca.crt \
    --subject-token @%[2]s/demo-subject.jwt --audience %[4]s --scope %[5]s
  go run ./cmd/stsctl verify --issuer %[1]s --cacert %[2]s/ca.crt --audience %[4]s --token @FILE
  go run ./cmd/stsctl policy test --config %[2]s/sts.yaml --subject-token @%[2]s/demo-subject.jwt --audience %[4]s
  go run ./cmd/stsctl policy review --config %[2]s/sts.yaml
    (with metrics_listen set in sts.yaml: --metrics http://127.0.0.1:9090/metrics)
`, base, dir, demoSubject, demoAudience, demoScope, resp.ExpiresIn, pretty)
	if !slices.ContainsFunc(cfg.Upstreams, func(u config.UpstreamConfig) bool { return u.Name == localUpstream }) {
		fmt.Fprintf(w, "\n(%s has no %q upstream, so %s/admin.jwt is not accepted: it predates the quickstart's admin rule; remove %[3]s to regenerate it)\n",
			filepath.Join(dir, "sts.yaml"), localUpstream, dir)
		return nil
	}
	fmt.Fprintf(w, `
Admin API as the local user (%[2]s/admin.jwt, allowed by the admin rule %[3]q in policy.yaml):
  go run ./cmd/stsctl revoke --sts %[1]s --cacert %[2]s/ca.crt --token @%[2]s/admin.jwt \
    --selector "upstream=demo,sub=%[4]s" --reason "trying revocation" --for 10m
  go run ./cmd/stsctl revocations list --sts %[1]s --cacert %[2]s/ca.crt --token @%[2]s/admin.jwt
  go run ./examples/verify-api --issuer %[1]s --cacert %[2]s/ca.crt \
    --audience %[5]s --feed-token-file %[2]s/admin.jwt
`, base, dir, quickstartAdminRule, demoSubject, demoAudience)
	return nil
}

// writeQuickstart creates the demo files in dir. Existing keys, certificates,
// sts.yaml and policy.yaml are kept (so the JWKS stays stable and edits survive);
// the JWKS file (derived from the key) and the tokens (they expire) are rewritten.
// It returns the names of the files it kept.
func writeQuickstart(dir, base, listen string) (kept []string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	if err := ensureTLS(p("ca.crt"), p("tls.crt"), p("tls.key")); err != nil {
		return nil, err
	}
	upKey, err := ensureECKey(p("demo-upstream-key.pem"))
	if err != nil {
		return nil, err
	}
	kid := keyID(upKey.Public())
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: upKey.Public(), KeyID: kid, Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tok, err := demoSubjectToken(upKey, kid, now)
	if err != nil {
		return nil, err
	}
	admin := localUser()
	adminTok, err := signDemo(upKey, kid, map[string]any{
		"iss": localUpstreamIssuer, "sub": admin, "aud": []string{"sts"},
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(12 * time.Hour).Unix(),
	})
	if err != nil {
		return nil, err
	}
	refreshed := map[string]string{
		"demo-upstream-jwks.json": string(jwks),
		"demo-subject.jwt":        tok + "\n",
		"admin.jwt":               adminTok + "\n",
	}
	for name, data := range refreshed {
		if err := os.WriteFile(p(name), []byte(data), 0o600); err != nil {
			return nil, err
		}
	}
	editable := []struct{ name, data string }{
		{"sts.yaml", fmt.Sprintf(`# safeconduct quickstart configuration (generated by sts quickstart; a second run
# keeps this file as you edit it)
issuer: %s
listen: %s
tls: {cert_file: tls.crt, key_file: tls.key}
signing: {algorithm: ES256, key_dir: keys}
tokens: {default_ttl: 5m, max_ttl: 1h}
upstreams:
  - name: demo
    kind: oidc
    issuer: %s
    audiences: [sts]
    jwks_file: demo-upstream-jwks.json
    preset: kubernetes                 # namespace, service_account, pod, ... from the token
    subjects: ["system:serviceaccount:demo:*"]   # what this upstream may assert
  - name: %s                         # the local user's identity (admin.jwt), for the admin API
    kind: oidc
    issuer: %s
    audiences: [sts]
    jwks_file: demo-upstream-jwks.json
    subjects: [%q]
policy_files: [policy.yaml]
revocation:
  backend: embedded
  embedded: {path: data/revocation.db}
log: {level: info, format: text}
# audit events go to stderr; audit: {path: audit.jsonl} writes them to a file instead
# metrics_listen: 127.0.0.1:9090      # /metrics, /healthz, /readyz over plain HTTP (unset: no metrics)
`, base, listen, demoUpstreamIssuer, localUpstream, localUpstreamIssuer, admin)},
		{"policy.yaml", fmt.Sprintf(`# Demo issuance policy: workloads of namespace "demo" may get the demo API.
# (generated by sts quickstart; a second run keeps this file as you edit it)
version: 2   # '*' matches within one ':' or '/' segment, '**' across
rules:
  - name: demo-to-api
    effect: allow
    owner: you@example.com
    upstreams: [demo]
    subjects: ["system:serviceaccount:demo:*"]
    when: 'workload.attributes["namespace"] == "demo"'
    audiences: [%q]
    scopes: [api.read, api.write]
    max_ttl: 10m
    copy_attributes: [namespace, service_account]
admin:
  # The local user (admin.jwt) may use the admin API: stsctl revoke, revocations,
  # keys revoke, introspection and the revocation feed (examples/verify-api).
  - name: %s
    owner: you@example.com
    upstreams: [%s]
    subjects: [%q]
    actions: [revoke, block, lift, list, report_change, rotate_keys, read_feed, introspect]
    within_upstreams: ["*"]
`, demoAudience, quickstartAdminRule, localUpstream, admin)},
	}
	for _, f := range editable {
		switch _, err := os.Stat(p(f.name)); {
		case err == nil:
			kept = append(kept, f.name)
			continue
		case !errors.Is(err, os.ErrNotExist):
			return nil, err
		}
		if err := os.WriteFile(p(f.name), []byte(f.data), 0o600); err != nil {
			return nil, err
		}
	}
	return kept, nil
}

// localUser is the subject of the quickstart's admin token: the local user's
// name, reduced to characters that need no quoting, or "admin".
func localUser() string {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	name = strings.Map(func(r rune) rune {
		if 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("._-@", r) {
			return r
		}
		return -1
	}, name)
	if name == "" || len(name) > 64 {
		return "admin"
	}
	return name
}

// demoSubjectToken is what the demo upstream would give the demo workload: a
// Kubernetes-style service-account token for audience "sts", valid for an hour.
func demoSubjectToken(key *ecdsa.PrivateKey, kid string, now time.Time) (string, error) {
	return signDemo(key, kid, map[string]any{
		"iss": demoUpstreamIssuer,
		"sub": demoSubject,
		"aud": []string{"sts"},
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
		"kubernetes.io": map[string]any{
			"namespace":      "demo",
			"serviceaccount": map[string]any{"name": "app", "uid": "5f0c1a7e-0000-4000-8000-000000000001"},
		},
	})
}

// signDemo signs claims with the demo upstream key.
func signDemo(key *ecdsa.PrivateKey, kid string, claims map[string]any) (string, error) {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	return jwt.Signed(s).Claims(claims).Serialize()
}

func keyID(pub crypto.PublicKey) string {
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		panic(err) // an ECDSA public key always has a thumbprint
	}
	return base64.RawURLEncoding.EncodeToString(tp)
}

// ensureECKey loads a P-256 key from path, creating it (0600) if missing.
func ensureECKey(path string) (*ecdsa.PrivateKey, error) {
	if data, err := os.ReadFile(path); err == nil {
		block, _ := pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("%s: no PEM block", path)
		}
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		ec, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%s: not an EC key", path)
		}
		return ec, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return k, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// ensureTLS creates a throwaway CA and a server certificate for 127.0.0.1 and
// localhost, unless the files exist and the certificate is still valid for a day.
func ensureTLS(caPath, certPath, keyPath string) error {
	if data, err := os.ReadFile(certPath); err == nil {
		if block, _ := pem.Decode(data); block != nil {
			if c, err := x509.ParseCertificate(block.Bytes); err == nil && time.Until(c.NotAfter) > 24*time.Hour {
				if _, err := os.Stat(caPath); err == nil {
					return nil
				}
			}
		}
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	ca := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "safeconduct quickstart CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, caKey.Public(), caKey)
	if err != nil {
		return err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	leaf := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(30 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:     []string{"localhost"},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, srvKey.Public(), caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(caPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n
}
