// Package testkube gives Go tests a real Kubernetes control plane: an etcd and a
// kube-apiserver child process (v1.37.2 and v3.7.4, built from the Go module proxy
// and cached by scripts/kube-install.sh) on loopback ports, with RBAC, a static
// admin token, a service-account signing key, and anonymous access to the
// service-account issuer's discovery document and JWKS.
//
//	k := testkube.Start(t)
//	k.Client.CoreV1().Pods("ns").Create(...)         // as cluster admin
//	tok := k.PodToken(t, "ns", "sa", pod, "sts")       // TokenRequest bound to the pod
//	k.Issuer()                                         // the tokens' iss, serving discovery
//
// There is no controller-manager, scheduler or kubelet: create service accounts and
// namespaces yourself; pods stay Pending. The serving certificate is issued by a
// throwaway CA (CAFile) for 127.0.0.1; Kubeconfig is an admin kubeconfig file.
//
// Binaries: SAFECONDUCT_KUBE_DIR names a directory holding kube-apiserver and etcd;
// otherwise Start runs scripts/kube-install.sh from the module root, which prints
// the cache directory, building them first if needed (about 6 minutes on a quiet
// 2-core machine). When they cannot be had the test is skipped, or failed when
// CI=true.
//
// Everything stops when the test ends (SIGTERM, then SIGKILL after 5s); the
// processes run in their own process group and, on Linux, die with the test binary.
package testkube

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/safeconduct/safeconduct/internal/testbin"
	"github.com/safeconduct/safeconduct/internal/testproc"
)

// Kube is a running etcd and kube-apiserver.
type Kube struct {
	// URL is the API server, https://127.0.0.1:port; also the service-account issuer.
	URL string
	// CAFile holds the CA of the API server's serving certificate (PEM).
	CAFile string
	// Kubeconfig is an admin kubeconfig file for URL.
	Kubeconfig string
	// AdminToken is the static cluster-admin bearer token.
	AdminToken string
	// Client is a clientset authenticated as cluster admin.
	Client *kubernetes.Clientset

	dir       string
	apiBin    string
	apiArgs   []string
	apiserver *testbin.Proc
	etcd      *testbin.Proc
	http      *http.Client
}

// Start runs etcd and kube-apiserver for t and returns once /readyz answers (each
// bounded by 60s) and the discovery binding is in place.
func Start(t testing.TB) *Kube {
	t.Helper()
	// Outside Linux there is no Pdeathsig: an etcd or kube-apiserver could outlive
	// a killed test binary.
	if !testbin.DiesWithParent {
		testbin.Unavailable(t, "testkube", "the kube harness needs process groups, which this OS lacks")
	}
	apiBin, etcdBin := binaries(t)
	began := time.Now()
	dir, err := os.MkdirTemp("", "kube-")
	if err != nil {
		t.Fatalf("testkube: %v", err)
	}
	k := &Kube{dir: dir, apiBin: apiBin}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })

	// etcd on two free ports.
	clientPort, peerPort := testproc.FreePort(t), testproc.FreePort(t)
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(clientPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	k.etcd, err = testbin.StartAppend("etcd", etcdBin, dir, filepath.Join(dir, "etcd.log"),
		"--name", "default", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL, "--unsafe-no-fsync", "--log-level", "warn")
	if err != nil {
		t.Fatalf("testkube: %v", err)
	}
	t.Cleanup(k.etcd.Stop)
	if err := k.etcd.WaitHealthy(healthTimeout, func() error { return httpOK(http.DefaultClient, etcdURL+"/health", "") }); err != nil {
		k.logTails(t)
		t.Fatalf("testkube: %v", err)
	}

	// TLS, the service-account key and the admin token.
	port := testproc.FreePort(t)
	k.URL = "https://127.0.0.1:" + strconv.Itoa(port)
	k.CAFile = filepath.Join(dir, "ca.crt")
	pool := testproc.WriteTLS(t, "testkube CA", k.CAFile, filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	writeSAKey(t, filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub"))
	tokBytes := make([]byte, 24)
	_, _ = rand.Read(tokBytes)
	k.AdminToken = hex.EncodeToString(tokBytes)
	if err := os.WriteFile(filepath.Join(dir, "tokens.csv"), []byte(k.AdminToken+`,admin,admin-uid,"system:masters"`+"\n"), 0o600); err != nil {
		t.Fatalf("testkube: %v", err)
	}
	k.http = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	k.apiArgs = []string{
		"--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", strconv.Itoa(port),
		"--tls-cert-file", filepath.Join(dir, "tls.crt"), "--tls-private-key-file", filepath.Join(dir, "tls.key"),
		"--cert-dir", filepath.Join(dir, "certs"),
		"--token-auth-file", filepath.Join(dir, "tokens.csv"),
		"--authorization-mode", "RBAC",
		"--service-account-issuer", k.URL,
		"--service-account-key-file", filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file", filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range", "10.0.0.0/24",
		"--endpoint-reconciler-type", "none",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
	}
	k.startAPIServer(t)

	rc := &rest.Config{Host: k.URL, BearerToken: k.AdminToken, TLSClientConfig: rest.TLSClientConfig{CAFile: k.CAFile}}
	k.Client, err = kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatalf("testkube: %v", err)
	}
	k.Kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	if err := os.WriteFile(k.Kubeconfig, []byte(k.kubeconfig(k.AdminToken)), 0o600); err != nil {
		t.Fatalf("testkube: %v", err)
	}
	// Anonymous discovery and JWKS of the service-account issuer, as relying
	// parties (the STS) fetch them.
	ctx := context.Background()
	if _, err := k.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "testkube-anonymous-issuer-discovery"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:service-account-issuer-discovery"},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "Group", Name: "system:unauthenticated"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("testkube: discovery binding: %v", err)
	}
	if err := k.apiserver.WaitHealthy(healthTimeout, func() error {
		return httpOK(k.http, k.URL+"/.well-known/openid-configuration", "")
	}); err != nil {
		k.logTails(t)
		t.Fatalf("testkube: anonymous discovery: %v", err)
	}
	t.Logf("testkube: etcd and kube-apiserver up in %s at %s", time.Since(began).Round(time.Millisecond), k.URL)
	return k
}

