package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/stsclient"
	"github.com/safeconduct/safeconduct/internal/testproc"
	"github.com/safeconduct/safeconduct/verify"
)

// End-to-end tests: the real sts and stswatch binaries, real TLS on 127.0.0.1, a
// real SPIRE server and agent (internal/testspire) and, for the Kubernetes source, a
// real kube-apiserver and etcd (internal/testkube); a verify-based downstream
// follows the STS's revocation feed.

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "stswatch-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, name := range []string{"sts", "stswatch"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), "../"+name)
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", name, err, out)
			os.Exit(1)
		}
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const ledger = "https://ledger.internal"

// proc is a child process (sts or stswatch) with its output in a buffer.
type proc struct {
	t    *testing.T
	name string
	args []string
	env  []string // added to the test's environment
	cmd  *exec.Cmd
	log  *testproc.Buffer
	done chan error
}

func (p *proc) start() {
	p.t.Helper()
	p.cmd = exec.Command(filepath.Join(binDir, p.name), p.args...)
	p.cmd.Dir = p.t.TempDir()
	p.cmd.Env = append(os.Environ(), p.env...)
	p.log = &testproc.Buffer{}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	done := make(chan error, 1)
	p.done = done
	cmd := p.cmd
	go func() { done <- cmd.Wait() }()
	p.t.Cleanup(func() { p.stop() })
}

// stop sends SIGTERM and waits (bounded) for the exit; it is idempotent.
func (p *proc) stop() {
	if p.cmd == nil || p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		p.t.Errorf("%s did not stop within 20s", p.name)
	}
}

func (p *proc) exited() bool {
	select {
	case err := <-p.done:
		p.done <- err
		return true
	default:
		return false
	}
}

// env is one STS (TLS on a loopback port, embedded revocation store) and the
// files around it.
type env struct {
	t      *testing.T
	dir    string
	url    string
	caFile string
	client *http.Client
	sts    *proc
}

func newEnv(t *testing.T, stsConfig func(e *env) string, policy string) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir()}
	port := testproc.FreePort(t)
	e.url = fmt.Sprintf("https://127.0.0.1:%d", port)
	e.caFile = e.path("ca.crt")
	pool := writeTLS(t, e.caFile, e.path("tls.crt"), e.path("tls.key"))
	e.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	e.write("sts.yaml", fmt.Sprintf("issuer: %s\nlisten: 127.0.0.1:%d\ntls: {cert_file: tls.crt, key_file: tls.key}\n"+
		"signing: {algorithm: ES256, key_dir: keys}\ntokens: {default_ttl: 5m, max_ttl: 1h}\n"+
		"policy_files: [policy.yaml]\nrevocation: {backend: embedded, embedded: {path: data/revocation.db}}\n%s", e.url, port, stsConfig(e)))
	e.write("policy.yaml", policy)
	e.sts = &proc{t: t, name: "sts", args: []string{"serve", "--config", e.path("sts.yaml")}}
	return e
}

func (e *env) path(name string) string { return filepath.Join(e.dir, name) }

func (e *env) write(name, data string) {
	e.t.Helper()
	// Written to a temporary file and renamed, as a kubelet or a SPIFFE helper
	// replaces a credential: readers never see half a file.
	tmp := e.path(name + ".tmp")
	if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, e.path(name)); err != nil {
		e.t.Fatal(err)
	}
}

// startSTS starts the STS and waits (up to 30s) until discovery answers.
func (e *env) startSTS() {
	t := e.t
	t.Helper()
	e.sts.start()
	waitUntil(t, 30*time.Second, "the STS to serve discovery", func() bool {
		if e.sts.exited() {
			t.Fatalf("sts exited early\n%s", e.sts.log)
		}
		resp, err := e.client.Get(e.url + "/.well-known/openid-configuration")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// exchange trades a subject token for a ledger token.
func (e *env) exchange(subject string) string {
	e.t.Helper()
	resp, err := stsclient.Exchange(context.Background(), e.client, e.url+"/token", stsclient.Request{
		SubjectToken: subject, SubjectTokenType: stsclient.TypeJWT, Audiences: []string{ledger}, Scopes: []string{"ledger.read"},
	})
	if err != nil {
		e.t.Fatalf("exchange: %v\n%s", err, e.sts.log)
	}
	return resp.AccessToken
}

// verifier is a downstream following the revocation feed with feedToken.
func (e *env) verifier(feedToken func() string) *verify.Verifier {
	e.t.Helper()
	ctx := context.Background()
	v, err := verify.New(ctx, verify.Config{
		Issuer: e.url, Audience: ledger, HTTPClient: e.client, RequireFeed: true, MaxStale: time.Minute,
		FeedToken: func(context.Context) (string, error) { return feedToken(), nil },
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { v.Close() })
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := v.WaitSynced(wctx); err != nil {
		e.t.Fatalf("verifier feed: %v (%+v)\n%s", err, v.Status(), e.sts.log)
	}
	return v
}

// awaitRevoked waits (up to limit) until v refuses tok as revoked and returns how
// long that took from since.
func awaitRevoked(t *testing.T, v *verify.Verifier, tok string, since time.Time, limit time.Duration, what string) time.Duration {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		_, err := v.Verify(context.Background(), tok)
		if errors.Is(err, verify.ErrRevoked) {
			return time.Since(since)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the downstream still does not refuse the token after %s (last: %v)", what, limit, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// mustVerify fails t unless v accepts tok.
func mustVerify(t *testing.T, v *verify.Verifier, tok, what string) {
	t.Helper()
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// watcher is a running stswatch.
type watcher struct {
	*proc
	ops string
}

func (e *env) startWatcher(name, config string) *watcher {
	e.t.Helper()
	ops := fmt.Sprintf("127.0.0.1:%d", testproc.FreePort(e.t))
	e.write(name+".yaml", fmt.Sprintf("listen: %s\n%s", ops, config))
	w := &watcher{proc: &proc{t: e.t, name: "stswatch", args: []string{"run", "--config", e.path(name + ".yaml")}}, ops: ops}
	w.start()
	return w
}

// readyz returns the status of /readyz and its body.
func (w *watcher) readyz() (int, string) {
	resp, err := http.Get("http://" + w.ops + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		b.WriteString(sc.Text())
	}
	return resp.StatusCode, b.String()
}

func (w *watcher) awaitReady(limit time.Duration) {
	w.t.Helper()
	waitUntil(w.t, limit, "stswatch /readyz 200", func() bool {
		if w.exited() {
			w.t.Fatalf("stswatch exited\n%s", w.log)
		}
		code, _ := w.readyz()
		return code == 200
	})
}

// metric sums the samples of /metrics whose line starts with name and contains
// every label ("key=\"value\"").
func (w *watcher) metric(name string, labels ...string) float64 {
	w.t.Helper()
	resp, err := http.Get("http://" + w.ops + "/metrics")
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			w.t.Fatalf("metric line %q", line)
		}
		sum += v
	}
	return sum
}

// waitUntil polls cond every 50ms until it holds, failing t after limit.
func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// writeTLS writes a throwaway CA and a serving certificate for 127.0.0.1 and
// returns a pool trusting the CA.
func writeTLS(t *testing.T, caPath, certPath, keyPath string) *x509.CertPool {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "stswatch test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	for path, block := range map[string]*pem.Block{
		caPath:   {Type: "CERTIFICATE", Bytes: caDER},
		certPath: {Type: "CERTIFICATE", Bytes: der},
		keyPath:  {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool
}
