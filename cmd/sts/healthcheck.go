package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/safeconduct/safeconduct/config"
)

// cmdHealthcheck is `sts healthcheck --config FILE`: a container health check
// (the image has no shell or curl). It asks the local STS's /readyz, on the
// operations listener (metrics_listen, plain HTTP) when there is one, else on
// the token listener with the configured TLS, and exits 0 when it answers 200,
// 1 otherwise (with the reason on stderr).
func cmdHealthcheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sts healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "path of the configuration file (required)")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for /readyz")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" || fs.NArg() > 0 || *timeout <= 0 || *timeout > time.Minute {
		fmt.Fprintln(stderr, "usage: sts healthcheck --config FILE [--timeout 5s] (timeout at most 1m)")
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	target, client, err := readyzClient(cfg, *timeout)
	if err != nil {
		fmt.Fprintln(stderr, "sts healthcheck:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		fmt.Fprintln(stderr, "sts healthcheck:", err)
		return 1
	}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintln(stderr, "sts healthcheck: not ready:", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "sts healthcheck: not ready: %s %s\n", resp.Status, strings.TrimSpace(string(body)))
		return 1
	}
	fmt.Fprintf(stdout, "ready (%s)\n", target)
	return 0
}

// readyzClient returns the local /readyz URL and a client for it. A wildcard
// listen address is reached on loopback. On the TLS listener the certificate
// must be the configured cert_file's (pinned: the issuer's name need not
// resolve here); with a Workload API SVID it is not verified (a loopback probe
// sends nothing secret).
func readyzClient(cfg *config.Config, timeout time.Duration) (string, *http.Client, error) {
	local := func(addr string) (string, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return "", err
		}
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			host = "127.0.0.1"
			if ip != nil && ip.To4() == nil {
				host = "::1"
			}
		}
		return net.JoinHostPort(host, port), nil
	}
	client := &http.Client{Timeout: timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if cfg.MetricsListen != "" {
		addr, err := local(cfg.MetricsListen)
		if err != nil {
			return "", nil, fmt.Errorf("metrics_listen: %w", err)
		}
		client.Transport = &http.Transport{Proxy: nil}
		return "http://" + addr + "/readyz", client, nil
	}
	addr, err := local(cfg.Listen)
	if err != nil {
		return "", nil, fmt.Errorf("listen: %w", err)
	}
	if cfg.TLS.InsecureHTTP {
		client.Transport = &http.Transport{Proxy: nil}
		return "http://" + addr + "/readyz", client, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLS.WorkloadAPISocket != "" {
		tc.InsecureSkipVerify = true //nolint:gosec // loopback liveness probe; see above
	} else {
		pool, err := certPool(cfg.Path(cfg.TLS.CertFile))
		if err != nil {
			return "", nil, err
		}
		tc.RootCAs = pool
		if u, err := url.Parse(cfg.Issuer); err == nil {
			tc.ServerName = u.Hostname()
		}
	}
	client.Transport = &http.Transport{Proxy: nil, TLSClientConfig: tc}
	return "https://" + addr + "/readyz", client, nil
}

// certPool trusts the certificates of the served certificate file (the leaf and
// its chain), so the probe checks that the listener serves that certificate.
func certPool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tls.cert_file: %w", err)
	}
	pool := x509.NewCertPool()
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file: %w", err)
		}
		pool.AddCert(c)
	}
	if pool.Equal(x509.NewCertPool()) {
		return nil, errors.New("tls.cert_file: no certificate")
	}
	return pool, nil
}
