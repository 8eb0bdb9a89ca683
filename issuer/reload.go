package issuer

import (
	"context"
	"crypto/sha256"
	"io"
	"log/slog"
	"os"
	"time"
)

// WatchPolicy reloads the policy files whenever their contents change (checked every
// interval) and whenever reload receives a value (SIGHUP). A policy that fails to
// load is logged with its file:line problems and the last good policy stays in
// force. It returns when ctx ends.
func (s *Server) WatchPolicy(ctx context.Context, cfg *Config, interval time.Duration, reload <-chan struct{}) {
	last := policyDigest(cfg)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-reload:
			last = policyDigest(cfg)
			s.reloadPolicy(ctx, cfg, "signal")
		case <-t.C:
			d := policyDigest(cfg)
			if d == last {
				continue
			}
			last = d
			s.reloadPolicy(ctx, cfg, "file change")
		}
	}
}

func (s *Server) reloadPolicy(ctx context.Context, cfg *Config, trigger string) {
	p, err := LoadPolicy(cfg)
	if err != nil {
		s.metrics.policyReloads.WithLabelValues("error").Inc()
		s.log.ErrorContext(ctx, "policy reload failed; keeping the last good policy",
			slog.String("trigger", trigger), slog.String("error", err.Error()))
		return
	}
	s.SetPolicy(p)
	s.metrics.policyReloads.WithLabelValues("ok").Inc()
	s.log.InfoContext(ctx, "policy reloaded", slog.String("trigger", trigger))
}

// policyDigest hashes the names and contents of the policy files (a missing or
// unreadable file hashes as such, so its return is noticed too).
func policyDigest(cfg *Config) [32]byte {
	h := sha256.New()
	for _, f := range cfg.PolicyFiles {
		p := cfg.Path(f)
		io.WriteString(h, p)
		h.Write([]byte{0})
		fh, err := os.Open(p)
		if err != nil {
			io.WriteString(h, "\x00missing")
			continue
		}
		_, _ = io.Copy(h, io.LimitReader(fh, 2<<20))
		fh.Close()
		h.Write([]byte{0})
	}
	var d [32]byte
	h.Sum(d[:0])
	return d
}
