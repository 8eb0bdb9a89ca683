package config

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// tls12CipherSuites are the TLS 1.2 suites offered (Mozilla's "intermediate"
// profile): ECDHE with AES-GCM or ChaCha20-Poly1305, no CBC, no RSA key exchange.
// TLS 1.3 suites are fixed by Go and all AEAD.
var tls12CipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// tlsVersions maps tls.min_version to its protocol version.
var tlsVersions = map[string]uint16{"1.2": tls.VersionTLS12, "1.3": tls.VersionTLS13}

// serverTLS is the protocol floor and suites of every serving configuration:
// tls.min_version (default 1.2) and tls12CipherSuites.
func serverTLS(cfg *Config) *tls.Config {
	v, ok := tlsVersions[cfg.TLS.MinVersion]
	if !ok {
		v = tls.VersionTLS12 // validate defaults the field; an embedder's zero value
	}
	return &tls.Config{MinVersion: v, CipherSuites: tls12CipherSuites}
}

// clientTLS is the configuration of the STS's TLS clients (Redis, the OTLP
// collector): TLS 1.2+ with the same suites as the server.
func clientTLS() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, CipherSuites: tls12CipherSuites}
}

// ServingTLS returns the server's TLS configuration (tls.min_version, default 1.2;
// AEAD suites only, tls12CipherSuites): the certificate from
// files (re-read when they change, so rotation needs no restart) or the STS's own
// X.509-SVID from the Workload API (rotated by the agent), and, with
// client_certificates: request, a request for client certificates, which the token
// endpoint verifies as X.509-SVIDs. The returned func releases the Workload API
// connection. A nil config means plain HTTP (insecure_http).
func ServingTLS(ctx context.Context, cfg *Config) (*tls.Config, func() error, error) {
	if cfg.TLS.InsecureHTTP {
		return nil, func() error { return nil }, nil
	}
	tc := serverTLS(cfg)
	tc.NextProtos = []string{"h2", "http/1.1"}
	closer := func() error { return nil }
	if sock := cfg.TLS.WorkloadAPISocket; sock != "" {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		src, err := workloadapi.NewX509Source(wctx, workloadapi.WithClientOptions(workloadapi.WithAddr(sock)))
		if err != nil {
			return nil, nil, fmt.Errorf("tls: X.509-SVID from the Workload API at %s: %w", sock, err)
		}
		tc.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			svid, err := src.GetX509SVID()
			if err != nil {
				return nil, err
			}
			c := &tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
			for _, cert := range svid.Certificates {
				c.Certificate = append(c.Certificate, cert.Raw)
			}
			return c, nil
		}
		closer = src.Close
	} else {
		r := &certReloader{cert: cfg.Path(cfg.TLS.CertFile), key: cfg.Path(cfg.TLS.KeyFile)}
		if err := r.load(); err != nil {
			return nil, nil, err
		}
		tc.GetCertificate = r.get
	}
	if cfg.TLS.ClientCertificates == "request" {
		// Verified per connection by the token endpoint against the trust domains'
		// bundles (Go's verifier knows nothing of SPIFFE trust domains).
		tc.ClientAuth = tls.RequestClientCert
	}
	return tc, closer, nil
}

// LoadTLS reads the serving certificate files and returns the server's TLS
// configuration without reloading (check-config's dry run of ServingTLS for files).
func LoadTLS(cfg *Config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(cfg.Path(cfg.TLS.CertFile), cfg.Path(cfg.TLS.KeyFile))
	if err != nil {
		return nil, cfg.errAt(err, "tls")
	}
	tc := serverTLS(cfg)
	tc.Certificates = []tls.Certificate{cert}
	return tc, nil
}

// certReloader serves a certificate from files and re-reads them when their
// modification time changes (checked at most every 10 seconds). A bad new pair is
// logged by the caller's handshake error and the last good one kept.
type certReloader struct {
	cert, key string

	mu      sync.Mutex
	current *tls.Certificate
	mtime   time.Time
	checked time.Time
}

func (r *certReloader) load() error {
	st, err := os.Stat(r.cert)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	c, err := tls.LoadX509KeyPair(r.cert, r.key)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	if c.Leaf == nil && len(c.Certificate) > 0 {
		c.Leaf, _ = x509.ParseCertificate(c.Certificate[0])
	}
	r.current, r.mtime = &c, st.ModTime()
	return nil
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.checked) > 10*time.Second {
		r.checked = now
		if st, err := os.Stat(r.cert); err == nil && !st.ModTime().Equal(r.mtime) {
			_ = r.load() // keep the last good pair on error
		}
	}
	if r.current == nil {
		return nil, errors.New("no serving certificate")
	}
	return r.current, nil
}
