package issuer

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/safeconduct/safeconduct/revocation"
)

// healthReporter is implemented by a guarded revocation store
// (revocation/storeguard).
type healthReporter interface {
	Health() revocation.Health
}

// registerStoreHealth exports the guarded store's state: lost (1 while the store
// is known to have lost its data, until an operator accepts it) and writable (1
// when its last write probe was confirmed like a revocation).
func (m *metrics) registerStoreHealth(st revocation.Store) {
	h, ok := st.(healthReporter)
	if !ok {
		return
	}
	gauge := func(name, help string, v func(revocation.Health) bool) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			if v(h.Health()) {
				return 1
			}
			return 0
		})
	}
	m.registry.MustRegister(
		gauge("safeconduct_revocation_store_lost",
			"1 while the revocation store is known to have lost its data (no or another identity): tokens, revocations and readiness are refused until `sts revocation-store accept-loss`.",
			func(h revocation.Health) bool { return h.Lost }),
		gauge("safeconduct_revocation_store_writable",
			"1 when the revocation store's last write probe was confirmed as a revocation's write is (fsync; WAIT for a replica); 0 means revocations cannot be recorded.",
			func(h revocation.Health) bool { return h.Writable }),
	)
}

// readyzReason is /readyz's body for a store that is not ready.
func readyzReason(err error) string {
	switch {
	case errors.Is(err, revocation.ErrStoreLost):
		return "revocation store lost its data: run sts revocation-store accept-loss"
	case errors.Is(err, revocation.ErrNotWritable):
		return "revocation store cannot record revocations"
	default:
		return "revocation store unavailable"
	}
}
