package issuer

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/safeconduct/safeconduct/policy"
)

// Counters exist from the start: every label combination known in advance is
// created at zero, so that rate() and increase() see the first event (a series
// that appears at 1 has no increase).

// exchangeCodes are the OAuth error codes an exchange can be refused with.
var exchangeCodes = []string{codeInvalidRequest, codeInvalidClient, codeInvalidScope, codeInvalidTarget,
	codeUnsupportedGrantType, codeServerError, codeTemporarilyUnavailable}

// storeOps are the op label values of the revocation store metrics.
var storeOps = []string{storeOpAdmit, storeOpRevoked, storeOpCreate, storeOpLift, storeOpBind, storeOpSnapshot, storeOpEvents, storeOpClaim}

// refusalOutcomes are the outcomes of an exchange decision no rule decided
// (rule="").
var refusalOutcomes = []policy.Outcome{policy.DenyNoRule, policy.DenyTarget, policy.DenyScope, policy.DenyActor,
	policy.DenyClient, policy.DenySenderConstraint, policy.DenyRequest}

// adminRefusals are the outcomes of an admin decision no admin rule granted.
var adminRefusals = []policy.Outcome{policy.DenyNoRule, policy.DenyAction, policy.DenyTarget, policy.DenyRequest}

// preinit creates the label combinations that do not depend on configuration.
func (m *metrics) preinit() {
	m.exchanges.WithLabelValues("issued", "")
	for _, c := range exchangeCodes {
		m.exchanges.WithLabelValues("refused", c)
	}
	m.latency.WithLabelValues("issued")
	m.latency.WithLabelValues("refused")
	for _, op := range storeOps {
		m.storeLatency.WithLabelValues(op)
		m.storeErrors.WithLabelValues(op)
	}
	for _, k := range []string{"revoke", "block"} {
		m.revocations.WithLabelValues(k)
	}
	m.policyReloads.WithLabelValues("ok")
	m.policyReloads.WithLabelValues("error")
	for _, o := range refusalOutcomes {
		m.decisions.WithLabelValues("", o.String())
	}
	for _, a := range policy.Actions() {
		for _, o := range adminRefusals {
			m.adminDecisions.WithLabelValues("", a, o.String())
		}
	}
}

// ruleLister is what a Decider may offer to name its rules (policy.Policy does).
type ruleLister interface {
	Rules() []policy.Rule
	AdminRules() []policy.AdminRule
}

// initPolicy creates the series of each rule of d at zero: (rule, allow) or
// (rule, deny_rule) of the decisions, the audit-mode hits, and (rule, action,
// allow) of the admin decisions. Series of rules a reload removed stay.
func (m *metrics) initPolicy(d Decider) {
	p, ok := d.(ruleLister)
	if !ok {
		return
	}
	for _, r := range p.Rules() {
		o := policy.Allow
		if r.Effect == policy.EffectDeny {
			o = policy.DenyRule
		}
		if r.Mode == policy.ModeAudit {
			m.audited.WithLabelValues(r.Name, o.String())
			continue
		}
		m.decisions.WithLabelValues(r.Name, o.String())
	}
	for _, r := range p.AdminRules() {
		for _, a := range r.Actions {
			m.adminDecisions.WithLabelValues(r.Name, a, policy.Allow.String())
		}
	}
}

// countAdmin counts one admin decision.
func (m *metrics) countAdmin(action string, d policy.Decision) {
	m.adminDecisions.WithLabelValues(d.Rule, action, d.Outcome.String()).Inc()
}

// buildInfo is safeconduct_build_info: 1, labelled with the module version,
// the Go version and the VCS revision the binary was built from.
func buildInfo() prometheus.Collector {
	version, revision, modified := "(devel)", "unknown", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
	}
	if modified == "true" {
		revision += "-dirty"
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "safeconduct_build_info",
		Help:        "Always 1; its labels are the build's module version, Go version and VCS revision.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version(), "revision": revision},
	})
	g.Set(1)
	return g
}
