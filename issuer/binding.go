package issuer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"time"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/revocation"
)

// binding is an upstream's runtime-change configuration: the attributes tokens are
// bound to, and those that (with the subject) identify an instance.
type binding struct {
	names    []string
	instance []string
}

// instanceKey identifies one workload instance: upstream, subject and the instance
// attributes, hashed so that untrusted values never shape a store key.
func instanceKey(wl *attest.Workload, b binding) string {
	h := sha256.New()
	h.Write([]byte(wl.Upstream))
	h.Write([]byte{0})
	h.Write([]byte(wl.ID))
	for _, n := range b.instance {
		h.Write([]byte{0})
		h.Write([]byte(n))
		h.Write([]byte{'='})
		h.Write([]byte(wl.Attributes[n]))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// bind records the instance's current binding fingerprint; when it differs from
// the one recorded before, the store revokes the tokens bound to the old one and
// returns that entry, which is audited and counted here.
func (s *core) bind(ctx context.Context, b binding, wl *attest.Workload, trigger string) (*revocation.Entry, error) {
	f := revocation.Facts{Upstream: wl.Upstream, Subject: wl.ID, Binding: revocation.Fingerprint(wl.Attributes, b.names)}
	fired, err := s.store.Bind(ctx, instanceKey(wl, b), &f, 2*s.maxTTL+time.Minute)
	if err != nil {
		return nil, err
	}
	if fired != nil {
		if trigger == "" {
			trigger = "report"
		}
		s.metrics.changesFired.WithLabelValues(wl.Upstream).Inc()
		s.auditLog.LogAttrs(ctx, slog.LevelInfo, "change_fired",
			slog.String("event", "change_fired"), slog.String("trigger", trigger),
			slog.String("upstream", wl.Upstream), slog.String("sub", wl.ID),
			slog.String("id", fired.ID), slog.String("selector", fired.Selector), slog.String("new_binding", f.Binding))
	}
	return fired, nil
}
