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

// ServingTLS returns the server's TLS configuration (TLS 1.2+): the certificate from
// files (re-read when they change, so rotation needs no restart) or the STS's own
// X.509-SVID from the Workload API (rotated by the agent), and, with
// client_certificates: request, a request for client certificates, which the token
// endpoint verifies as X.509-SVIDs. The returned func releases the Workload API
// connection. A nil config means plain HTTP (insecure_http).
func ServingTLS(ctx context.Context, cfg *Config) (*tls.Config, func() error, error) {
	if cfg.TLS.InsecureHTTP {
		return nil, func() error { return nil }, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
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

// LoadTLS reads the serving certificate files and returns a TLS 1.2+ server
// configuration (check-config's dry run of ServingTLS for files).
func LoadTLS(cfg *Config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(cfg.Path(cfg.TLS.CertFile), cfg.Path(cfg.TLS.KeyFile))
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}, nil
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
