package policy_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/safeconduct/safeconduct/policy"
)

// FuzzParse: the loader never panics; it either refuses with located problems or
// accepts a policy that survives a round trip and whose rules grant what they say.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(testPolicy))
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
				if pr.File != "fuzz.yaml" || pr.Line < 0 || pr.Msg == "" {
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
		again, err := policy.Parse("again.yaml", marshalRules(t, rules))
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
	if len(r.Audiences) == 0 || len(r.Upstreams) == 0 || len(r.Subjects) == 0 {
		t.Fatalf("allow rule %q accepted without upstream, subject or audience", r.Name)
	}
	req := policy.Request{
		// The pattern with every '*' matching nothing.
		Workload:  wl(r.Upstreams[0], strings.ReplaceAll(r.Subjects[0], "*", "")),
		Audiences: r.Audiences[:min(len(r.Audiences), policy.MaxTargets)],
		Scopes:    r.Scopes[:min(len(r.Scopes), policy.MaxScopes)],
	}
	d := p.Decide(req)
	switch d.Outcome {
	case policy.Allow:
		if !slices.Equal(d.Audiences, req.Audiences) || !slices.Equal(d.Scopes, nilIfEmpty(req.Scopes)) {
			t.Fatalf("rule %q: granted %q %q for %q %q", r.Name, d.Audiences, d.Scopes, req.Audiences, req.Scopes)
		}
	case policy.DenyRule:
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

// marshalRules writes rules back in the policy file format.
func marshalRules(t *testing.T, rules []policy.Rule) []byte {
	t.Helper()
	type ruleYAML struct {
		Name      string   `yaml:"name"`
		Effect    string   `yaml:"effect"`
		Upstreams []string `yaml:"upstreams"`
		Subjects  []string `yaml:"subjects"`
		Audiences []string `yaml:"audiences,omitempty"`
		Scopes    []string `yaml:"scopes,omitempty"`
		MaxTTL    string   `yaml:"max_ttl,omitempty"`
	}
	var out struct {
		Rules []ruleYAML `yaml:"rules"`
	}
	for _, r := range rules {
		y := ruleYAML{Name: r.Name, Effect: r.Effect, Upstreams: r.Upstreams, Subjects: r.Subjects, Audiences: r.Audiences, Scopes: r.Scopes}
		if r.MaxTTL != 0 {
			y.MaxTTL = r.MaxTTL.String()
		}
		out.Rules = append(out.Rules, y)
	}
	data, err := yaml.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
