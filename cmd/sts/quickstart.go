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
	"path/filepath"
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

// cmdQuickstart writes a self-contained demo setup into a directory (self-signed CA
// and TLS certificate, a demo upstream issuer whose keys are a JWKS file, a policy and
// a subject token), starts the STS on it, exchanges the subject token over HTTPS,
// validates the result from discovery like a downstream API, prints it all, and keeps
// serving until interrupted.
func cmdQuickstart(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("quickstart", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "sts-quickstart", "directory for the demo files (reused when it exists)")
	listen := fs.String("listen", "127.0.0.1:8443", "address to serve on")
	once := fs.Bool("once", false, "stop after the demo exchange instead of serving")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	host, port, err := net.SplitHostPort(*listen)
	if err != nil || (host != "127.0.0.1" && host != "localhost") {
		fmt.Fprintln(stderr, "sts quickstart: --listen must be 127.0.0.1:PORT or localhost:PORT")
		return 2
	}
	base := "https://127.0.0.1:" + port
	if err := writeQuickstart(*dir, base, *listen); err != nil {
		fmt.Fprintln(stderr, "sts quickstart:", err)
		return 1
	}
	cfg, err := config.Load(filepath.Join(*dir, "sts.yaml"))
	if err != nil {
		fmt.Fprintln(stderr, "sts quickstart:", err)
		return 1
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, log, io.Discard, func() { close(ready) }) }()
	select {
	case <-ready:
	case err := <-done:
		fmt.Fprintln(stderr, "sts quickstart:", err)
		return 1
	}
	if err := demoExchange(ctx, stdout, *dir, base); err != nil {
		fmt.Fprintln(stderr, "sts quickstart: demo exchange failed:", err)
		cancel()
		<-done
		return 1
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

func demoExchange(ctx context.Context, w io.Writer, dir, base string) error {
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

Try it yourself:
  go run ./cmd/stsctl exchange --sts %[1]s --cacert %[2]s/ca.crt \
    --subject-token @%[2]s/demo-subject.jwt --audience %[4]s --scope %[5]s
  go run ./cmd/stsctl verify --issuer %[1]s --cacert %[2]s/ca.crt --audience %[4]s --token @FILE
  go run ./cmd/stsctl policy test --config %[2]s/sts.yaml --subject-token @%[2]s/demo-subject.jwt --audience %[4]s
  go run ./cmd/stsctl policy review --config %[2]s/sts.yaml
    (with metrics_listen set in sts.yaml: --metrics http://127.0.0.1:9090/metrics)
`, base, dir, demoSubject, demoAudience, demoScope, resp.ExpiresIn, pretty)
	return nil
}

// writeQuickstart creates the demo files in dir. Existing keys and certificates are
// kept (so the JWKS stays stable across runs); the config, policy and subject token
// are rewritten.
func writeQuickstart(dir, base, listen string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	if err := ensureTLS(p("ca.crt"), p("tls.crt"), p("tls.key")); err != nil {
		return err
	}
	upKey, err := ensureECKey(p("demo-upstream-key.pem"))
	if err != nil {
		return err
	}
	kid := keyID(upKey.Public())
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: upKey.Public(), KeyID: kid, Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		return err
	}
	tok, err := demoSubjectToken(upKey, kid, time.Now())
	if err != nil {
		return err
	}
	files := map[string]string{
		"demo-upstream-jwks.json": string(jwks),
		"demo-subject.jwt":        tok + "\n",
		"sts.yaml": fmt.Sprintf(`# safeconduct quickstart configuration (generated by sts quickstart)
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
policy_files: [policy.yaml]
revocation:
  backend: embedded
  embedded: {path: data/revocation.db}
log: {level: info, format: text}
# metrics_listen: 127.0.0.1:9090      # /metrics, /healthz, /readyz over plain HTTP (unset: no metrics)
`, base, listen, demoUpstreamIssuer),
		"policy.yaml": fmt.Sprintf(`# Demo issuance policy: workloads of namespace "demo" may get the demo API.
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
`, demoAudience),
	}
	for name, data := range files {
		if err := os.WriteFile(p(name), []byte(data), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// demoSubjectToken is what the demo upstream would give the demo workload: a
// Kubernetes-style service-account token for audience "sts", valid for an hour.
func demoSubjectToken(key *ecdsa.PrivateKey, kid string, now time.Time) (string, error) {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	return jwt.Signed(s).Claims(map[string]any{
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
	}).Serialize()
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
