package policy_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/policy"
)

// loadErr returns the problems of err, failing unless it is a *LoadError.
func loadErr(t *testing.T, err error) []string {
	t.Helper()
	var le *policy.LoadError
	if !errors.As(err, &le) {
		t.Fatalf("error %v (%T) is not a *LoadError", err, err)
	}
	if len(le.Problems) == 0 {
		t.Fatal("a LoadError without problems")
	}
	return strings.Split(le.Error(), "\n")
}

func TestLoad(t *testing.T) {
	p, err := policy.Load(filepath.Join("testdata", "base.yaml"), filepath.Join("testdata", "payments.yaml"), filepath.Join("testdata", "empty.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := []policy.Rule{
		{
			Name: "block-debug-shells", Effect: policy.EffectDeny, Mode: policy.ModeEnforce, File: filepath.Join("testdata", "base.yaml"), Line: 3,
			Upstreams: []string{"cluster-a", "cluster-b"}, Subjects: []string{"system:serviceaccount:*:debug-*"},
		},
		{
			Name: "payments-to-ledger", Effect: policy.EffectAllow, Mode: policy.ModeEnforce, File: filepath.Join("testdata", "payments.yaml"), Line: 2,
			Upstreams: []string{"cluster-a"}, Subjects: []string{"system:serviceaccount:payments:*"},
			Audiences: []string{"https://ledger.internal"}, Scopes: []string{"ledger.read", "ledger.write"}, MaxTTL: 10 * time.Minute,
		},
	}
	got := p.Rules()
	if len(got) != len(want) {
		t.Fatalf("got %d rules, want %d", len(got), len(want))
	}
	for i := range want {
		if fmt.Sprintf("%#v", got[i]) != fmt.Sprintf("%#v", want[i]) {
			t.Errorf("rule %d:\ngot  %#v\nwant %#v", i, got[i], want[i])
		}
	}
	if w := p.Warnings(); len(w) != 3 || w[2].String() != filepath.Join("testdata", "empty.yaml")+": file defines no rules" ||
		!strings.Contains(w[0].String(), `line 6: "system:serviceaccount:*:debug-*"`) || !strings.Contains(w[1].String(), "add `version: 2`") {
		t.Errorf("warnings: %v", w)
	}
	if err := p.ValidateUpstreams([]string{"cluster-a", "cluster-b", "cluster-c"}); err != nil {
		t.Errorf("ValidateUpstreams: %v", err)
	}
}

// Every problem of every file comes back at once, in file and line order.
func TestLoadReportsEverything(t *testing.T) {
	bad, missing, payments := filepath.Join("testdata", "bad.yaml"), filepath.Join("testdata", "missing.yaml"), filepath.Join("testdata", "payments.yaml")
	_, err := policy.Load(bad, missing, payments)
	want := []string{
		bad + `:2: rules[0].audiences: an allow rule must grant at least one audience`,
		bad + `:6: rules[0].audience: unknown key (did you mean "audiences"?)`,
		bad + `:7: rules[0].max_ttl: "ten minutes" is not a duration (write e.g. 10m or 1h30m)`,
		bad + `:8: rules[1].name: duplicate rule name "payments-to-ledger" (first defined at ` + bad + `:2)`,
		bad + `:9: rules[1].effect: must be "allow" or "deny", not "permit"`,
		bad + `:10: rules[1].upstreams: at least one upstream is required`,
		bad + `:11: rules[1].subjects[0]: must not contain whitespace or control characters`,
		bad + `:11: rules[1].subjects[1]: must not be empty`,
		bad + `:12: rules[1].audiences[0]: must not contain '*': audiences are matched exactly, there are no wildcards`,
		bad + `:13: rules[1].scopes[0]: must be printable ASCII without spaces, '"' or '\' (RFC 6749 scope-token)`,
		bad + `:13: rules[1].scopes[2]: "ledger.read" is listed twice (first at line 13)`,
		bad + `:14: rules[2].name: is required`,
		bad + `:17: rules[2].max_ttl: has no meaning on a deny rule`,
		missing + `: cannot read: no such file or directory`,
		payments + `:2: rules[0].name: duplicate rule name "payments-to-ledger" (first defined at ` + bad + `:2)`,
	}
	got := loadErr(t, err)
	if !slices.Equal(got, want) {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string // whole lines of the error
	}{
		{
			name: "unknown top-level key",
			src:  "versions: 1\nrules: []\n",
			want: []string{`p.yaml:1: versions: unknown key (did you mean "version"?)`},
		},
		{
			name: "unknown rule key",
			src: `rules:
  - name: r
    effect: allow
    upstreams: [a]
    subjects: [s]
    audiences: [x]
    ttl: 5m
`,
			want: []string{`p.yaml:7: rules[0].ttl: unknown key (did you mean "max_ttl"?)`},
		},
		{
			name: "duplicate key",
			src: `rules:
  - name: r
    effect: allow
    upstreams: [a]
    subjects: [s]
    audiences: [x]
    audiences: [y]
`,
			want: []string{`p.yaml:7: rules[0].audiences: duplicate key (first at line 6)`},
		},
		{
			name: "missing audiences on an allow rule",
			src:  "rules:\n  - {name: r, effect: allow, upstreams: [a], subjects: [s]}\n",
			want: []string{`p.yaml:2: rules[0].audiences: an allow rule must grant at least one audience`},
		},
		{
			name: "empty audiences on an allow rule",
			src:  "rules:\n  - name: r\n    effect: allow\n    upstreams: [a]\n    subjects: [s]\n    audiences: []\n",
			want: []string{`p.yaml:6: rules[0].audiences: an allow rule must grant at least one audience`},
		},
		{
			name: "null audiences on an allow rule",
			src:  "rules:\n  - name: r\n    effect: allow\n    upstreams: [a]\n    subjects: [s]\n    audiences:\n",
			want: []string{`p.yaml:6: rules[0].audiences: an allow rule must grant at least one audience`},
		},
		{
			name: "deny rule without subjects",
			src:  "rules:\n  - {name: r, effect: deny, upstreams: [a]}\n",
			want: []string{`p.yaml:2: rules[0].subjects: at least one subject pattern is required`},
		},
		{
			name: "deny rule without upstreams",
			src:  "rules:\n  - {name: r, effect: deny, subjects: [\"*\"]}\n",
			want: []string{`p.yaml:2: rules[0].upstreams: at least one upstream is required`},
		},
		{
			name: "missing effect",
			src:  "rules:\n  - {name: r, upstreams: [a], subjects: [s], audiences: [x]}\n",
			want: []string{`p.yaml:2: rules[0].effect: is required (allow or deny)`},
		},
		{
			name: "effect is case-sensitive",
			src:  "rules:\n  - {name: r, effect: Allow, upstreams: [a], subjects: [s], audiences: [x]}\n",
			want: []string{`p.yaml:2: rules[0].effect: must be "allow" or "deny", not "Allow"`},
		},
		{
			name: "bad durations",
			src: `rules:
  - {name: a, effect: allow, upstreams: [u], subjects: [s], audiences: [x], max_ttl: 10}
  - {name: b, effect: allow, upstreams: [u], subjects: [s], audiences: [x], max_ttl: -5m}
  - {name: c, effect: allow, upstreams: [u], subjects: [s], audiences: [x], max_ttl: 0s}
  - {name: d, effect: allow, upstreams: [u], subjects: [s], audiences: [x], max_ttl: 5 days}
  - {name: e, effect: allow, upstreams: [u], subjects: [s], audiences: [x], max_ttl: [5m]}
  - {name: f, effect: allow, upstreams: [u], subjects: [s], audiences: [x], max_ttl: }
`,
			want: []string{
				`p.yaml:2: rules[0].max_ttl: "10" is not a duration (write e.g. 10m or 1h30m)`,
				`p.yaml:3: rules[1].max_ttl: must be positive`,
				`p.yaml:4: rules[2].max_ttl: must be positive`,
				`p.yaml:5: rules[3].max_ttl: "5 days" is not a duration (write e.g. 10m or 1h30m)`,
				`p.yaml:6: rules[4].max_ttl: must be a string`,
				`p.yaml:7: rules[5].max_ttl: has no value`,
			},
		},
		{
			name: "values of the wrong type",
			src: `rules:
  - name: 42
    effect: allow
    upstreams: cluster-a
    subjects: [{a: b}]
    audiences: [true]
    scopes: [1]
`,
			want: []string{
				`p.yaml:2: rules[0].name: must be a string, not int (quote it)`,
				`p.yaml:4: rules[0].upstreams: must be a list (write [cluster-a])`,
				`p.yaml:5: rules[0].subjects[0]: must be a string`,
				`p.yaml:6: rules[0].audiences[0]: must be a string, not bool (quote it)`,
				`p.yaml:7: rules[0].scopes[0]: must be a string, not int (quote it)`,
			},
		},
		{
			name: "bad strings",
			src: `rules:
  - name: "has space"
    effect: allow
    upstreams: ["a\tb"]
    subjects: ["x\u202ey"]
    audiences: ["x\u0000"]
    scopes: ["caf\u00e9", "a\"b"]
`,
			want: []string{
				`p.yaml:2: rules[0].name: must not contain whitespace or control characters`,
				`p.yaml:4: rules[0].upstreams[0]: must not contain whitespace or control characters`,
				`p.yaml:5: rules[0].subjects[0]: must not contain whitespace or control characters`,
				`p.yaml:6: rules[0].audiences[0]: must not contain whitespace or control characters`,
				`p.yaml:7: rules[0].scopes[0]: must be printable ASCII without spaces, '"' or '\' (RFC 6749 scope-token)`,
				`p.yaml:7: rules[0].scopes[1]: must be printable ASCII without spaces, '"' or '\' (RFC 6749 scope-token)`,
			},
		},
		{
			name: "wildcard scope",
			src:  "rules:\n  - {name: r, effect: allow, upstreams: [a], subjects: [s], audiences: [x], scopes: [\"ledger.*\"]}\n",
			want: []string{`p.yaml:2: rules[0].scopes[0]: must not contain '*': scopes are matched exactly, there are no wildcards`},
		},
		{
			name: "duplicate list entries",
			src:  "rules:\n  - {name: r, effect: allow, upstreams: [a, a], subjects: [s], audiences: [x]}\n",
			want: []string{`p.yaml:2: rules[0].upstreams[1]: "a" is listed twice (first at line 2)`},
		},
		{
			name: "aliases",
			src: `subjects: &s ["*"]
rules:
  - name: r
    effect: deny
    upstreams: [a]
    subjects: *s
`,
			want: []string{
				`p.yaml:1: subjects: unknown key (the keys here are version, rules, admin, sensitive_audiences)`,
				`p.yaml:6: rules[0].subjects: YAML aliases are not supported`,
			},
		},
		{
			name: "merge keys",
			src: `rules:
  - &base {name: a, effect: deny, upstreams: [u], subjects: [s]}
  - <<: *base
    name: b
`,
			want: []string{
				`p.yaml:3: rules[1]: YAML merge keys (<<) are not supported`,
				`p.yaml:3: rules[1].effect: is required (allow or deny)`,
				`p.yaml:3: rules[1].upstreams: at least one upstream is required`,
				`p.yaml:3: rules[1].subjects: at least one subject pattern is required`,
			},
		},
		{
			name: "rules not a list",
			src:  "rules:\n  name: r\n",
			want: []string{`p.yaml:2: rules: must be a list`},
		},
		{
			name: "rule not a mapping",
			src:  "rules:\n  - r\n  - [a]\n",
			want: []string{`p.yaml:2: rules[0]: a rule must be a mapping`, `p.yaml:3: rules[1]: a rule must be a mapping`},
		},
		{
			name: "top level not a mapping",
			src:  "- name: r\n",
			want: []string{`p.yaml:1: the top level must be a mapping with a "rules" key`},
		},
		{
			name: "two documents",
			src:  "rules: []\n---\nrules: []\n",
			want: []string{`p.yaml:2: a policy file holds one YAML document; remove the extra "---"`},
		},
		{
			name: "syntax error",
			src:  "rules:\n  - name: r\n    effect: allow\n    upstreams: [a\n",
			want: []string{`p.yaml:4: invalid YAML: did not find expected ',' or ']'`},
		},
		{
			name: "parser error in a block mapping",
			src:  "rules:\n  - name: r\n    effect: allow\n   upstreams: [a]\n",
			want: []string{`p.yaml:2: invalid YAML: did not find expected '-' indicator`},
		},
		{
			name: "scanner error",
			src:  "rules:\n  - name: r\n    effect: @allow\n",
			want: []string{`p.yaml:3: invalid YAML: found character that cannot start any token`},
		},
		{
			name: "syntax error on the first line",
			src:  "\trules: []\n",
			want: []string{`p.yaml:1: invalid YAML: found character that cannot start any token`},
		},
		{
			name: "too large",
			src:  "rules: []\n" + strings.Repeat("#", policy.MaxFileSize),
			want: []string{`p.yaml: file is larger than 1048576 bytes`},
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

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		rules int
		warn  bool
	}{
		{name: "empty file", src: "", warn: true},
		{name: "comments only", src: "# later\n", warn: true},
		{name: "null document", src: "---\n", warn: true},
		{name: "null rules", src: "rules:\n", warn: true},
		{name: "empty rules", src: "rules: []\n", warn: true},
		{name: "deny with any audience and scope", src: "rules:\n  - {name: r, effect: deny, upstreams: [a], subjects: [\"*\"]}\n", rules: 1},
		{name: "deny with empty lists", src: "rules:\n  - {name: r, effect: deny, upstreams: [a], subjects: [\"*\"], audiences: [], scopes: []}\n", rules: 1},
		{name: "allow without scopes or ttl", src: "rules:\n  - {name: r, effect: allow, upstreams: [a], subjects: [s], audiences: [x]}\n", rules: 1},
		{name: "quoted numbers are strings", src: "rules:\n  - {name: \"1\", effect: allow, upstreams: [\"2\"], subjects: [\"3\"], audiences: [\"4\"], scopes: [\"5\"], max_ttl: \"1h\"}\n", rules: 1},
		{name: "document marker", src: "---\nrules:\n  - {name: r, effect: deny, upstreams: [a], subjects: [\"*\"]}\n...\n", rules: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := policy.Parse("p.yaml", []byte(tt.src))
			if err != nil {
				t.Fatal(err)
			}
			if got := len(p.Rules()); got != tt.rules {
				t.Errorf("got %d rules, want %d", got, tt.rules)
			}
			if got := len(p.Warnings()) > 0; got != tt.warn {
				t.Errorf("warnings: %v", p.Warnings())
			}
		})
	}
}

func TestParseFilesDuplicateNames(t *testing.T) {
	_, err := policy.ParseFiles(
		policy.File{Name: "a.yaml", Data: []byte("rules:\n  - {name: r, effect: deny, upstreams: [u], subjects: [s]}\n")},
		policy.File{Name: "b.yaml", Data: []byte("rules:\n  - {name: q, effect: deny, upstreams: [u], subjects: [s]}\n  - name: r\n    effect: deny\n    upstreams: [u]\n    subjects: [s]\n")},
	)
	want := []string{`b.yaml:3: rules[1].name: duplicate rule name "r" (first defined at a.yaml:2)`}
	if got := loadErr(t, err); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestLoadNoFiles(t *testing.T) {
	_, err := policy.Load()
	if got := loadErr(t, err); !slices.Equal(got, []string{"no policy files given"}) {
		t.Errorf("got %q", got)
	}
}

func TestTooManyRules(t *testing.T) {
	// Entries count toward the limit whether or not they are valid rules, so a
	// list of scalars reaches it cheaply.
	var files []policy.File
	per := 60_000
	for i := range 2 {
		files = append(files, policy.File{Name: fmt.Sprintf("f%d.yaml", i), Data: []byte("rules: [" + strings.Repeat("0,", per) + "]\n")})
	}
	_, err := policy.ParseFiles(files...)
	got := loadErr(t, err)
	want := "f1.yaml:1: rules: too many rules: a policy holds at most 100000"
	if !slices.Contains(got, want) {
		t.Errorf("%q missing among %d problems", want, len(got))
	}
	if n := len(got); n != policy.MaxRules+1 {
		t.Errorf("got %d problems, want one per counted entry plus one", n)
	}
}

func TestValidateUpstreams(t *testing.T) {
	p := mustParse(t, `rules:
  - name: r1
    effect: allow
    upstreams:
      - cluster-a
      - cluster-x
    subjects: ["*"]
    audiences: [x]
  - {name: r2, effect: deny, upstreams: [cluster-y], subjects: ["*"]}
`)
	err := p.ValidateUpstreams([]string{"cluster-a", "cluster-b"})
	want := []string{
		`test.yaml:6: rules[0].upstreams: upstream "cluster-x" is not configured`,
		`test.yaml:9: rules[1].upstreams: upstream "cluster-y" is not configured`,
	}
	if got := loadErr(t, err); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if err := p.ValidateUpstreams(nil); err == nil {
		t.Error("no configured upstreams, and no error")
	}
	if err := mustParse(t, "").ValidateUpstreams(nil); err != nil {
		t.Errorf("empty policy: %v", err)
	}
}

func TestProblemString(t *testing.T) {
	for _, tt := range []struct {
		p    policy.Problem
		want string
	}{
		{policy.Problem{File: "a.yaml", Line: 3, Path: "rules[0].name", Message: "m"}, "a.yaml:3: rules[0].name: m"},
		{policy.Problem{File: "a.yaml", Line: 3, Message: "m"}, "a.yaml:3: m"},
		{policy.Problem{File: "a.yaml", Message: "m"}, "a.yaml: m"},
		{policy.Problem{Message: "m"}, "m"},
	} {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}

// Every problem of a rule is reported (this rule has three; two used to be), each
// as "file:line: path: message".
func TestRuleProblemsAllReported(t *testing.T) {
	src := `rules:
  - name: r
    effect: allow
    upstreams: [u]
    subjects: [s]
    audiences: [a]
    max_delegation_depth: 0
    max_ttl: soon
`
	want := []string{
		`p.yaml:7: rules[0].max_delegation_depth: must be between 1 and 10`,
		`p.yaml:7: rules[0].max_delegation_depth: needs actors (it bounds their delegation)`,
		`p.yaml:8: rules[0].max_ttl: "soon" is not a duration (write e.g. 10m or 1h30m)`,
	}
	_, err := policy.Parse("p.yaml", []byte(src))
	if got := loadErr(t, err); !slices.Equal(got, want) {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
