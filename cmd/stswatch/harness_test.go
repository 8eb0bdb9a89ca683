package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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

func TestMain(m *testing.M) { testproc.MainWithCommands(m, &binDir, "sts", "stswatch") }

const ledger = "https://ledger.internal"

// proc is a child process (sts or stswatch) with its output in a buffer.
type proc struct {
	t    *testing.T
	name string
	args []string
	env  []string // added to the test's environment
	*testproc.Process
}

func (p *proc) start() {
	p.t.Helper()
	cmd := exec.Command(filepath.Join(binDir, p.name), p.args...)
	cmd.Dir = p.t.TempDir()
	cmd.Env = append(os.Environ(), p.env...)
	p.Process = testproc.Start(p.t, cmd)
	p.t.Cleanup(p.stop)
}

// stop sends SIGTERM and waits (bounded) for the exit; it is idempotent.
func (p *proc) stop() {
	if p.Process == nil {
		return
	}
	if err := p.Stop(20 * time.Second); errors.Is(err, testproc.ErrKilled) {
		p.t.Error(err)
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
	pool := testproc.WriteTLS(t, "stswatch test CA", e.caFile, e.path("tls.crt"), e.path("tls.key"))
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
	e.sts.WaitReady(t, 30*time.Second, func() bool { return testproc.StatusOK(e.client, e.url+"/.well-known/openid-configuration") })
}

// exchange trades a subject token for a ledger token.
func (e *env) exchange(subject string) string {
	e.t.Helper()
	resp, err := stsclient.Exchange(context.Background(), e.client, e.url+"/token", stsclient.Request{
		SubjectToken: subject, SubjectTokenType: stsclient.TypeJWT, Audiences: []string{ledger}, Scopes: []string{"ledger.read"},
	})
	if err != nil {
		e.t.Fatalf("exchange: %v\n%s", err, e.sts.Log)
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
		e.t.Fatalf("verifier feed: %v (%+v)\n%s", err, v.Status(), e.sts.Log)
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
	w.WaitReady(w.t, limit, func() bool { code, _ := w.readyz(); return code == 200 })
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
