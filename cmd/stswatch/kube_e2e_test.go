package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/safeconduct/safeconduct/internal/testkube"
	"github.com/safeconduct/safeconduct/internal/testproc"
)

const kubeWatchPolicy = `rules:
  - name: payments-to-ledger
    effect: allow
    upstreams: [cluster]
    subjects: ["system:serviceaccount:payments:*"]
    audiences: ["https://ledger.internal"]
    scopes: [ledger.read]
admin:
  - name: watcher
    upstreams: [cluster]
    subjects: ["system:serviceaccount:safeconduct:stswatch"]
    actions: [revoke, report_change]
    within_upstreams: [cluster]
  - name: ledger-feed
    upstreams: [cluster]
    subjects: ["system:serviceaccount:payments:ledger"]
    actions: [read_feed]
    within_upstreams: ["*"]
`

// cutProxy forwards TCP connections to target until cut, when it closes every
// connection and refuses new ones: the API server unreachable for one client only.
type cutProxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]bool
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{l: l, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { l.Close(); p.setCut(true) })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.cut {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns[c] = true
			p.mu.Unlock()
			go p.forward(c)
		}
	}()
	return p
}

func (p *cutProxy) forward(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[up] = true
	p.mu.Unlock()
	go func() { _, _ = io.Copy(up, c); up.Close() }()
	_, _ = io.Copy(c, up)
	c.Close()
}

func (p *cutProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
		p.conns = map[net.Conn]bool{}
	}
}

func (p *cutProxy) url() string { return "https://" + p.l.Addr().String() }

// kubeEnv is a real kube-apiserver, an STS whose upstream is its service-account
// issuer (preset kubernetes, tokens bound to pods), and the credentials of the
// watcher and the downstream: service-account tokens from TokenRequest.
type kubeEnv struct {
	*env
	k     *testkube.Kube
	proxy *cutProxy
}

func startKubeEnv(t *testing.T) *kubeEnv {
	t.Helper()
	k := testkube.Start(t)
	ke := &kubeEnv{k: k}
	for _, ns := range []string{"payments", "safeconduct"} {
		k.Namespace(t, ns)
	}
	k.ServiceAccount(t, "safeconduct", "stswatch")
	k.ServiceAccount(t, "payments", "ledger")
	ke.env = newEnv(t, func(e *env) string {
		return fmt.Sprintf(`upstreams:
  - name: cluster
    kind: oidc
    issuer: %s
    audiences: [sts]
    preset: kubernetes
    binding_attributes: [pod_uid]
    instance_attributes: [pod]
`, k.Issuer())
	}, kubeWatchPolicy)
	// The STS fetches the API server's discovery and JWKS over TLS.
	ke.sts.env = []string{"SSL_CERT_FILE=" + k.CAFile}
	ke.write("watcher.jwt", k.Token(t, "safeconduct", "stswatch", "sts"))
	ke.startSTS()
	ke.proxy = newCutProxy(t, strings.TrimPrefix(k.URL, "https://"))
	return ke
}

func (ke *kubeEnv) watcherConfig(stateDir string) string {
	return fmt.Sprintf(`sts: {url: %q, ca_file: %q, credential_file: %q, max_backoff: 1s}
state_dir: %q
kubernetes:
  kubeconfig: %q
  upstream: cluster
  binding_attributes: [pod_uid]
  instance_attributes: [pod]
`, ke.url, ke.caFile, ke.path("watcher.jwt"), ke.path(stateDir), ke.k.KubeconfigFor(ke.t, ke.proxy.url()))
}

// podToken creates a pod running as sa and returns a ledger token minted for a
// service-account token bound to it.
func (ke *kubeEnv) podToken(name, sa string) string {
	ke.t.Helper()
	pod := ke.k.Pod(ke.t, "payments", name, sa)
	return ke.exchange(ke.k.PodToken(ke.t, "payments", sa, pod, "sts"))
}

