package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/safeconduct/safeconduct/config"
	"github.com/safeconduct/safeconduct/issuer"
)

// serveMetrics binds metrics_listen, when set, and serves the operations routes
// (/metrics, /healthz, /readyz, plain HTTP) there until ctx ends or stop is called;
// stop returns once that listener is closed. Unset, nothing serves /metrics, which
// the log says at start so operators can find the setting.
func serveMetrics(ctx context.Context, cfg *config.Config, s *issuer.Server, log *slog.Logger) (stop func(), err error) {
	if cfg.MetricsListen == "" {
		log.Info("metrics not served: set metrics_listen (e.g. 127.0.0.1:9090) to serve /metrics")
		return func() {}, nil
	}
	l, err := net.Listen("tcp", cfg.MetricsListen)
	if err != nil {
		return nil, fmt.Errorf("metrics_listen: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.ServeMetrics(ctx, l); err != nil {
			log.Error("metrics listener failed", slog.String("error", err.Error()))
		}
	}()
	log.Info("metrics serving", slog.String("metrics_listen", l.Addr().String()))
	return func() { cancel(); <-done }, nil
}
