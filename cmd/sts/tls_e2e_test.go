package main

import (
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// handshake connects to e's listener with a client limited to minV..maxV and, for
// TLS 1.2, suites; it returns the handshake's error.
func handshake(t *testing.T, e *e2e, minV, maxV uint16, suites []uint16) error {
	t.Helper()
	base := e.client.Transport.(*http.Transport).TLSClientConfig
	c := &tls.Config{RootCAs: base.RootCAs, ServerName: "127.0.0.1", MinVersion: minV, MaxVersion: maxV, CipherSuites: suites}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", strings.TrimPrefix(e.url, "https://"), c)
	if err == nil {
		conn.Close()
	}
	return err
}

// The TLS 1.2 suites of Go's default list that are CBC (its client still offers
// them); the serving certificate is ECDSA, the RSA ones are for completeness.
var cbcSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
	tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256,
}

// TestE2ETLSProfile: the real binary offers no CBC suite over TLS 1.2 (Mozilla
// intermediate), honours tls.min_version 1.3, and sends HSTS over TLS only.
func TestE2ETLSProfile(t *testing.T) {
	e := setup(t, "")
	e.start()
	if err := handshake(t, e, tls.VersionTLS12, tls.VersionTLS12, cbcSuites); err == nil {
		t.Error("a TLS 1.2 client offering only CBC suites completed the handshake")
	}
	gcm := []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}
	if err := handshake(t, e, tls.VersionTLS12, tls.VersionTLS12, gcm); err != nil {
		t.Errorf("TLS 1.2 with AES-GCM: %v", err)
	}
	if err := handshake(t, e, tls.VersionTLS12, tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}); err != nil {
		t.Errorf("TLS 1.2 with ChaCha20-Poly1305: %v", err)
	}
	resp, err := e.client.Get(e.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Strict-Transport-Security"); !strings.HasPrefix(got, "max-age=31536000") {
		t.Errorf("HSTS over TLS: %q", got)
	}

	t.Run("min_version 1.3", func(t *testing.T) {
		e := setup(t, "")
		cfg, _ := os.ReadFile(e.cfg)
		e.write("sts.yaml", strings.Replace(string(cfg), "key_file: tls.key}", `key_file: tls.key, min_version: "1.3"}`, 1))
		e.start()
		if err := handshake(t, e, tls.VersionTLS12, tls.VersionTLS12, gcm); err == nil {
			t.Error("a TLS 1.2-only client completed the handshake with min_version 1.3")
		}
		if err := handshake(t, e, tls.VersionTLS13, tls.VersionTLS13, nil); err != nil {
			t.Errorf("TLS 1.3: %v", err)
		}
	})

	t.Run("no HSTS over plain HTTP", func(t *testing.T) {
		e := setup(t, "")
		cfg, _ := os.ReadFile(e.cfg)
		text := strings.Replace(string(cfg), "tls: {cert_file: tls.crt, key_file: tls.key}", "tls: {insecure_http: true}", 1)
		plain := "http://" + strings.TrimPrefix(e.url, "https://")
		e.write("sts.yaml", strings.Replace(text, "issuer: "+e.url, "issuer: "+plain, 1))
		e.url = plain
		e.start()
		resp, err := e.client.Get(e.url + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("healthz over plain HTTP: %d", resp.StatusCode)
		}
		if got := resp.Header.Get("Strict-Transport-Security"); got != "" {
			t.Errorf("HSTS over plain HTTP: %q", got)
		}
	})
}
