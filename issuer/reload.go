package issuer

import (
	"context"
	"log/slog"
	"time"
)

// PolicySource is where the issuance policy comes from (package config: the
// configured policy files).
type PolicySource interface {
	// Digest changes whenever the policy's inputs change (names and contents).
	Digest() [32]byte
	// Load reads and validates the policy; errors name file:line problems.
	Load() (Decider, error)
}

// WatchPolicy reloads the policy whenever its source's digest changes (checked every
// interval) and whenever reload receives a value (SIGHUP). A policy that fails to
// load is logged with its file:line problems and the last good policy stays in
// force. It returns when ctx ends.
func (s *Server) WatchPolicy(ctx context.Context, src PolicySource, interval time.Duration, reload <-chan struct{}) {
	last := src.Digest()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-reload:
			last = src.Digest()
			s.reloadPolicy(ctx, src, "signal")
		case <-t.C:
			d := src.Digest()
			if d == last {
				continue
			}
			last = d
			s.reloadPolicy(ctx, src, "file change")
		}
	}
}

func (s *Server) reloadPolicy(ctx context.Context, src PolicySource, trigger string) {
	p, err := src.Load()
	if err != nil {
		s.policyState.reloaded(trigger, s.now(), err)
		s.metrics.policyReloads.WithLabelValues("error").Inc()
		s.log.ErrorContext(ctx, "policy reload failed; keeping the last good policy",
			slog.String("trigger", trigger), slog.String("error", err.Error()))
		return
	}
	s.SetPolicy(p)
	s.policyState.reloaded(trigger, s.now(), nil)
	s.metrics.policyReloads.WithLabelValues("ok").Inc()
	s.log.InfoContext(ctx, "policy reloaded", slog.String("trigger", trigger))
}
