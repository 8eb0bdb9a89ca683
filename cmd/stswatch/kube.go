package main

import (
	"log/slog"

	"github.com/safeconduct/safeconduct/internal/watch"
)

func newKubeSource(cfg *watch.Config, rep *watch.Reporter, m *watch.Metrics, log *slog.Logger) (source, error) {
	return watch.NewKubeSource(cfg.Kubernetes, cfg.StateDir, rep, m, log)
}