// TestE2EWatcherKubernetes: real pod-bound service-account tokens from a real
// kube-apiserver, attested by the STS through the kubernetes preset; the watcher
// (client-go informers) revokes a deleted pod's tokens and only those, a deleted
// service account's tokens, the pods deleted while it could not reach the API
// server (every one), and the pods deleted while it was stopped.
func TestE2EWatcherKubernetes(t *testing.T) {
	ke := startKubeEnv(t)
	feedTok := ke.k.Token(t, "payments", "ledger", "sts")
	v := ke.verifier(func() string { return feedTok })

	ke.k.ServiceAccount(t, "payments", "api")
	ke.k.ServiceAccount(t, "payments", "batch")
	tok := map[string]string{}
	for _, p := range []string{"api-1", "api-2", "api-3", "api-4", "api-5", "api-6", "api-7"} {
		tok[p] = ke.podToken(p, "api")
	}
	tok["batch-1"] = ke.podToken("batch-1", "batch")
	for name, tk := range tok {
		mustVerify(t, v, tk, "fresh token of "+name)
	}

	w := ke.startWatcher("watch", ke.watcherConfig("state"))
	w.awaitReady(60 * time.Second)
	// The watcher's first change reports (one per pod) carry the attributes the
	// STS derived from the real tokens: same fingerprint, nothing revoked.
	testproc.WaitUntil(t, 30*time.Second, "the initial change reports", func() bool {
		return w.metric("stswatch_reports_total", `kind="change"`, `outcome="delivered"`) >= 8
	})
	for name, tk := range tok {
		mustVerify(t, v, tk, "after the watcher's initial reports, the token of "+name)
	}

	// 1. A pod deleted: its token is refused; its sibling's (same service account) is not.
	at := time.Now()
	ke.k.DeletePod(t, "payments", "api-1")
	took := awaitRevoked(t, v, tok["api-1"], at, 30*time.Second, "pod deleted")
	t.Logf("pod deleted -> token refused downstream in %s", took.Round(time.Millisecond))
	mustVerify(t, v, tok["api-2"], "the token of another pod of the same service account")

	// 2. Replaced under the same name with a new UID: the old pod's token is refused,
	// the new pod's token works.
	ke.k.DeletePod(t, "payments", "api-2")
	awaitRevoked(t, v, tok["api-2"], time.Now(), 30*time.Second, "pod replaced")
	newTok := ke.podToken("api-2", "api")
	mustVerify(t, v, newTok, "the replacement pod's token")

	// 3. The API server unreachable (for the watcher): not ready; the pods deleted
	// meanwhile are all revoked once it is back.
	ke.proxy.setCut(true)
	testproc.WaitUntil(t, 30*time.Second, "readyz to report the API server unreachable", func() bool {
		code, body := w.readyz()
		return code == 503 && strings.Contains(body, `"kubernetes"`)
	})
	for _, p := range []string{"api-3", "api-4"} {
		ke.k.DeletePod(t, "payments", p)
	}
	ke.proxy.setCut(false)
	for _, p := range []string{"api-3", "api-4"} {
		awaitRevoked(t, v, tok[p], time.Now(), 60*time.Second, p+" deleted while the API server was unreachable")
	}
	w.awaitReady(60 * time.Second)
	mustVerify(t, v, tok["api-5"], "a pod not deleted")
	mustVerify(t, v, newTok, "the replacement pod's token, after the resync")

	// The API server itself restarted: the informers reconnect and the next
	// deletion is reported.
	ke.k.StopAPIServer()
	testproc.WaitUntil(t, 30*time.Second, "readyz to report the API server down", func() bool {
		code, body := w.readyz()
		return code == 503 && strings.Contains(body, `"kubernetes"`)
	})
	ke.k.RestartAPIServer(t)
	w.awaitReady(60 * time.Second)
	at = time.Now()
	ke.k.DeletePod(t, "payments", "api-7")
	awaitRevoked(t, v, tok["api-7"], at, 60*time.Second, "pod deleted after the API server restarted")

	// 4. Deleted while the watcher was stopped: found on restart (state file).
	w.stop()
	ke.k.DeletePod(t, "payments", "api-5")
	w = ke.startWatcher("watch", ke.watcherConfig("state"))
	awaitRevoked(t, v, tok["api-5"], time.Now(), 60*time.Second, "pod deleted while the watcher was stopped")
	mustVerify(t, v, tok["api-6"], "a pod not deleted, after the restart")

	// 5. A service account deleted: every token of it.
	if err := ke.k.Client.CoreV1().ServiceAccounts("payments").Delete(context.Background(), "batch", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	awaitRevoked(t, v, tok["batch-1"], time.Now(), 30*time.Second, "service account deleted")
	mustVerify(t, v, tok["api-6"], "a token of another service account")

	if got := w.metric("stswatch_reports_total", `outcome="forbidden"`) + w.metric("stswatch_reports_total", `outcome="rejected"`); got != 0 {
		t.Fatalf("%v reports forbidden or rejected:\n%s", got, w.Log)
	}
}
