package policy_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/safeconduct/safeconduct/policy"
)

// rule writes a valid allow rule named r with extra keys, one per line.
func ruleWith(extra ...string) string {
	s := "rules:\n  - name: r\n    effect: allow\n    upstreams: [u]\n    subjects: [s]\n    audiences: [x]\n"
	for _, e := range extra {
		s += "    " + e + "\n"
	}
	return s
}

// denyWith writes a valid deny rule named d with extra keys, one per line.
func denyWith(extra ...string) string {
	s := "rules:\n  - name: d\n    effect: deny\n    upstreams: [u]\n    subjects: [s]\n"
	for _, e := range extra {
		s += "    " + e + "\n"
	}
	return s
}

func TestParseFeatureErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{
			name: "misspelt field in a condition",
			src:  ruleWith(`when: workload.atributes["env"] == "prod"`),
			want: []string{`p.yaml:7: rules[0].when: undefined field 'atributes' (column 9)`},
		},
		{
			name: "misspelt request field on a later line of a block condition",
			src:  ruleWith("when: |", `  has(request.actor) &&`, `  request.actor.atributes["x"] == "y"`),
			want: []string{`p.yaml:7: rules[0].when: undefined field 'atributes' (condition line 2, column 14)`},
		},
		{
			name: "unknown variable",
			src:  ruleWith(`when: subject == "x"`),
			want: []string{`p.yaml:7: rules[0].when: undeclared reference to 'subject' (in container '') (column 1)`},
		},
		{
			name: "not a bool",
			src:  ruleWith(`when: workload.subject`),
			want: []string{`p.yaml:7: rules[0].when: a condition must be a bool expression, this one is string`},
		},
		{
			name: "syntax error",
			src:  ruleWith(`when: workload.subject ==`),
			want: []string{`p.yaml:7: rules[0].when: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER} (column 20)`},
		},
		{
			name: "admin fields are not rule fields",
			src:  ruleWith(`when: request.action == "revoke"`),
			want: []string{`p.yaml:7: rules[0].when: undefined field 'action' (column 8)`},
		},
		{
			name: "empty and non-string conditions",
			src:  ruleWith(`when: ""`) + "  - {name: r2, effect: allow, upstreams: [u], subjects: [s], audiences: [x], when: true}\n",
			want: []string{
				`p.yaml:7: rules[0].when: a condition must not be empty (leave the key out instead)`,
				`p.yaml:8: rules[1].when: must be a string, not bool (quote it)`,
			},
		},
		{
			name: "too long a condition",
			src:  ruleWith(`when: "` + strings.Repeat("true && ", policy.MaxConditionSize/8) + `true"`),
			want: []string{`p.yaml:7: rules[0].when: a condition is at most 4096 bytes`},
		},
		{
			name: "empty lists never mean any",
			src: ruleWith("trust_domains: []", "attributes: {}", "resources: []", "copy_attributes: []", "actors: []") +
				"sensitive_audiences: []\n",
			want: []string{
				`p.yaml:7: rules[0].trust_domains: at least one trust domain is required (leave the key out instead)`,
				`p.yaml:8: rules[0].attributes: at least one attribute is required (leave the key out instead)`,
				`p.yaml:9: rules[0].resources: at least one resource is required (leave the key out instead)`,
				`p.yaml:10: rules[0].copy_attributes: at least one attribute is required (leave the key out instead)`,
				`p.yaml:11: rules[0].actors: at least one actor is required (leave the key out to allow no delegation)`,
				`p.yaml:12: sensitive_audiences: at least one pattern is required (leave the key out instead)`,
			},
		},
		{
			name: "empty audiences beside resources",
			src:  "rules:\n  - {name: r, effect: allow, upstreams: [u], subjects: [s], audiences: [], resources: [\"https://r.example\"]}\n",
			want: []string{`p.yaml:2: rules[0].audiences: must not be empty (leave the key out to grant resources only)`},
		},
		{
			name: "bad resources",
			src:  "rules:\n  - {name: r, effect: allow, upstreams: [u], subjects: [s], resources: [ledger, \"https://x#frag\", \"https://*.example\"]}\n",
			want: []string{
				`p.yaml:2: rules[0].resources[0]: must be an absolute URI without a fragment (RFC 8707)`,
				`p.yaml:2: rules[0].resources[1]: must be an absolute URI without a fragment (RFC 8707)`,
				`p.yaml:2: rules[0].resources[2]: must not contain '*': resources are matched exactly, there are no wildcards`,
			},
		},
		{
			name: "bad attributes",
			src:  ruleWith("attributes:", "  namespace: 42", `  "has space": x`, `  image: ""`, "  list: [a]", "  namespace: y"),
			want: []string{
				`p.yaml:8: rules[0].attributes.namespace: must be a string, not int (quote it)`,
				`p.yaml:9: rules[0].attributes["has space"]: attribute name must not contain whitespace or control characters`,
				`p.yaml:10: rules[0].attributes.image: must not be empty`,
				`p.yaml:11: rules[0].attributes.list: must be a string`,
				`p.yaml:12: rules[0].attributes.namespace: duplicate key (first at line 8)`,
			},
		},
		{
			name: "attributes not a mapping",
			src:  ruleWith("attributes: [namespace]"),
			want: []string{`p.yaml:7: rules[0].attributes: must be a mapping of attribute names to patterns (write {name: pattern})`},
		},
		{
			name: "lifecycle",
			src:  ruleWith("owner: \"team\\u0007\"", "expires: tomorrow", "review_by: 2025-13-01", "mode: shadow"),
			want: []string{
				`p.yaml:7: rules[0].owner: must not contain control or invisible characters`,
				`p.yaml:8: rules[0].expires: "tomorrow" is not a date (write YYYY-MM-DD or an RFC 3339 time)`,
				`p.yaml:9: rules[0].review_by: "2025-13-01" is not a date (write YYYY-MM-DD or an RFC 3339 time)`,
				`p.yaml:10: rules[0].mode: must be "enforce" or "audit", not "shadow"`,
			},
		},
		{
			name: "allow-only keys on a deny rule",
			src:  denyWith("max_ttl: 5m", "copy_attributes: [a]", "require_sender_constraint: true", "actors: [{upstreams: [u], subjects: [a]}]", "max_delegation_depth: 2"),
			want: []string{
				`p.yaml:6: rules[0].max_ttl: has no meaning on a deny rule`,
				`p.yaml:7: rules[0].copy_attributes: has no meaning on a deny rule`,
				`p.yaml:8: rules[0].require_sender_constraint: has no meaning on a deny rule`,
				`p.yaml:10: rules[0].max_delegation_depth: has no meaning on a deny rule`,
			},
		},
		{
			name: "delegation depth",
			src: ruleWith("max_delegation_depth: 2") +
				"  - {name: r2, effect: allow, upstreams: [u], subjects: [s], audiences: [x], actors: [{upstreams: [u], subjects: [a]}], max_delegation_depth: 0}\n" +
				"  - {name: r3, effect: allow, upstreams: [u], subjects: [s], audiences: [x], actors: [{upstreams: [u], subjects: [a]}], max_delegation_depth: two}\n" +
				"  - {name: r4, effect: allow, upstreams: [u], subjects: [s], audiences: [x], require_sender_constraint: \"yes\"}\n",
			want: []string{
				`p.yaml:7: rules[0].max_delegation_depth: needs actors (it bounds their delegation)`,
				`p.yaml:8: rules[1].max_delegation_depth: must be between 1 and 10`,
				`p.yaml:9: rules[2].max_delegation_depth: must be a whole number`,
				`p.yaml:10: rules[3].require_sender_constraint: must be true or false`,
			},
		},
		{
			name: "actors",
			src:  ruleWith("actors:", "  - upstreams: [u]", "  - subjects: [a]", "    upstream: [u]", "  - gateway", "  - {upstreams: [u], subjects: [a], attributes: {}}"),
			want: []string{
				`p.yaml:8: rules[0].actors[0].subjects: at least one subject pattern is required`,
				`p.yaml:9: rules[0].actors[1].upstreams: at least one upstream is required`,
				`p.yaml:10: rules[0].actors[1].upstream: unknown key (did you mean "upstreams"?)`,
				`p.yaml:11: rules[0].actors[2]: an actor must be a mapping with upstreams and subjects`,
				`p.yaml:12: rules[0].actors[3].attributes: at least one attribute is required (leave the key out instead)`,
			},
		},
		{
			name: "unknown keys suggest the key meant",
			src:  "rule: []\n" + ruleWith("copy_attribute: [a]", "expiry: 2025-01-01"),
			want: []string{
				`p.yaml:1: rule: unknown key (did you mean "rules"?)`,
				`p.yaml:8: rules[0].copy_attribute: unknown key (did you mean "copy_attributes"?)`,
				`p.yaml:9: rules[0].expiry: unknown key (did you mean "expires"?)`,
			},
		},
		{
			name: "admin rules",
			src: `admin:
  - name: a
    upstreams: [u]
    subjects: [s]
    actions: [revoke, delete]
    within_upstreams: ["*", u]
  - name: b
    effect: allow
    upstreams: [u]
    subjects: [s]
  - name: r
    upstreams: [u]
    subjects: [s]
    actions: []
    within_upstreams: []
    when: request.audiences.size() > 0
  - just-a-name
rules:
  - {name: r, effect: deny, upstreams: [u], subjects: [s]}
`,
			want: []string{
				`p.yaml:5: admin[0].actions: unknown action "delete" (actions are revoke, block, lift, list, report_change, rotate_keys, read_feed, introspect)`,
				`p.yaml:6: admin[0].within_upstreams: "*" stands alone (it already means every upstream)`,
				`p.yaml:7: admin[1].actions: at least one action is required`,
				`p.yaml:7: admin[1].within_upstreams: at least one upstream, or "*" for all, is required`,
				`p.yaml:8: admin[1].effect: unknown key (the keys here are name, owner, expires, review_by, upstreams, subjects, trust_domains, attributes, when, actions, within_upstreams)`,
				`p.yaml:14: admin[2].actions: at least one action is required`,
				`p.yaml:15: admin[2].within_upstreams: at least one upstream, or "*" for all, is required`,
				`p.yaml:16: admin[2].when: undefined field 'audiences' (column 8)`,
				`p.yaml:17: admin[3]: an admin rule must be a mapping`,
				`p.yaml:19: rules[0].name: duplicate rule name "r" (first defined at p.yaml:11)`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := policy.Parse("p.yaml", []byte(tt.src))
			if p != nil {
				t.Error("a policy came back with an error")
			}
			got := loadErr(t, err)
			if !slices.Equal(got, tt.want) {
				t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestParseFeatureAccepts(t *testing.T) {
	for _, src := range []string{
		ruleWith("expires: 2025-06-01", "review_by: \"2025-06-01T10:00:00+02:00\"", "owner: Payments Team", "mode: enforce"),
		ruleWith("mode: audit", "require_sender_constraint: false"),
		"rules:\n  - {name: r, effect: allow, upstreams: [u], subjects: [s], resources: [\"https://r.example/api\", \"urn:example:thing\"]}\n",
		denyWith("resources: [\"https://r.example\"]", "actors: [{upstreams: [u], subjects: [\"*\"]}]", "when: workload.claims.size() > 0"),
		"sensitive_audiences: [\"https://vault.*\"]\n",
		"admin:\n  - {name: a, upstreams: [u], subjects: [s], actions: [rotate_keys], within_upstreams: [\"*\"], when: 'request.action == \"rotate_keys\" && request.target_upstreams.size() == 0'}\n",
	} {
		if _, err := policy.Parse("p.yaml", []byte(src)); err != nil {
			t.Errorf("%s\n%v", src, err)
		}
	}
	// A file of admin rules or sensitive audiences is not an empty file.
	p := mustParse(t, "sensitive_audiences: [x]\n")
	if w := p.Warnings(); len(w) != 0 {
		t.Errorf("warnings %v", w)
	}
}

// Names are unique across rules and admin rules of every file.
func TestNamesUniqueAcrossAdmin(t *testing.T) {
	_, err := policy.ParseFiles(
		policy.File{Name: "a.yaml", Data: []byte("admin:\n  - {name: x, upstreams: [u], subjects: [s], actions: [list], within_upstreams: [u]}\n")},
		policy.File{Name: "b.yaml", Data: []byte("rules:\n  - {name: x, effect: deny, upstreams: [u], subjects: [s]}\n")},
	)
	want := []string{`b.yaml:2: rules[0].name: duplicate rule name "x" (first defined at a.yaml:2)`}
	if got := loadErr(t, err); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestValidateUpstreamsActorsAndAdmin(t *testing.T) {
	p := mustParse(t, `rules:
  - name: r
    effect: allow
    upstreams: [a]
    subjects: [s]
    audiences: [x]
    actors:
      - upstreams: [a, gw]
        subjects: [g]
admin:
  - name: adm
    upstreams: [ops]
    subjects: [s]
    actions: [revoke]
    within_upstreams: [a, b]
  - {name: all, upstreams: [a], subjects: [s], actions: [revoke], within_upstreams: ["*"]}
`)
	want := []string{
		`test.yaml:8: rules[0].actors: upstream "gw" is not configured`,
		`test.yaml:12: admin[0].upstreams: upstream "ops" is not configured`,
		`test.yaml:15: admin[0].within_upstreams: upstream "b" is not configured`,
	}
	if got := loadErr(t, p.ValidateUpstreams([]string{"a"})); !slices.Equal(got, want) {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if err := p.ValidateUpstreams([]string{"a", "b", "gw", "ops"}); err != nil {
		t.Error(err)
	}
}

// The conditions the package documentation shows load.
func TestDocConditions(t *testing.T) {
	for _, when := range []string{
		`workload.attributes["env"] == "prod"`,
		`'"env" in workload.attributes && workload.attributes["env"].startsWith("prod")'`,
		`workload.claims.repository_owner == "acme" && workload.claims.ref == "refs/heads/main"`,
		`has(workload.claims.groups) && workload.claims.groups.exists(g, g == "deployers")`,
		`'!has(request.actor) || request.actor.attributes["namespace"] == "gateway"'`,
		`request.scopes.all(s, s.startsWith("ledger.")) && now < timestamp("2026-01-01T00:00:00Z")`,
		`has(request.client_id) && request.client_id in ["billing-cli", "billing-ui"]`,
	} {
		if _, err := policy.Parse("doc.yaml", []byte(ruleWith("when: "+when))); err != nil {
			t.Errorf("%s: %v", when, err)
		}
	}
}
