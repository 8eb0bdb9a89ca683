package issuer

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// The operations listener (metrics_listen) serves /metrics, /healthz, /readyz and
// /policyz (the live policy, PolicyStatus) over plain HTTP, away from the token listener: the metrics name rules, upstreams
// and key ages, which the internet has no business reading.

// maxMetricsInFlight bounds concurrent /metrics and /readyz requests on the
// operations listener (each renders every series or pings the store for up to
// 2 s); more are refused with 503 and Retry-After. /healthz, the liveness probe,
// costs nothing and is never refused, so busy scrapers cannot fail it.
const maxMetricsInFlight = 8

// MetricsHandler serves /metrics, /healthz, /readyz and /policyz (the operations
// listener's routes); everything else is 404.
func (s *Server) MetricsHandler() http.Handler {
	slots := make(chan struct{}, maxMetricsInFlight)
	bounded := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case slots <- struct{}{}:
				defer func() { <-slots }()
				h.ServeHTTP(w, r)
			default:
				w.Header().Set("Retry-After", "1")
				http.Error(w, "busy", http.StatusServiceUnavailable)
			}
		})
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", bounded(s.metrics.handler()))
	mux.Handle("GET /readyz", bounded(http.HandlerFunc(s.handleReadyz)))
	mux.HandleFunc("GET /healthz", s.handleHealthz)
	mux.Handle("GET "+PathPolicyStatus, bounded(http.HandlerFunc(s.handlePolicyStatus)))
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not found", http.StatusNotFound)
	})
	return mux
}

// ServeMetrics serves MetricsHandler over plain HTTP on l until ctx ends, then
// closes at once (scrapes and probes are short and retried).
func (s *Server) ServeMetrics(ctx context.Context, l net.Listener) error {
	srv := &http.Server{
		Handler:           s.MetricsHandler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       5 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	stop := context.AfterFunc(ctx, func() { _ = srv.Close() })
	defer stop()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
