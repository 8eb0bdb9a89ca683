package testspire

import (
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/testbin"
)

const (
	// EnvSPIREDir names a directory holding spire-server and spire-agent, used
	// instead of running scripts/spire-install.sh.
	EnvSPIREDir = "SAFECONDUCT_SPIRE_DIR"

	installScript  = "scripts/spire-install.sh"
	installTimeout = 20 * time.Minute
)

// spireBinaries finds spire-server and spire-agent; under CI=true it only takes a
// finished build (spire-install.sh --cached).
var spireBinaries = &testbin.Set{
	Harness:  "testspire",
	What:     "SPIRE",
	Names:    []string{"spire-server", "spire-agent"},
	EnvDir:   EnvSPIREDir,
	Script:   installScript,
	Timeout:  installTimeout,
	CICached: true,
}

// binaries returns the paths of spire-server and spire-agent, or skips t (fails it
// when CI=true) when they cannot be had.
func binaries(t testing.TB) (server, agent string) {
	t.Helper()
	p := spireBinaries.Paths(t)
	return p[0], p[1]
}
