package policy_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/policy"
)

// FuzzParse: the loader never panics; it either refuses with located problems or
// accepts a policy that survives a round trip and whose rules grant what they say.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	more, _ := filepath.Glob(filepath.Join("testdata", "review", "*.yaml"))
	seeds = append(seeds, more...)
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(testPolicy))
	f.Add([]byte(adminPolicy))
	f.Add([]byte(fuzzConditionsPolicy))
	f.Add(benchPolicy(20)[0].Data)
	f.Add([]byte("rules:\n  - {name: r, effect: allow, upstreams: [u], subjects: [\"a*b\"], audiences: [x, y], scopes: [s], max_ttl: 1h}\n"))
	f.Add([]byte("rules:\n  - &a {name: r, effect: deny, upstreams: [u], subjects: [s]}\n  - *a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := policy.Parse("fuzz.yaml", data)
		if err != nil {
			var le *policy.LoadError
			if !errors.As(err, &le) || len(le.Problems) == 0 {
				t.Fatalf("error %v is not a LoadError with problems", err)
			}
			for _, pr := range le.Problems {
				if pr.File != "fuzz.yaml" || pr.Line < 0 || pr.Message == "" || strings.Contains(pr.String(), "\n") {
					t.Fatalf("badly located problem %#v", pr)
				}
			}
			if p != nil {
				t.Fatal("a policy with an error")
			}
			return
		}
		rules := p.Rules()

		// Re-validate: the rules written back out load again, unchanged.
		again, err := policy.Parse("again.yaml", marshalRules(t, p))
		if err != nil {
			t.Fatalf("accepted policy does not re-load: %v", err)
		}
		if got := again.Rules(); len(got) != len(rules) {
			t.Fatalf("round trip: %d rules, then %d", len(rules), len(got))
		} else {
			for i := range rules {
				a, b := rules[i], got[i]
				a.File, a.Line, b.File, b.Line = "", 0, "", 0
				if fmt.Sprintf("%#v", a) != fmt.Sprintf("%#v", b) {
					t.Fatalf("round trip changed a rule:\n%#v\n%#v", a, b)
				}
			}
		}
		admin, adminAgain := p.AdminRules(), again.AdminRules()
		if len(admin) != len(adminAgain) {
			t.Fatalf("round trip: %d admin rules, then %d", len(admin), len(adminAgain))
		}
		for i := range admin {
			a, b := admin[i], adminAgain[i]
			a.File, a.Line, b.File, b.Line = "", 0, "", 0
			if fmt.Sprintf("%#v", a) != fmt.Sprintf("%#v", b) {
				t.Fatalf("round trip changed an admin rule:\n%#v\n%#v", a, b)
			}
		}
		if !slices.Equal(p.SensitiveAudiences(), again.SensitiveAudiences()) {
			t.Fatalf("round trip changed sensitive audiences")
		}

		// Every allow rule grants its own audiences and scopes to a subject its
		// first pattern matches, unless a deny rule (or another rule first)
		// decides.
		for _, r := range rules {
			if r.Effect != policy.EffectAllow {
				continue
			}
			checkRuleGrants(t, p, r)
		}
	})
}

