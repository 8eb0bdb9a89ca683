package policy_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/safeconduct/safeconduct/policy"
)

// stepOf returns the trace step of rule, failing when there is none.
func stepOf(t *testing.T, trace []policy.TraceStep, rule string) policy.TraceStep {
	t.Helper()
	for _, s := range trace {
		if s.Rule == rule {
			return s
		}
	}
	t.Fatalf("no step for rule %q in %+v", rule, trace)
	return policy.TraceStep{}
}

func TestExplainTrace(t *testing.T) {
	p := loadFeatures(t)
	type step struct {
		rule, verdict string
		decided       bool
		detail        string
	}
	tests := []struct {
		name  string
		req   policy.Request
		steps []step
		// last, when set, is the verdict of the final step (a refusal no rule decided).
		last string
	}{
		{
			name: "condition error and a failing deny condition",
			req:  aud(sa("pay", "api", "claim:risk", 1.0), "https://cel.example")(),
			steps: []step{
				{"cel-deny", policy.VerdictWhenFalse, false, "its condition is false"},
				{"no-batch-actor", policy.VerdictSubject, false, `no subject pattern matches "system:serviceaccount:pay:api"`},
				{"cel-allow", policy.VerdictWhenError, false, "no such key: env"},
				{"attr-glob", policy.VerdictAttribute, false, `the workload has no attribute "namespace"`},
				{"v0-aud", policy.VerdictSubject, false, ""},
				{"audit-deny", policy.VerdictSubject, false, ""},
			},
			last: policy.VerdictRefused,
		},
		{
			name: "deny decides, and allow rules are still traced",
			req:  aud(sa("pay", "api", "attr:env", "prod", "claim:risk", 7.0), "https://cel.example")(),
			steps: []step{
				{"cel-deny", policy.VerdictApplies, true, `deny rule "cel-deny" refuses`},
				{"cel-allow", policy.VerdictApplies, false, "grants every requested target and scope"},
			},
		},
		{
			name: "delegation",
			req:  delegated(sa("orders", "api"), gateway, 2, "https://inventory.example")(),
			steps: []step{
				{"no-batch-actor", policy.VerdictActor, false, "is not among the rule's actors"},
				{"gw-for-orders", policy.VerdictDepth, false, "delegation depth 2 exceeds max_delegation_depth 1"},
				{"orders-direct", policy.VerdictNoDelegation, false, "lists no actors"},
				{"chain", policy.VerdictTarget, false, `does not grant target "https://inventory.example"`},
			},
			last: policy.VerdictRefused,
		},
		{
			name:  "may_act mismatch is decided before any rule",
			req:   delegated(sa("orders", "api", "claim:may_act", map[string]any{"sub": "x"}), gateway, 1, "https://inventory.example")(),
			steps: []step{{"", policy.VerdictMayAct, true, `may_act names "x"`}},
		},
		{
			name: "audit rules are traced, never decide",
			req:  aud(sa("copy", "api"), "https://copy.example")(),
			steps: []step{
				{"copy", policy.VerdictApplies, true, ""},
				{"mtls-only", policy.VerdictTarget, false, ""},
				{"audit-deny", policy.VerdictApplies, false, `would refuse: deny rule "audit-deny"`},
				{"audit-allow", policy.VerdictTarget, false, ""},
			},
		},
		{
			name: "expiry, scope and sender constraint",
			req: with(aud(sa("copy", "api"), "https://mtls.example"), func(r *policy.Request) {
				r.Now = r.Now.AddDate(1, 0, 0)
			})(),
			steps: []step{
				{"mtls-only", policy.VerdictSenderConstraint, false, "requires a sender-constrained token"},
				{"copy", policy.VerdictTarget, false, ""},
			},
			last: policy.VerdictRefused,
		},
		{
			name:  "request refused before the rules",
			req:   policy.Request{Workload: sa("copy", "api"), Audiences: []string{"x"}},
			steps: []step{{"", policy.VerdictRequest, true, "Request.Now is zero"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := p.Explain(tt.req)
			for _, want := range tt.steps {
				got := stepOf(t, d.Trace, want.rule)
				if got.Verdict != want.verdict || got.Decided != want.decided || !strings.Contains(got.Detail, want.detail) {
					t.Errorf("step %+v, want %+v", got, want)
				}
			}
			if tt.last != "" {
				last := d.Trace[len(d.Trace)-1]
				if last.Verdict != tt.last || !last.Decided || last.Detail != d.Reason {
					t.Errorf("last step %+v", last)
				}
			}
			// Enforced deny rules come first, then enforced allow rules, then audit rules.
			phase := 0
			for _, s := range d.Trace {
				if s.Rule == "" {
					continue
				}
				ph := 1
				switch {
				case s.Mode == policy.ModeAudit:
					ph = 2
				case s.Effect == policy.EffectDeny:
					ph = 0
				}
				if ph < phase {
					t.Errorf("step %+v out of order", s)
				}
				phase = ph
			}
		})
	}
}

// The subject index never changes a decision: Decide (which looks only at the
// rules the index returns) decides as Explain (which looks at every rule of the
// upstream), over random patterns and subjects.
func TestIndexMatchesFullScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	word := func(n int, alphabet string) string {
		var b strings.Builder
		for range n {
			b.WriteByte(alphabet[rng.IntN(len(alphabet))])
		}
		return b.String()
	}
	for round := range 20 {
		var b strings.Builder
		b.WriteString("rules:\n")
		for i := range 60 {
			// Patterns over a tiny alphabet collide often: literal, prefix,
			// leading-star and multi-star patterns, with shared prefixes.
			pat := word(rng.IntN(5), "ab:")
			switch rng.IntN(4) {
			case 0:
				pat += "*"
			case 1:
				pat = "*" + pat
			case 2:
				pat = pat + "*" + word(rng.IntN(2), "ab:") + "*"
			}
			if pat == "" {
				pat = "a"
			}
			pat2 := word(1+rng.IntN(3), "ab") + "*"
			if pat2 == pat {
				pat2 = "b" + pat2
			}
			effect := "allow"
			extra := fmt.Sprintf(", audiences: [t%d, all]", rng.IntN(3))
			if rng.IntN(5) == 0 {
				effect = "deny"
				extra = fmt.Sprintf(", audiences: [t%d]", rng.IntN(3))
			}
			if rng.IntN(6) == 0 {
				extra += ", mode: audit"
			}
			fmt.Fprintf(&b, "  - {name: r%d, effect: %s, upstreams: [u%d], subjects: [%q, %q]%s}\n", i, effect, rng.IntN(2), pat, pat2, extra)
		}
		p, err := policy.Parse("rand.yaml", []byte(b.String()))
		if err != nil {
			t.Fatalf("round %d: %v\n%s", round, err, b.String())
		}
		for range 200 {
			req := at(policy.Request{
				Workload:  wl(fmt.Sprintf("u%d", rng.IntN(2)), word(1+rng.IntN(6), "ab:")),
				Audiences: []string{fmt.Sprintf("t%d", rng.IntN(3))},
			})
			if rng.IntN(3) == 0 {
				req.Audiences = append(req.Audiences, "all")
			}
			d, e := p.Decide(req), p.Explain(req)
			if d.Outcome != e.Outcome || d.Rule != e.Rule || d.Reason != e.Reason || fmt.Sprint(d.Audited) != fmt.Sprint(e.Audited) {
				t.Fatalf("subject %q: Decide %s %q %q %v, Explain %s %q %q %v\n%s", req.Workload.Subject,
					d.Outcome, d.Rule, d.Reason, d.Audited, e.Outcome, e.Rule, e.Reason, e.Audited, b.String())
			}
		}
	}
}
