package issuer

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// The operations listener (metrics_listen) serves /metrics, /healthz and /readyz
// over plain HTTP, away from the token listener: the metrics name rules, upstreams
// and key ages, which the internet has no business reading.

// maxMetricsInFlight bounds concurrent requests on the operations listener; more
// are refused with 503 (a scraper retries on its next interval).
const maxMetricsInFlight = 4

// MetricsHandler serves /metrics, /healthz and /readyz (the operations listener's
// routes); everything else is 404.
func (s *Server) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics.handler())
	mux.HandleFunc("GET /healthz", s.handleHealthz)
	mux.HandleFunc("GET /readyz", s.handleReadyz)
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not found", http.StatusNotFound)
	})
	slots := make(chan struct{}, maxMetricsInFlight)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case slots <- struct{}{}:
			defer func() { <-slots }()
			mux.ServeHTTP(w, r)
		default:
			w.Header().Set("Retry-After", "1")
			http.Error(w, "busy", http.StatusServiceUnavailable)
		}
	})
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