func checkRuleGrants(t *testing.T, p *policy.Policy, r policy.Rule) {
	t.Helper()
	if len(r.Audiences)+len(r.Resources) == 0 || len(r.Upstreams) == 0 || len(r.Subjects) == 0 {
		t.Fatalf("allow rule %q accepted without upstream, subject or target", r.Name)
	}
	if r.Mode == policy.ModeAudit {
		return
	}
	if _, ok := r.Attributes[policy.TrustDomainAttribute]; ok && len(r.TrustDomains) > 0 {
		return // may be unsatisfiable
	}
	// Every '*' matching "x" gives a value each pattern matches.
	fill := func(pattern string) string { return strings.ReplaceAll(pattern, "*", "x") }
	workload := func(upstream, subject string, attrs map[string]string) *attest.Workload {
		w := &attest.Workload{Upstream: upstream, Subject: fill(subject), ID: "id", Attributes: map[string]string{}}
		for k, v := range attrs {
			w.Attributes[k] = fill(v)
		}
		return w
	}
	req := policy.Request{
		Workload:          workload(r.Upstreams[0], r.Subjects[0], r.Attributes),
		Audiences:         r.Audiences[:min(len(r.Audiences), policy.MaxTargets)],
		Resources:         r.Resources[:min(len(r.Resources), policy.MaxTargets-min(len(r.Audiences), policy.MaxTargets))],
		Scopes:            r.Scopes[:min(len(r.Scopes), policy.MaxScopes)],
		SenderConstrained: true,
		Now:               testNow,
	}
	if len(r.TrustDomains) > 0 {
		req.Workload.Attributes[policy.TrustDomainAttribute] = r.TrustDomains[0]
	}
	if len(r.Clients) > 0 {
		req.ClientID, req.ClientAuthenticated = fill(r.Clients[0]), true
	}
	if !r.Expires.IsZero() {
		req.Now = r.Expires.Add(-time.Second)
	}
	if len(r.Actors) > 0 {
		a := r.Actors[0]
		req.Actor = workload(a.Upstreams[0], a.Subjects[0], a.Attributes)
		req.DelegationDepth = r.MaxDelegationDepth
	}
	d := p.Decide(req)
	switch {
	case d.Outcome == policy.Allow:
		targets := slices.Concat(req.Audiences, req.Resources)
		want := []string{}
		for _, x := range targets {
			if !slices.Contains(want, x) {
				want = append(want, x)
			}
		}
		if !slices.Equal(d.Audiences, want) || !slices.Equal(d.Scopes, nilIfEmpty(req.Scopes)) {
			t.Fatalf("rule %q: granted %q %q for %q %q %q", r.Name, d.Audiences, d.Scopes, req.Audiences, req.Resources, req.Scopes)
		}
	case d.Outcome == policy.DenyRule:
	case r.When != "":
		// The condition may be false for this made-up workload.
	default:
		t.Fatalf("rule %q refuses its own grant: %s: %s", r.Name, d.Outcome, d.Reason)
	}
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

// marshalRules writes the policy back in the policy file format.
func marshalRules(t *testing.T, p *policy.Policy) []byte {
	t.Helper()
	rules := p.Rules()
	type actorYAML struct {
		Upstreams  []string          `yaml:"upstreams"`
		Subjects   []string          `yaml:"subjects"`
		Attributes map[string]string `yaml:"attributes,omitempty"`
	}
	type ruleYAML struct {
		Name                    string            `yaml:"name"`
		Effect                  string            `yaml:"effect"`
		Mode                    string            `yaml:"mode,omitempty"`
		Owner                   string            `yaml:"owner,omitempty"`
		Expires                 string            `yaml:"expires,omitempty"`
		ReviewBy                string            `yaml:"review_by,omitempty"`
		Upstreams               []string          `yaml:"upstreams"`
		Subjects                []string          `yaml:"subjects"`
		TrustDomains            []string          `yaml:"trust_domains,omitempty"`
		Attributes              map[string]string `yaml:"attributes,omitempty"`
		When                    string            `yaml:"when,omitempty"`
		Actors                  []actorYAML       `yaml:"actors,omitempty"`
		MaxDelegationDepth      int               `yaml:"max_delegation_depth,omitempty"`
		Audiences               []string          `yaml:"audiences,omitempty"`
		Resources               []string          `yaml:"resources,omitempty"`
		Scopes                  []string          `yaml:"scopes,omitempty"`
		MaxTTL                  string            `yaml:"max_ttl,omitempty"`
		CopyAttributes          []string          `yaml:"copy_attributes,omitempty"`
		RequireSenderConstraint bool              `yaml:"require_sender_constraint,omitempty"`
		Clients                 []string          `yaml:"clients,omitempty"`
	}
	type adminYAML struct {
		Name            string            `yaml:"name"`
		Owner           string            `yaml:"owner,omitempty"`
		Expires         string            `yaml:"expires,omitempty"`
		ReviewBy        string            `yaml:"review_by,omitempty"`
		Upstreams       []string          `yaml:"upstreams"`
		Subjects        []string          `yaml:"subjects"`
		TrustDomains    []string          `yaml:"trust_domains,omitempty"`
		Attributes      map[string]string `yaml:"attributes,omitempty"`
		When            string            `yaml:"when,omitempty"`
		Actions         []string          `yaml:"actions"`
		WithinUpstreams []string          `yaml:"within_upstreams"`
	}
	var out struct {
		Sensitive []string    `yaml:"sensitive_audiences,omitempty"`
		Rules     []ruleYAML  `yaml:"rules"`
		Admin     []adminYAML `yaml:"admin,omitempty"`
	}
	out.Sensitive = p.SensitiveAudiences()
	date := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.Format(time.RFC3339Nano)
	}
	for _, r := range rules {
		y := ruleYAML{
			Name: r.Name, Effect: r.Effect, Mode: r.Mode, Owner: r.Owner, Expires: date(r.Expires), ReviewBy: date(r.ReviewBy),
			Upstreams: r.Upstreams, Subjects: r.Subjects, TrustDomains: r.TrustDomains, Attributes: r.Attributes, When: r.When,
			Audiences: r.Audiences, Resources: r.Resources, Scopes: r.Scopes, CopyAttributes: r.CopyAttributes,
			RequireSenderConstraint: r.RequireSenderConstraint, Clients: r.Clients,
		}
		if r.Effect == policy.EffectAllow {
			y.MaxDelegationDepth = r.MaxDelegationDepth
		}
		for _, a := range r.Actors {
			y.Actors = append(y.Actors, actorYAML(a))
		}
		if r.MaxTTL != 0 {
			y.MaxTTL = r.MaxTTL.String()
		}
		out.Rules = append(out.Rules, y)
	}
	for _, a := range p.AdminRules() {
		out.Admin = append(out.Admin, adminYAML{
			Name: a.Name, Owner: a.Owner, Expires: date(a.Expires), ReviewBy: date(a.ReviewBy),
			Upstreams: a.Upstreams, Subjects: a.Subjects, TrustDomains: a.TrustDomains, Attributes: a.Attributes, When: a.When,
			Actions: a.Actions, WithinUpstreams: a.WithinUpstreams,
		})
	}
	data, err := yaml.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// fuzzConditionsPolicy has conditions over claims and attributes a workload
// controls. Each rule has its own audience, so the outcome of each is known.
const fuzzConditionsPolicy = `
rules:
  - name: deny-risk
    effect: deny
    upstreams: [u]
    subjects: ["*"]
    audiences: [deny.example]
    when: workload.claims["n"] > 10
  - name: allow-deny-target
    effect: allow
    upstreams: [u]
    subjects: ["*"]
    audiences: [deny.example]
  - name: allow-attr
    effect: allow
    upstreams: [u]
    subjects: ["*"]
    audiences: [attr.example]
    when: workload.attributes["team"].startsWith("pay")
  - name: allow-groups
    effect: allow
    upstreams: [u]
    subjects: ["*"]
    audiences: [groups.example]
    when: workload.claims.groups.exists(g, g == "admin")
  - name: allow-heavy
    effect: allow
    upstreams: [u]
    subjects: ["*"]
    audiences: [heavy.example]
    when: >-
      workload.claims.exists(k, string(workload.claims[k]).size() > 3) ||
      workload.attributes.exists(k, workload.attributes[k].matches("^(a|b)+c$")) ||
      workload.claims.all(k, workload.claims.exists(j, j + k == k + j))
  - name: audit-heavy
    effect: deny
    mode: audit
    upstreams: [u]
    subjects: ["*"]
    when: workload.claims.exists(k, k.size() > 2 && workload.claims[k] == workload.claims)
`

// FuzzConditions: conditions over whatever claims and attributes a workload
// carries never panic, stay bounded, and fail as specified: an allow rule whose
// condition errs does not grant, a deny rule whose condition errs refuses.
func FuzzConditions(f *testing.F) {
	p, err := policy.Parse("fuzz.yaml", []byte(fuzzConditionsPolicy))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(true, "payments", uint8(1), 3.0, "", "admin,dev", []byte(`{"sub":"x","aud":["a","b"],"nested":{"a":[1,2,{"b":null}]}}`))
	f.Add(false, "", uint8(0), 0.0, "", "", []byte(`{}`))
	f.Add(true, "pay", uint8(2), 11.0, "eleven", "admin", []byte(`{"n":"x","groups":[1,2]}`))
	f.Add(true, "aabbc", uint8(1), math.NaN(), "", "", []byte(`[1,2]`))
	f.Add(true, "\xff", uint8(3), math.Inf(1), "", ",,", []byte(`{"k":"`+strings.Repeat("ab", 200)+`"}`))
	f.Fuzz(func(t *testing.T, hasTeam bool, team string, nKind uint8, n float64, nStr, groups string, claimsJSON []byte) {
		claims := map[string]any{}
		_ = json.Unmarshal(claimsJSON, &claims) // not an object: no extra claims
		if claims == nil {
			claims = map[string]any{}
		}
		w := &attest.Workload{Upstream: "u", Subject: "s", ID: "s", Attributes: map[string]string{}, Claims: claims}
		if hasTeam {
			w.Attributes["team"] = team
		}
		denyApplies := true // missing or not a number: the deny fails closed
		switch nKind % 4 {
		case 0:
			delete(claims, "n")
		case 1:
			claims["n"] = n
			denyApplies = n > 10 // NaN > 10 is false, in CEL as in Go
		case 2:
			claims["n"] = nStr
		case 3:
			claims["n"] = true
		}
		delete(claims, "groups")
		if groups != "" {
			var list []any
			for g := range strings.SplitSeq(groups, ",") {
				list = append(list, g)
			}
			claims["groups"] = list
		}

		decide := func(audience string) policy.Decision {
			d := p.Decide(policy.Request{Workload: w, Audiences: []string{audience}, Now: testNow})
			if d.Reason == "" || strings.ContainsAny(d.Reason, "\n\r") {
				t.Fatalf("%s: bad reason %q", audience, d.Reason)
			}
			return d
		}
		if d := decide("deny.example"); (d.Outcome == policy.DenyRule) != denyApplies || (!denyApplies && !d.Allowed()) {
			t.Fatalf("deny.example with n=%#v: %s %s", claims["n"], d.Outcome, d.Reason)
		}
		wantAttr := hasTeam && strings.HasPrefix(team, "pay")
		if d := decide("attr.example"); d.Allowed() != wantAttr {
			t.Fatalf("attr.example with team %q (%v): %s %s", team, hasTeam, d.Outcome, d.Reason)
		}
		wantGroups := groups != "" && slices.Contains(strings.Split(groups, ","), "admin")
		if d := decide("groups.example"); d.Allowed() != wantGroups {
			t.Fatalf("groups.example with %q: %s %s", groups, d.Outcome, d.Reason)
		}
		if d := decide("heavy.example"); d.Outcome != policy.Allow && d.Outcome != policy.DenyNoRule {
			t.Fatalf("heavy.example: %s %s", d.Outcome, d.Reason)
		}
		// Explain agrees, whatever the conditions did.
		for _, a := range []string{"deny.example", "attr.example", "groups.example", "heavy.example"} {
			req := policy.Request{Workload: w, Audiences: []string{a}, Now: testNow}
			if d, e := p.Decide(req), p.Explain(req); d.Outcome != e.Outcome || d.Reason != e.Reason || len(d.Audited) != len(e.Audited) {
				t.Fatalf("%s: Decide %s %q, Explain %s %q", a, d.Outcome, d.Reason, e.Outcome, e.Reason)
			}
		}
	})
}