func (k *Kube) startAPIServer(t testing.TB) {
	t.Helper()
	p, err := testbin.StartAppend("kube-apiserver", k.apiBin, k.dir, filepath.Join(k.dir, "apiserver.log"), k.apiArgs...)
	if err != nil {
		t.Fatalf("testkube: %v", err)
	}
	k.apiserver = p
	t.Cleanup(p.Stop)
	if err := p.WaitHealthy(healthTimeout, func() error { return httpOK(k.http, k.URL+"/readyz", k.AdminToken) }); err != nil {
		k.logTails(t)
		t.Fatalf("testkube: %v", err)
	}
}

// StopAPIServer stops the kube-apiserver (etcd keeps running), as in an outage.
func (k *Kube) StopAPIServer() { k.apiserver.Stop() }

// RestartAPIServer starts the kube-apiserver again with the same flags (and so
// the same port and etcd), and waits for /readyz.
func (k *Kube) RestartAPIServer(t testing.TB) { k.startAPIServer(t) }

// Issuer is the service-account issuer (iss of the tokens; serves discovery).
func (k *Kube) Issuer() string { return k.URL }

// Namespace creates a namespace.
func (k *Kube) Namespace(t testing.TB, name string) {
	t.Helper()
	if _, err := k.Client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("testkube: namespace %s: %v", name, err)
	}
}

// ServiceAccount creates a service account.
func (k *Kube) ServiceAccount(t testing.TB, ns, name string) *corev1.ServiceAccount {
	t.Helper()
	sa, err := k.Client.CoreV1().ServiceAccounts(ns).Create(context.Background(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("testkube: service account %s/%s: %v", ns, name, err)
	}
	return sa
}

// Pod creates a pod running as service account sa (it stays Pending: there is no
// scheduler).
func (k *Kube) Pod(t testing.TB, ns, name, sa string) *corev1.Pod {
	t.Helper()
	pod, err := k.Client.CoreV1().Pods(ns).Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			Containers:         []corev1.Container{{Name: "app", Image: "registry.invalid/app@sha256:" + fmt.Sprintf("%064x", 1)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("testkube: pod %s/%s: %v", ns, name, err)
	}
	return pod
}

// DeletePod deletes a pod at once (grace period 0).
func (k *Kube) DeletePod(t testing.TB, ns, name string) {
	t.Helper()
	zero := int64(0)
	if err := k.Client.CoreV1().Pods(ns).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatalf("testkube: delete pod %s/%s: %v", ns, name, err)
	}
}

// PodToken is a service-account token from the TokenRequest API, bound to pod
// (its kubernetes.io claim names the pod and its UID), for audience, valid 1h.
func (k *Kube) PodToken(t testing.TB, ns, sa string, pod *corev1.Pod, audience string) string {
	t.Helper()
	exp := int64(3600)
	tr, err := k.Client.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa, &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{
			Audiences: []string{audience}, ExpirationSeconds: &exp,
			BoundObjectRef: &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("testkube: token for %s/%s bound to pod %s: %v", ns, sa, pod.Name, err)
	}
	return tr.Status.Token
}

// Token is a service-account token (not bound to an object) for audience, 1h.
func (k *Kube) Token(t testing.TB, ns, sa, audience string) string {
	t.Helper()
	exp := int64(3600)
	tr, err := k.Client.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa, &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: &exp},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("testkube: token for %s/%s: %v", ns, sa, err)
	}
	return tr.Status.Token
}

// KubeconfigFor writes a kubeconfig for server (e.g. a proxy in front of URL)
// with the admin token and the CA, and returns its path.
func (k *Kube) KubeconfigFor(t testing.TB, server string) string {
	t.Helper()
	f, err := os.CreateTemp(k.dir, "kubeconfig-")
	if err != nil {
		t.Fatalf("testkube: %v", err)
	}
	defer f.Close()
	kc := k.kubeconfig(k.AdminToken)
	if server != k.URL {
		kc = fmt.Sprintf(kubeconfigTemplate, server, k.CAFile, k.AdminToken)
	}
	if _, err := f.WriteString(kc); err != nil {
		t.Fatalf("testkube: %v", err)
	}
	return f.Name()
}

const kubeconfigTemplate = `apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: %q, certificate-authority: %q, tls-server-name: "127.0.0.1"}
users:
- name: admin
  user: {token: %q}
contexts:
- name: test
  context: {cluster: test, user: admin}
current-context: test
`

func (k *Kube) kubeconfig(token string) string {
	return fmt.Sprintf(kubeconfigTemplate, k.URL, k.CAFile, token)
}

func (k *Kube) logTails(t testing.TB) {
	t.Helper()
	testbin.LogTails(t, "testkube", k.etcd, k.apiserver)
}

func httpOK(c *http.Client, url, token string) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// writeSAKey writes the service-account signing key (ES256) and its public key.
func writeSAKey(t testing.TB, keyPath, pubPath string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keyDER, _ := x509.MarshalECPrivateKey(key)
	pubDER, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatalf("testkube: %v", err)
	}
	if err := os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600); err != nil {
		t.Fatalf("testkube: %v", err)
	}
}
