package policy_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/policy"
)

// agreementConditions mix conditions with leading equality terms (indexed),
// terms that are not leading (not indexed), terms on missing keys (errors) and
// claims that are sometimes not strings.
var agreementConditions = []string{
	`workload.attributes["env"] == "prod"`,
	`workload.attributes.team == "x" && workload.claims.repo == "r1"`,
	`workload.claims["repo"] in ["r1", "r2"]`,
	`"dev" == workload.attributes["env"] && request.scopes.size() > 0`,
	`workload.attributes["env"] == "prod" && workload.attributes["missing"] == "y"`,
	`workload.attributes["missing"] == "y" && workload.attributes["env"] == "dev"`,
	`request.scopes.size() > 0 && workload.attributes["env"] == "prod"`,
	`has(workload.claims.repo) && workload.claims.repo == "r1"`,
	`workload.claims.level == "1"`,
	`workload.claims.level in ["1", "2"] && workload.attributes.team in ["x", "y"]`,
	`workload.attributes["env"] == "prod" || workload.attributes["team"] == "x"`,
	`workload.attributes["team"] == "y" && (workload.claims.repo == "r2" || request.scopes.exists(s, s == "s2"))`,
	`workload.attributes["env"] == "dev" && workload.claims.repo.startsWith("r")`,
}

func pick[T any](r *rand.Rand, l []T) T { return l[r.IntN(len(l))] }

// randomPolicy writes a policy of n rules over two upstreams.
func randomPolicy(r *rand.Rand, n int) string {
	var b strings.Builder
	if r.IntN(2) == 0 {
		b.WriteString("version: 2\n")
	}
	b.WriteString("rules:\n")
	subjects := []string{"a:b", "a:*", "*", "*:c", "a:b:c", "a:**", "b:*:c"}
	for i := range n {
		fmt.Fprintf(&b, "  - name: r%d\n    effect: %s\n", i, pick(r, []string{"allow", "allow", "allow", "allow", "allow", "deny"}))
		if r.IntN(8) == 0 {
			b.WriteString("    mode: audit\n")
		}
		fmt.Fprintf(&b, "    upstreams: [%s]\n    subjects: [%q]\n", pick(r, []string{"u1", "u2", "u1, u2"}), pick(r, subjects))
		if r.IntN(3) > 0 {
			fmt.Fprintf(&b, "    when: '%s'\n", strings.ReplaceAll(pick(r, agreementConditions), "'", "''"))
		}
		if r.IntN(6) == 0 {
			fmt.Fprintf(&b, "    attributes: {team: %q}\n", pick(r, []string{"x", "*"}))
		}
		if r.IntN(4) > 0 {
			fmt.Fprintf(&b, "    audiences: [%s]\n", pick(r, []string{"a1", "a2", "a1, a2"}))
		}
		if r.IntN(2) == 0 {
			fmt.Fprintf(&b, "    scopes: [%s]\n", pick(r, []string{"s1", "s2", "s1, s2"}))
		}
		if strings.Contains(b.String()[strings.LastIndex(b.String(), "- name:"):], "effect: allow") && !strings.Contains(b.String()[strings.LastIndex(b.String(), "- name:"):], "audiences:") {
			b.WriteString("    audiences: [a1]\n")
		}
	}
	return b.String()
}

func randomRequest(r *rand.Rand) policy.Request {
	w := &attest.Workload{
		Upstream:   pick(r, []string{"u1", "u2"}),
		Subject:    pick(r, []string{"a:b", "a:x", "a:b:c", "z:c", "b:q:c", "a"}),
		Attributes: map[string]string{},
		Claims:     map[string]any{},
	}
	w.ID = w.Subject
	if r.IntN(4) > 0 {
		w.Attributes["env"] = pick(r, []string{"prod", "dev", "test"})
	}
	if r.IntN(3) > 0 {
		w.Attributes["team"] = pick(r, []string{"x", "y", "z"})
	}
	if r.IntN(3) > 0 {
		w.Claims["repo"] = pick(r, []any{"r1", "r2", "r3", 1.0, []any{"r1"}})
	}
	if r.IntN(2) > 0 {
		w.Claims["level"] = pick(r, []any{"1", "2", "3", 1.0})
	}
	req := policy.Request{Workload: w, Now: testNow}
	req.Audiences = pick(r, [][]string{{"a1"}, {"a1"}, {"a2"}, {"a1", "a2"}})
	req.Scopes = pick(r, [][]string{nil, nil, {"s1"}, {"s2"}, {"s1", "s2"}})
	return req
}

