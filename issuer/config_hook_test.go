package issuer_test

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/safeconduct/safeconduct/config"
	"github.com/safeconduct/safeconduct/issuer"
)

// The tests of package issuer run servers assembled from real configuration files;
// package config assembles them (and imports issuer), so it is handed in here.
func init() {
	issuer.BuildFromConfig = func(path string, log, audit *slog.Logger, upstreams *http.Client) (*issuer.Server, error) {
		cfg, err := config.Load(path)
		if err != nil {
			return nil, err
		}
		return config.Build(context.Background(), cfg, config.Options{Logger: log, AuditLogger: audit, UpstreamClient: upstreams})
	}
}
