package spiffe

import (
	"context"
	"log/slog"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/internal/keycache"
)

// bundleCache holds the trust domain's last good bundle (package
// internal/keycache): lock-free reads; for a fetched source (file, endpoint)
// fetches one at a time, at most one per minimum interval whatever triggers them,
// in the background (no caller's cancellation aborts one for the others), bounded
// by a timeout and shared by every caller waiting for them. A pushed source
// (Workload API) has no fetch: its updates arrive through Set and Drop.
type bundleCache = keycache.Cache[*snapshot]

// cacheConfig returns the settings of a bundleCache common to every source; what
// names the source in logs and errors. With fetch (a fetched source) an update
// that drops every authority of a kind is refused (checkSuccessor); a pushed
// source's agent is the authority on what the workload trusts. The caller adds
// the timing of fetches.
func cacheConfig(ctx context.Context, s *settings, what string, fetch func(context.Context) (*snapshot, error)) keycache.Config[*snapshot] {
	log := s.cacheLog()
	cfg := keycache.Config[*snapshot]{
		Fetch:       fetch,
		Context:     ctx,
		Timeout:     DefaultFetchTimeout,
		Now:         s.Now,
		What:        what,
		Noun:        "bundle",
		Unavailable: attest.ErrUnavailable,
		OnFailure: func(err error) {
			log.Warn("SPIFFE bundle update refused; keeping the last good bundle", "source", what, "error", err)
		},
		OnUpdate: func(old, cur *keycache.Value[*snapshot]) {
			if old == nil || !sameAuthorities(old.V, cur.V) {
				log.Info("SPIFFE bundle updated", append([]any{"source", what}, cur.V.describe()...)...)
			}
		},
	}
	if fetch != nil {
		cfg.Accept = func(old *keycache.Value[*snapshot], s *snapshot) error {
			if old == nil {
				return nil
			}
			return checkSuccessor(old.V, s)
		}
		cfg.OnFailure = func(err error) {
			log.Warn("SPIFFE bundle refresh failed; keeping the last good bundle", "source", what, "error", err)
		}
	}
	return cfg
}

// cacheLog is the logger of the trust domain's bundle source.
func (s *settings) cacheLog() *slog.Logger {
	return s.Logger.With("upstream", s.Name, "trust_domain", s.TrustDomain)
}