// TestWhenIndexAgreement: indexed decisions (subject and condition-term
// indexes, the term shortcut) equal brute-force ones (every rule, every
// condition run) over random policies and requests, outcome, rule, reason and
// audit hits alike.
func TestWhenIndexAgreement(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 5))
	decisions, allowed := 0, 0
	for range 120 {
		src := randomPolicy(r, 1+r.IntN(25))
		p, err := policy.Parse("p.yaml", []byte(src))
		if err != nil {
			t.Fatalf("%v\n%s", err, src)
		}
		brute := policy.BruteForce(p)
		for range 40 {
			req := randomRequest(r)
			got, want := p.Decide(req), brute.Decide(req)
			decisions++
			if got.Allowed() {
				allowed++
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("indexed and brute-force decisions differ\npolicy:\n%s\nworkload: %+v audiences %v scopes %v\nindexed: %+v\nbrute:   %+v",
					src, *req.Workload, req.Audiences, req.Scopes, got, want)
			}
			// Explain agrees too (it uses the term shortcut, not the indexes).
			if e := p.Explain(req); e.Outcome != want.Outcome || e.Rule != want.Rule || e.Reason != want.Reason {
				t.Fatalf("Explain differs: %+v vs %+v\npolicy:\n%s", e, want, src)
			}
		}
	}
	// The random policies must exercise both outcomes, or the test proves little.
	if allowed < decisions/10 || allowed > decisions*9/10 {
		t.Errorf("%d of %d decisions allowed: the generator is lopsided", allowed, decisions)
	}
}

// TestWhenIndexSkipsConditions: a rule whose equality term is false for the
// workload is not evaluated (its condition would fail with an error if it ran,
// which for a deny rule means "applies").
func TestWhenIndexSkipsConditions(t *testing.T) {
	src := `rules:
  - name: deny-if-broken
    effect: deny
    upstreams: [u]
    subjects: ["s"]
    when: 'workload.attributes["env"] == "prod" && workload.attributes["missing"] == "x"'
  - name: allow
    effect: allow
    upstreams: [u]
    subjects: ["s"]
    audiences: [a]
`
	p, err := policy.Parse("p.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		env  string
		want policy.Outcome
	}{
		// env is dev: the first term is false, so the condition is false (CEL:
		// false && error == false), the deny does not apply.
		{"dev", policy.Allow},
		// env is prod: the condition errs on the missing key, and a deny rule
		// whose condition errs applies (fail closed).
		{"prod", policy.DenyRule},
	} {
		w := &attest.Workload{Upstream: "u", Subject: "s", ID: "s", Attributes: map[string]string{"env": tt.env}}
		req := policy.Request{Workload: w, Audiences: []string{"a"}, Now: testNow}
		for name, q := range map[string]*policy.Policy{"indexed": p, "brute": policy.BruteForce(p)} {
			if d := q.Decide(req); d.Outcome != tt.want {
				t.Errorf("%s env=%s: %v (%s), want %v", name, tt.env, d.Outcome, d.Reason, tt.want)
			}
		}
	}
}

// FuzzWhenIndex: for any attributes and claims a workload carries, the indexed
// decision equals the brute-force one over a policy of every agreement
// condition (allow and deny, enforce and audit rules, sharing subjects).
func FuzzWhenIndex(f *testing.F) {
	var b strings.Builder
	b.WriteString("rules:\n")
	for i, cond := range agreementConditions {
		for j, effect := range []string{"allow", "deny", "audit"} {
			mode := ""
			if effect == "audit" {
				effect, mode = "allow", "\n    mode: audit"
			}
			aud := pick(rand.New(rand.NewPCG(uint64(i), uint64(j))), []string{"a1", "a2"})
			fmt.Fprintf(&b, "  - name: r%d-%d\n    effect: %s%s\n    upstreams: [u]\n    subjects: [%q]\n    audiences: [%s]\n    when: '%s'\n",
				i, j, effect, mode, pick(rand.New(rand.NewPCG(uint64(j), uint64(i))), []string{"a:*", "*", "a:b"}), aud, strings.ReplaceAll(cond, "'", "''"))
		}
	}
	p, err := policy.Parse("fuzz.yaml", []byte(b.String()))
	if err != nil {
		f.Fatal(err)
	}
	brute := policy.BruteForce(p)
	f.Add("a:b", "prod", "x", []byte(`{"repo":"r1","level":"1"}`), "a1")
	f.Add("a:x", "dev", "", []byte(`{"repo":1,"level":["1"]}`), "a2")
	f.Add("a:b", "", "y", []byte(`{"repo":"r2"}`), "a1")
	f.Fuzz(func(t *testing.T, subject, env, team string, claimsJSON []byte, audience string) {
		claims := map[string]any{}
		_ = json.Unmarshal(claimsJSON, &claims)
		if claims == nil {
			claims = map[string]any{}
		}
		w := &attest.Workload{Upstream: "u", Subject: subject, ID: subject, Attributes: map[string]string{}, Claims: claims}
		if env != "" {
			w.Attributes["env"] = env
		}
		if team != "" {
			w.Attributes["team"] = team
		}
		if subject == "" {
			return // refused before any rule
		}
		req := policy.Request{Workload: w, Audiences: []string{audience}, Now: testNow}
		if got, want := p.Decide(req), brute.Decide(req); !reflect.DeepEqual(got, want) {
			t.Fatalf("indexed %+v\nbrute   %+v", got, want)
		}
	})
}
