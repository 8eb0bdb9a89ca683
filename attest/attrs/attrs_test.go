package attrs_test

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/attest/attrs"
	"github.com/safeconduct/safeconduct/attest/internal/strictjson"
)

// fixture decodes testdata/name the way verifiers decode claims.
func fixture(t testing.TB, name string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	c, err := strictjson.DecodeObject(data, attest.MaxClaimsDepth)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return c
}

// claimsOf decodes literal claims JSON.
func claimsOf(t testing.TB, js string) map[string]any {
	t.Helper()
	c, err := strictjson.DecodeObject([]byte(js), attest.MaxClaimsDepth)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustCompile(t testing.TB, preset string, exprs map[string]string) *attrs.Mapping {
	t.Helper()
	m, err := attrs.Compile(preset, exprs)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var (
	wantKubernetes = map[string]string{
		"namespace":           "payments",
		"service_account":     "api",
		"service_account_uid": "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e",
		"pod":                 "api-7d9f8c6b5-x2x7q",
		"pod_uid":             "a8e3c1d4-5f6b-4a7c-9d8e-0f1a2b3c4d5e",
		"node":                "ip-10-0-12-34.eu-west-1.compute.internal",
		"node_uid":            "4f1c8a2e-9b7d-4e3a-8c6f-1d2e3f4a5b6c",
	}
	wantGitHub = map[string]string{
		"repository":       "octo-org/octo-repo",
		"repository_owner": "octo-org",
		"repository_id":    "74",
		"ref":              "refs/heads/main",
		"ref_type":         "branch",
		"sha":              "d6cd1e2bd19e03a81132a23b2025920577f84e37",
		"workflow":         "Deploy",
		"workflow_ref":     "octo-org/octo-repo/.github/workflows/deploy.yml@refs/heads/main",
		"job_workflow_ref": "octo-org/octo-automation/.github/workflows/oidc.yml@refs/heads/main",
		"environment":      "prod",
		"run_id":           "7654321098",
		"run_attempt":      "2",
		"actor":            "octocat",
		"event_name":       "push",
		// head_ref and base_ref are "" on a push: absent.
		"repository_owner_id":   "65",
		"repository_visibility": "private",
		"ref_protected":         "true",
		"workflow_sha":          "d6cd1e2bd19e03a81132a23b2025920577f84e37",
		"job_workflow_sha":      "1f2e3d4c5b6a79880706f5e4d3c2b1a098765432",
		"runner_environment":    "github-hosted",
		"actor_id":              "12",
	}
)

func TestApply(t *testing.T) {
	tests := []struct {
		name    string
		preset  string
		exprs   map[string]string
		claims  func(t testing.TB) map[string]any
		want    map[string]string
		wantErr []string // attributes reported as failed, sorted
		errText string   // in the error, when set
	}{
		{name: "kubernetes pod-bound token", preset: "kubernetes",
			claims: func(t testing.TB) map[string]any { return fixture(t, "kubernetes.json") },
			want:   wantKubernetes},
		{name: "kubernetes token bound to nothing: pod and node absent, no error", preset: "kubernetes",
			claims: func(t testing.TB) map[string]any { return fixture(t, "kubernetes-unbound.json") },
			want: map[string]string{
				"namespace": "ci", "service_account": "builder",
				"service_account_uid": "6f5e4d3c-2b1a-4098-8f7e-6d5c4b3a2918",
			}},
		{name: "kubernetes preset on a GitHub token: nothing, no error", preset: "kubernetes",
			claims: func(t testing.TB) map[string]any { return fixture(t, "github-actions.json") },
			want:   map[string]string{}},
		{name: "github push with environment", preset: "github_actions",
			claims: func(t testing.TB) map[string]any { return fixture(t, "github-actions.json") },
			want:   wantGitHub},
		{name: "github pull request: no environment", preset: "github_actions",
			claims: func(t testing.TB) map[string]any { return fixture(t, "github-actions-pull-request.json") },
			want: map[string]string{
				"repository": "octo-org/octo-repo", "repository_owner": "octo-org", "repository_id": "74",
				"ref": "refs/pull/42/merge", "ref_type": "branch", "sha": "0123456789abcdef0123456789abcdef01234567",
				"workflow": "CI", "workflow_ref": "octo-org/octo-repo/.github/workflows/ci.yml@refs/pull/42/merge",
				"run_id": "7654321099", "run_attempt": "1", "actor": "outside-contributor", "event_name": "pull_request",
				"job_workflow_ref":    "octo-org/octo-repo/.github/workflows/ci.yml@refs/pull/42/merge",
				"repository_owner_id": "65", "actor_id": "99", "repository_visibility": "public",
				"runner_environment": "github-hosted", "head_ref": "feature", "base_ref": "main",
				// no ref_protected: a pull request's merge ref is not protected
			}},
		{name: "github preset on a Kubernetes token: nothing, no error", preset: "github_actions",
			claims: func(t testing.TB) map[string]any { return fixture(t, "kubernetes.json") },
			want:   map[string]string{}},
		{name: "custom expressions without preset",
			exprs: map[string]string{
				"email":     `has(claims.email) ? claims.email : ""`,
				"team":      `claims.sub.startsWith("team-a:") ? "a" : "other"`,
				"run_no":    `string(int(claims.n))`,
				"as_double": `string(claims.n)`,
				"verified":  `string(claims.email_verified)`,
				"first_grp": `size(claims.groups) > 0 ? claims.groups[0] : ""`,
				"is_admin":  `claims.groups.exists(g, g == "admins") ? "yes" : ""`,
			},
			claims: func(t testing.TB) map[string]any {
				return claimsOf(t, `{"sub":"team-a:svc","email":"svc@example.com","email_verified":true,"n":42,"groups":["dev","ops"]}`)
			},
			want: map[string]string{
				"email": "svc@example.com", "team": "a", "run_no": "42", "as_double": "42",
				"verified": "true", "first_grp": "dev",
			}},
		{name: "override of a preset attribute, the others kept", preset: "kubernetes",
			exprs: map[string]string{
				"namespace": `"kubernetes.io" in claims ? "ns-" + claims["kubernetes.io"].namespace : ""`,
				"cluster":   `"eks-prod"`,
			},
			claims: func(t testing.TB) map[string]any { return fixture(t, "kubernetes.json") },
			want: func() map[string]string {
				w := maps.Clone(wantKubernetes)
				w["namespace"] = "ns-payments"
				w["cluster"] = "eks-prod"
				return w
			}()},
		{name: "github preset plus a custom claim", preset: "github_actions",
			exprs:  map[string]string{"visibility": `claims.repository_visibility`},
			claims: func(t testing.TB) map[string]any { return fixture(t, "github-actions.json") },
			want: func() map[string]string {
				w := maps.Clone(wantGitHub)
				w["visibility"] = "private"
				return w
			}()},

		// absent
		{name: "unguarded missing claim: absent, reported",
			exprs:   map[string]string{"email": `claims.email`, "sub2": `claims.sub`},
			claims:  func(t testing.TB) map[string]any { return claimsOf(t, `{"sub":"s"}`) },
			want:    map[string]string{"sub2": "s"},
			wantErr: []string{"email"}, errText: "no such key"},
		{name: "empty string claim: absent, not reported",
			exprs:  map[string]string{"head_ref": `claims.head_ref`, "guarded": `has(claims.base_ref) ? claims.base_ref : ""`},
			claims: func(t testing.TB) map[string]any { return fixture(t, "github-actions.json") },
			want:   map[string]string{}},
		{name: "non-string results: absent, reported",
			exprs: map[string]string{
				"num":  `has(claims.n) ? claims.n : ""`,
				"list": `claims.aud`,
				"obj":  `claims.o`,
				"null": `claims.z`,
				"ok":   `claims.s`,
			},
			claims: func(t testing.TB) map[string]any {
				return claimsOf(t, `{"n":1,"aud":["a"],"o":{"k":"v"},"z":null,"s":"x"}`)
			},
			want:    map[string]string{"ok": "x"},
			wantErr: []string{"list", "null", "num", "obj"}, errText: "not a string"},
		{name: "kubernetes claim of the wrong shape, no sub: nothing", preset: "kubernetes",
			claims: func(t testing.TB) map[string]any {
				return claimsOf(t, `{"kubernetes.io":{"namespace":7,"serviceaccount":"api","pod":{"name":["p"],"uid":"u"},"node":null}}`)
			},
			want: map[string]string{}},
		{name: "kubernetes namespace of the wrong type: every attribute fails", preset: "kubernetes",
			claims: func(t testing.TB) map[string]any {
				return claimsOf(t, `{"sub":"system:serviceaccount:7:api","kubernetes.io":{"namespace":7,"serviceaccount":{"name":"api"},"pod":{"name":"p","uid":"u"}}}`)
			},
			want:    map[string]string{},
			wantErr: []string{"namespace", "node", "node_uid", "pod", "pod_uid", "service_account", "service_account_uid"}},
		{name: "kubernetes pod of the wrong shape, consistent subject", preset: "kubernetes",
			claims: func(t testing.TB) map[string]any {
				return claimsOf(t, `{"sub":"system:serviceaccount:ci:api","kubernetes.io":{"namespace":"ci","serviceaccount":{"name":"api"},"pod":{"name":["p"],"uid":"u"},"node":null}}`)
			},
			want:    map[string]string{"namespace": "ci", "service_account": "api", "pod_uid": "u"},
			wantErr: []string{"pod"}},
		// The issue #15 escalation: an upstream bounded to dev's subjects asserts
		// another namespace in its kubernetes.io claim. Nothing is derived.
		{name: "kubernetes claim naming another namespace than sub: nothing", preset: "kubernetes",
			claims: func(t testing.TB) map[string]any {
				c := fixture(t, "kubernetes.json")
				c["sub"] = "system:serviceaccount:dev:api"
				return c
			},
			want: map[string]string{}},
		{name: "kubernetes gate: an overriding expression is not gated, the preset's are", preset: "kubernetes",
			exprs: map[string]string{"namespace": `"kubernetes.io" in claims ? claims["kubernetes.io"].namespace : ""`},
			claims: func(t testing.TB) map[string]any {
				c := fixture(t, "kubernetes.json")
				c["sub"] = "system:serviceaccount:dev:api"
				return c
			},
			want: map[string]string{"namespace": "payments"}},
		{name: "kubernetes claim naming another service account than sub: nothing", preset: "kubernetes",
			claims: func(t testing.TB) map[string]any {
				c := fixture(t, "kubernetes.json")
				c["sub"] = "system:serviceaccount:payments:other"
				return c
			},
			want: map[string]string{}},
		{name: "kubernetes subject with a namespace prefix trick: nothing", preset: "kubernetes",
			claims: func(t testing.TB) map[string]any {
				c := fixture(t, "kubernetes.json")
				c["sub"] = "system:serviceaccount:payments:api:extra"
				return c
			},
			want: map[string]string{}},
		{name: "kubernetes claim not an object", preset: "kubernetes",
			claims: func(t testing.TB) map[string]any { return claimsOf(t, `{"kubernetes.io":"prod"}`) },
			want:   map[string]string{}},
		{name: "github claims of the wrong type", preset: "github_actions",
			claims: func(t testing.TB) map[string]any {
				return claimsOf(t, `{"repository":"o/r","repository_id":74,"run_attempt":true,"environment":{}}`)
			},
			want:    map[string]string{"repository": "o/r"},
			wantErr: []string{"environment", "repository_id", "run_attempt"}},
		{name: "value over MaxValueLength: absent, reported",
			exprs: map[string]string{"long": `claims.s + claims.s`, "fits": `claims.s`},
			claims: func(t testing.TB) map[string]any {
				return map[string]any{"s": strings.Repeat("a", attrs.MaxValueLength/2+1)}
			},
			want: map[string]string{"fits": strings.Repeat("a", attrs.MaxValueLength/2+1)}, wantErr: []string{"long"}, errText: "exceeds"},
		{name: "runtime error: int() of a fraction",
			exprs:   map[string]string{"n": `string(int(claims.n))`},
			claims:  func(t testing.TB) map[string]any { return map[string]any{"n": 1e300} },
			want:    map[string]string{},
			wantErr: []string{"n"}},
		{name: "nil claims", preset: "kubernetes",
			exprs:   map[string]string{"sub2": `claims.sub`},
			claims:  func(testing.TB) map[string]any { return nil },
			want:    map[string]string{},
			wantErr: []string{"sub2"}},

		// cost
		{name: "cost limit on a pathological expression",
			exprs: map[string]string{
				"blowup": `[1,2,3,4,5,6,7,8,9,10].map(a, [1,2,3,4,5,6,7,8,9,10].map(b, [1,2,3,4,5,6,7,8,9,10].map(c, [1,2,3,4,5,6,7,8,9,10].map(d, a)))).size() > 0 ? "x" : ""`,
				"fine":   `claims.sub`,
			},
			claims:  func(t testing.TB) map[string]any { return claimsOf(t, `{"sub":"s"}`) },
			want:    map[string]string{"fine": "s"},
			wantErr: []string{"blowup"}, errText: "cost limit exceeded"},
		{name: "cost limit on a claim-driven comprehension",
			exprs: map[string]string{
				"any": `claims.groups.exists(g, claims.groups.exists(h, g + h == "never")) ? "x" : ""`,
			},
			claims: func(testing.TB) map[string]any {
				g := make([]any, 2000)
				for i := range g {
					g[i] = "group"
				}
				return map[string]any{"groups": g}
			},
			want:    map[string]string{},
			wantErr: []string{"any"}, errText: "cost limit exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustCompile(t, tt.preset, tt.exprs)
			got, err := m.Apply(tt.claims(t))
			if !maps.Equal(got, tt.want) {
				t.Errorf("attributes\n got %v\nwant %v", got, tt.want)
			}
			for k, v := range got {
				if v == "" {
					t.Errorf("empty attribute %s", k)
				}
			}
			var failed []string
			for _, e := range unjoin(err) {
				var ee *attrs.EvalError
				if !errors.As(e, &ee) {
					t.Fatalf("error %v is not an *EvalError", e)
				}
				failed = append(failed, ee.Attribute)
			}
			slices.Sort(failed)
			if !slices.Equal(failed, tt.wantErr) {
				t.Errorf("failed attributes %v, want %v (error: %v)", failed, tt.wantErr, err)
			}
			if tt.errText != "" && (err == nil || !strings.Contains(err.Error(), tt.errText)) {
				t.Errorf("error %v does not say %q", err, tt.errText)
			}
		})
	}
}

// unjoin splits an errors.Join result.
func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name   string
		preset string
		exprs  map[string]string
		want   []string // substrings of the error
	}{
		{name: "syntax error", exprs: map[string]string{"a": `claims.sub +`}, want: []string{`"a"`, "Syntax error"}},
		{name: "unknown variable", exprs: map[string]string{"a": `assertion.sub`}, want: []string{"undeclared reference to 'assertion'"}},
		{name: "unknown function", exprs: map[string]string{"a": `claims.sub.split(":")[0]`}, want: []string{"split"}},
		{name: "int result", exprs: map[string]string{"a": `size(claims)`}, want: []string{"yields int"}},
		{name: "bool result", exprs: map[string]string{"a": `has(claims.sub)`}, want: []string{"yields bool"}},
		{name: "list result", exprs: map[string]string{"a": `["x"]`}, want: []string{"yields list"}},
		{name: "empty expression", exprs: map[string]string{"a": "  "}, want: []string{"empty expression"}},
		{name: "expression too long", exprs: map[string]string{"a": `"` + strings.Repeat("x", attrs.MaxExpressionLength) + `"`}, want: []string{"size"}},
		{name: "deep nesting", exprs: map[string]string{"a": strings.Repeat("(", 1000) + `"x"` + strings.Repeat(")", 1000)}, want: []string{`"a"`}},
		{name: "uppercase name", exprs: map[string]string{"Namespace": `"x"`}, want: []string{"invalid name"}},
		{name: "leading digit", exprs: map[string]string{"1ns": `"x"`}, want: []string{"invalid name"}},
		{name: "leading underscore", exprs: map[string]string{"_ns": `"x"`}, want: []string{"invalid name"}},
		{name: "hyphen", exprs: map[string]string{"pod-uid": `"x"`}, want: []string{"invalid name"}},
		{name: "dot", exprs: map[string]string{"k8s.ns": `"x"`}, want: []string{"invalid name"}},
		{name: "empty name", exprs: map[string]string{"": `"x"`}, want: []string{"invalid name"}},
		{name: "65 bytes", exprs: map[string]string{"a" + strings.Repeat("b", 64): `"x"`}, want: []string{"invalid name"}},
		{name: "reserved sub", exprs: map[string]string{"sub": `claims.email`}, want: []string{`"sub"`, "reserved"}},
		{name: "reserved iss", preset: "kubernetes", exprs: map[string]string{"iss": `"x"`}, want: []string{"reserved"}},
		{name: "reserved trust_domain", exprs: map[string]string{"trust_domain": `claims.td`}, want: []string{"reserved"}},
		{name: "unknown preset", preset: "k8s", want: []string{`unknown preset "k8s"`, "github_actions, kubernetes"}},
		{name: "preset name in the wrong case", preset: "Kubernetes", want: []string{"unknown preset"}},
		{name: "too many attributes", exprs: func() map[string]string {
			m := map[string]string{}
			for i := range attrs.MaxAttributes + 1 {
				m["a"+strings.Repeat("x", i)] = `"x"`
			}
			return m
		}(), want: []string{"65 attributes"}},
		{name: "every error at once", preset: "nope", exprs: map[string]string{
			"a": `claims.sub +`, "B": `"x"`, "c": `nope`, "d": `1`, "ok": `claims.sub`,
		}, want: []string{"unknown preset", `"a"`, `"B"`, `"c"`, `"d"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := attrs.Compile(tt.preset, tt.exprs)
			if err == nil {
				t.Fatalf("compiled: %v", m.Expressions())
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestCompileGood(t *testing.T) {
	for _, p := range append(attrs.Presets(), "") {
		m := mustCompile(t, p, nil)
		if m.Preset() != p {
			t.Errorf("Preset() = %q, want %q", m.Preset(), p)
		}
		if m.Len() != len(m.Names()) || m.Len() != len(m.Expressions()) {
			t.Errorf("%s: Len %d, Names %v", p, m.Len(), m.Names())
		}
	}
	if got := mustCompile(t, "kubernetes", nil).Names(); !slices.Equal(got, slices.Sorted(maps.Keys(wantKubernetes))) {
		t.Errorf("kubernetes attributes %v", got)
	}
	if got := mustCompile(t, "github_actions", nil).Names(); !slices.Equal(got, slices.Sorted(slices.Values(append(slices.Collect(maps.Keys(wantGitHub)), "head_ref", "base_ref")))) {
		t.Errorf("github_actions attributes %v", got)
	}
	m := mustCompile(t, "kubernetes", map[string]string{"namespace": `"fixed"`, "a0_9": `"x"`, strings.Repeat("z", 64): `"y"`})
	if m.Expressions()["namespace"] != `"fixed"` || m.Len() != 9 {
		t.Errorf("override not applied: %v", m.Expressions())
	}
	m.Expressions()["namespace"] = "changed"
	if m.Expressions()["namespace"] != `"fixed"` {
		t.Error("Expressions returned the Mapping's own map")
	}
	// The Mapping keeps its own copy of the expressions.
	exprs := map[string]string{"a": `"x"`}
	m = mustCompile(t, "", exprs)
	exprs["a"] = `"y"`
	if got, _ := m.Apply(nil); got["a"] != "x" {
		t.Errorf("Apply after the caller's map changed: %v", got)
	}
	if got, err := mustCompile(t, "", nil).Apply(map[string]any{"sub": "s"}); err != nil || got == nil || len(got) != 0 {
		t.Errorf("empty mapping: %v, %v", got, err)
	}
}

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{
		"a": true, "namespace": true, "pod_uid": true, "a1": true, "a_": true, strings.Repeat("a", 64): true,
		"": false, "A": false, "1a": false, "_a": false, "a-b": false, "a.b": false, "a b": false, "ä": false,
		strings.Repeat("a", 65): false,
	} {
		if got := attrs.ValidName(name); got != want {
			t.Errorf("ValidName(%q) = %v", name, got)
		}
	}
}

// Apply is called from every request goroutine on one shared Mapping.
func TestApplyConcurrent(t *testing.T) {
	m := mustCompile(t, "kubernetes", nil)
	c := fixture(t, "kubernetes.json")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				got, err := m.Apply(c)
				if err != nil || !maps.Equal(got, wantKubernetes) {
					t.Errorf("got %v, %v", got, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkApply(b *testing.B) {
	for _, tc := range []struct{ preset, fixture string }{
		{"kubernetes", "kubernetes.json"},
		{"github_actions", "github-actions.json"},
	} {
		b.Run(tc.preset, func(b *testing.B) {
			m := mustCompile(b, tc.preset, nil)
			c := fixture(b, tc.fixture)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Apply(c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
