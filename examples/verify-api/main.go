// Command verify-api is a tiny HTTP API protected by safeconduct access tokens: it
// accepts a request only with a valid, unrevoked token for its audience (package
// verify), and answers with who called.
//
//	go run ./examples/verify-api --issuer https://127.0.0.1:8443 --cacert sts-quickstart/ca.crt \
//	    --audience https://api.demo.internal --feed-token-file sts-quickstart/admin.jwt --listen 127.0.0.1:9080
//
// Then, with a token from the STS for that audience:
//
//	curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:9080/v1/whoami
//
// The feed token is a credential the STS's admin rules allow `read_feed` (the
// quickstart's admin.jwt is one: its policy.yaml has an admin rule for it); the file
// is re-read before every feed request, so a projected (rotating) service-account
// token works. Without --feed-token-file revocation is not checked.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/safeconduct/safeconduct/verify"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "verify-api:", err)
		os.Exit(1)
	}
}

func run() error {
	issuer := flag.String("issuer", "", "the STS issuer URL (required)")
	audience := flag.String("audience", "", "this API's audience (required)")
	caCert := flag.String("cacert", "", "PEM CA certificate(s) to trust for the STS (default: system roots)")
	feedTokenFile := flag.String("feed-token-file", "", "file holding the bearer token for the STS's revocation feed")
	listen := flag.String("listen", "127.0.0.1:9080", "address to serve on (plain HTTP; put TLS in front)")
	flag.Parse()
	if *issuer == "" || *audience == "" {
		flag.Usage()
		return errors.New("--issuer and --audience are required")
	}

	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	client, err := httpClient(*caCert)
	if err != nil {
		return err
	}
	cfg := verify.Config{Issuer: *issuer, Audience: *audience, HTTPClient: client, Logger: log}
	if *feedTokenFile != "" {
		path := *feedTokenFile
		cfg.RequireFeed = true
		cfg.FeedToken = func(context.Context) (string, error) {
			b, err := os.ReadFile(path)
			if err != nil {
				return "", err
			}
			return strings.TrimSpace(string(b)), nil
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := verify.New(startCtx, cfg)
	if err != nil {
		return err
	}
	defer v.Close()
	if err := v.WaitSynced(startCtx); err != nil {
		log.Warn("no revocation snapshot yet; requests get 503 until one arrives", "status", fmt.Sprintf("%+v", v.Status()))
	}

	mux := http.NewServeMux()
	mux.Handle("GET /v1/whoami", v.Middleware(http.HandlerFunc(whoami)))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		// Not ready while tokens would be refused as stale.
		if st := v.Status(); st.Feed && st.Stale {
			http.Error(w, "revocation data stale", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	srv := &http.Server{
		Addr:              *listen,
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Info("serving", "listen", *listen, "issuer", *issuer, "audience", *audience, "revocation_feed", cfg.FeedToken != nil)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancelShutdown := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelShutdown()
	return srv.Shutdown(shutdown)
}

// whoami answers with the verified token's identity; it runs only behind the
// middleware, so the token is always there.
func whoami(w http.ResponseWriter, r *http.Request) {
	tok, _ := verify.TokenFromContext(r.Context())
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"subject":    tok.Subject,
		"client_id":  tok.ClientID,
		"upstream":   tok.Upstream,
		"scopes":     tok.Scopes,
		"attributes": tok.Attributes,
		"expires":    tok.Expiry.UTC().Format(time.RFC3339),
	})
}

// httpClient trusts caFile (when given) instead of the system roots, TLS 1.2+.
func httpClient(caFile string) (*http.Client, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate", caFile)
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	return &http.Client{Transport: tr}, nil
}
