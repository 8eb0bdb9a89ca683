package issuer

import (
	"log/slog"
	"net/http"
)

// BuildFromConfig assembles a server from a configuration file, as `sts serve`
// does. Package config does that and imports issuer, so the tests of this package
// cannot call it; the external test package (config_hook_test.go) sets this hook
// in its init, which runs before any test.
var BuildFromConfig func(path string, log, audit *slog.Logger, upstreams *http.Client) (*Server, error)

// buildFromConfig is BuildFromConfig for the tests of this package.
func buildFromConfig(path string, log, audit *slog.Logger, upstreams *http.Client) (*Server, error) {
	if BuildFromConfig == nil {
		panic("issuer tests: BuildFromConfig is not set (config_hook_test.go)")
	}
	return BuildFromConfig(path, log, audit, upstreams)
}
