package hardening

import (
	"bytes"
	"crypto/tls"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestTokenPortEdge: what an outsider on the token port sees of the operations
// surface and the TLS profile. /metrics (rule, upstream and key-age names) is not
// there under any spelling; TLS 1.2 without an AEAD suite is refused; HTTPS
// answers carry HSTS.
func TestTokenPortEdge(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	t.Run("no metrics on the token port", func(t *testing.T) {
		for _, p := range []string{"/metrics", "/metrics/", "//metrics", "/./metrics", "/metrics?format=text", "/%6Detrics", "/Metrics"} {
			r := e.do(t, http.MethodGet, p, nil, "")
			if r.status == http.StatusOK || bytes.Contains(r.body, []byte("safeconduct_")) || bytes.Contains(r.body, []byte("go_goroutines")) {
				t.Errorf("GET %s: %s", p, r)
			}
		}
	})

	t.Run("CBC-only TLS 1.2 client refused", func(t *testing.T) {
		tr := e.client.Transport.(*http.Transport)
		c := &tls.Config{
			RootCAs: tr.TLSClientConfig.RootCAs, ServerName: tr.TLSClientConfig.ServerName,
			MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{
				tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
				tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
				tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256,
				tls.TLS_RSA_WITH_AES_128_CBC_SHA, tls.TLS_RSA_WITH_AES_256_CBC_SHA,
			},
		}
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", strings.TrimPrefix(e.url, "https://"), c)
		if err == nil {
			conn.Close()
			t.Fatalf("handshake completed with %s", tls.CipherSuiteName(conn.ConnectionState().CipherSuite))
		}
	})

	t.Run("HSTS", func(t *testing.T) {
		for _, p := range []string{"/healthz", "/.well-known/openid-configuration", "/nope"} {
			if got := e.do(t, http.MethodGet, p, nil, "").header.Get("Strict-Transport-Security"); !strings.HasPrefix(got, "max-age=") {
				t.Errorf("GET %s: Strict-Transport-Security %q", p, got)
			}
		}
	})
}
