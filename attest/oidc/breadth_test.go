package oidc_test

import (
	"errors"
	"log/slog"
	"maps"
	"strings"
	"testing"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/attest/attrs"
	"github.com/safeconduct/safeconduct/attest/oidc"
	"github.com/safeconduct/safeconduct/internal/testproc"
)

// Issuer breadth and required claims, through the Router and the real Verifier.
func TestVerifyBreadth(t *testing.T) {
	prodOnly := func(c *oidc.Config) { c.Subjects = []string{"system:serviceaccount:prod:*"} }
	owner := func(c *oidc.Config) { c.RequiredClaims = map[string]string{"repository_owner": "my-org"} }
	const outside = "subject outside the upstream's allowed subjects"
	tests := []struct {
		name     string
		cfg      func(c *oidc.Config)
		token    func(e *env) string
		want     error
		wantText string
		check    string // the *attest.ConditionError's Check, when set
	}{
		{name: "no subjects: any subject", cfg: func(*oidc.Config) {},
			token: func(e *env) string { return e.token(set("sub", "system:serviceaccount:kube-system:admin")) }},
		{name: "star: any subject", cfg: func(c *oidc.Config) { c.Subjects = []string{"*"} },
			token: func(e *env) string { return e.token(set("sub", "anything")) }},
		{name: "inside", cfg: prodOnly, token: func(e *env) string { return e.token() }},
		{name: "another namespace", cfg: prodOnly,
			token: func(e *env) string { return e.token(set("sub", "system:serviceaccount:kube-system:admin")) },
			want:  attest.ErrInvalid, wantText: outside, check: "subjects"},
		{name: "prefix of the pattern only", cfg: prodOnly,
			token: func(e *env) string { return e.token(set("sub", "system:serviceaccount:prod")) },
			want:  attest.ErrInvalid, wantText: outside},
		{name: "anchored at the start", cfg: prodOnly,
			token: func(e *env) string { return e.token(set("sub", "x-system:serviceaccount:prod:api")) },
			want:  attest.ErrInvalid, wantText: outside},
		{name: "namespace that extends prod", cfg: prodOnly,
			token: func(e *env) string { return e.token(set("sub", "system:serviceaccount:prod-evil:api")) },
			want:  attest.ErrInvalid, wantText: outside},
		{name: "second pattern", cfg: func(c *oidc.Config) { c.Subjects = []string{"system:serviceaccount:prod:*", "repo:my-org/*"} },
			token: func(e *env) string { return e.token(set("sub", "repo:my-org/app:ref:refs/heads/main")) }},
		{name: "literal pattern", cfg: func(c *oidc.Config) { c.Subjects = []string{"system:serviceaccount:prod:api"} },
			token: func(e *env) string { return e.token() }},
		{name: "forged and outside: fails as forged", cfg: prodOnly,
			token: func(e *env) string {
				return signRaw(t, "ES256", hdr("ES256", "es1"), e.claims(set("sub", "root")), testKeys().attacker)
			},
			want: attest.ErrInvalid, wantText: "signature"},
		{name: "expired and outside: fails as expired", cfg: prodOnly,
			token: func(e *env) string { return e.token(set("sub", "root"), set("exp", e.clock.Now().Unix()-3600)) },
			want:  attest.ErrInvalid, wantText: "expired"},

		{name: "required claim matches", cfg: owner,
			token: func(e *env) string { return e.token(set("repository_owner", "my-org")) }},
		{name: "required claim differs", cfg: owner,
			token: func(e *env) string { return e.token(set("repository_owner", "evil-org")) },
			want:  attest.ErrInvalid, wantText: `required claim "repository_owner" outside`, check: "required_claims.repository_owner"},
		{name: "required claim anchored", cfg: owner,
			token: func(e *env) string { return e.token(set("repository_owner", "my-org-evil")) },
			want:  attest.ErrInvalid, wantText: "outside"},
		{name: "required claim missing", cfg: owner,
			token: func(e *env) string { return e.token() },
			want:  attest.ErrInvalid, wantText: "missing or not a string"},
		{name: "required claim a number", cfg: owner,
			token: func(e *env) string { return e.token(set("repository_owner", 7)) },
			want:  attest.ErrInvalid, wantText: "missing or not a string"},
		{name: "required claim an array holding the value", cfg: owner,
			token: func(e *env) string { return e.token(set("repository_owner", []string{"my-org"})) },
			want:  attest.ErrInvalid, wantText: "missing or not a string"},
		{name: "required claim null", cfg: owner,
			token: func(e *env) string { return e.token(set("repository_owner", map[string]any(nil))) },
			want:  attest.ErrInvalid, wantText: "missing or not a string"},
		{name: "required claim glob", cfg: func(c *oidc.Config) { c.RequiredClaims = map[string]string{"repository": "my-org/*"} },
			token: func(e *env) string { return e.token(set("repository", "my-org/app")) }},
		{name: "required claim glob outside", cfg: func(c *oidc.Config) { c.RequiredClaims = map[string]string{"repository": "my-org/*"} },
			token: func(e *env) string { return e.token(set("repository", "evil/my-org/app")) },
			want:  attest.ErrInvalid, wantText: "outside"},
		{name: "every required claim", cfg: func(c *oidc.Config) {
			c.RequiredClaims = map[string]string{"repository_owner": "my-org", "ref": "refs/heads/main"}
		}, token: func(e *env) string {
			return e.token(set("repository_owner", "my-org"), set("ref", "refs/heads/dev"))
		}, want: attest.ErrInvalid, wantText: `"ref"`},
		{name: "subjects and required claims", cfg: func(c *oidc.Config) { prodOnly(c); owner(c) },
			token: func(e *env) string { return e.token(set("repository_owner", "my-org")) }},

		// Nested required claims: a name starting with '/' is a JSON Pointer.
		{name: "nested required claim matches", cfg: nestedNS,
			token: func(e *env) string { return e.token() }},
		{name: "nested required claim differs", cfg: nestedNS,
			token: func(e *env) string {
				return e.token(func(c map[string]any) { c["kubernetes.io"].(map[string]any)["namespace"] = "payments" })
			},
			want: attest.ErrInvalid, wantText: "upstream condition required_claims./kubernetes.io/namespace refused the token", check: "required_claims./kubernetes.io/namespace"},
		{name: "nested required claim missing", cfg: nestedNS,
			token: func(e *env) string { return e.token(func(c map[string]any) { delete(c, "kubernetes.io") }) },
			want:  attest.ErrInvalid, wantText: "missing or not a string"},
		{name: "dotted top-level name is one claim, not a path", cfg: func(c *oidc.Config) {
			c.RequiredClaims = map[string]string{"kubernetes.io": "*"}
		}, token: func(e *env) string { return e.token() }, want: attest.ErrInvalid, wantText: "missing or not a string"},

		// The upstream's guard: bounds, then its CEL condition.
		{name: "condition satisfied", cfg: guarded(attrs.GuardConfig{Condition: `attributes.namespace == "prod" && claims["kubernetes.io"].pod.name.startsWith("api-")`}),
			token: func(e *env) string { return e.token() }},
		{name: "condition not satisfied", cfg: guarded(attrs.GuardConfig{Condition: `attributes.service_account != "api"`}),
			token: func(e *env) string { return e.token() },
			want:  attest.ErrInvalid, wantText: "upstream condition condition refused the token: not satisfied", check: "condition"},
		{name: "condition over an attribute left absent fails closed", cfg: guarded(attrs.GuardConfig{Condition: `attributes.node == "n1"`}),
			token: func(e *env) string { return e.token() },
			want:  attest.ErrInvalid, wantText: "did not evaluate", check: "condition"},
		{name: "attribute within bounds", cfg: guarded(attrs.GuardConfig{AttributeBounds: map[string][]string{"namespace": {"prod"}}}),
			token: func(e *env) string { return e.token() }},
		{name: "attribute outside bounds", cfg: guarded(attrs.GuardConfig{AttributeBounds: map[string][]string{"namespace": {"dev", "dev-*"}}}),
			token: func(e *env) string { return e.token() },
			want:  attest.ErrInvalid, wantText: `attribute_bounds.namespace refused the token: attribute namespace "prod" is outside`, check: "attribute_bounds.namespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.cfg)
			raw := tt.token(e)
			w, err := e.attest(raw, attest.TypeJWT)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.want) || w != nil {
				t.Fatalf("got %v, %v; want %v", w, err, tt.want)
			}
			// A refusal by the upstream's own conditions names the upstream.
			var ce *attest.ConditionError
			if tt.check != "" && (!errors.As(err, &ce) || ce.Check != tt.check || ce.Upstream != "test") {
				t.Fatalf("error %v: ConditionError %+v, want check %s of upstream test", err, ce, tt.check)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Fatalf("error %q does not say %q", err, tt.wantText)
			}
		})
	}
}

// nestedNS requires the nested kubernetes.io namespace claim to be prod.
func nestedNS(c *oidc.Config) {
	c.RequiredClaims = map[string]string{"/kubernetes.io/namespace": "prod"}
}

// guarded gives the upstream the Kubernetes preset and the guard of gc.
func guarded(gc attrs.GuardConfig) func(c *oidc.Config) {
	return func(c *oidc.Config) {
		m, err := attrs.Compile(attrs.PresetKubernetes, nil)
		if err != nil {
			panic(err)
		}
		g, err := attrs.NewGuard(gc)
		if err != nil {
			panic(err)
		}
		c.Attributes, c.Guard = m, g
	}
}

func TestVerifyAttributes(t *testing.T) {
	github := func(t testing.TB) *attrs.Mapping {
		m, err := attrs.Compile(attrs.PresetGitHubActions, map[string]string{"email": `claims.email`})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	githubClaims := func(c map[string]any) {
		delete(c, "kubernetes.io")
		c["sub"] = "repo:my-org/app:environment:prod"
		c["repository"] = "my-org/app"
		c["repository_owner"] = "my-org"
		c["repository_id"] = "74"
		c["ref"] = "refs/heads/main"
		c["environment"] = "prod"
		c["email"] = "ci@example.com"
	}
	tests := []struct {
		name       string
		mapping    func(t testing.TB) *attrs.Mapping
		token      func(e *env) string
		want       map[string]string // besides sub and iss
		absent     uint64
		errors     uint64
		logSays    string // in the debug log, when set
		logOmitted bool   // the log must not mention attributes at all
	}{
		{name: "no mapping: sub and iss only", mapping: func(testing.TB) *attrs.Mapping { return nil },
			token: func(e *env) string { return e.token() }, want: map[string]string{}, logOmitted: true},
		{name: "kubernetes preset, pod-bound without node", mapping: kubernetesMapping,
			token: func(e *env) string { return e.token() },
			want: map[string]string{
				"namespace": "prod", "service_account": "api", "service_account_uid": "sa-uid",
				"pod": "api-7d9f", "pod_uid": "pod-uid",
			}, absent: 2, logOmitted: true},
		{name: "kubernetes preset with node", mapping: kubernetesMapping,
			token: func(e *env) string {
				return e.token(func(c map[string]any) {
					c["kubernetes.io"].(map[string]any)["node"] = map[string]any{"name": "n1", "uid": "node-uid"}
				})
			},
			want: map[string]string{
				"namespace": "prod", "service_account": "api", "service_account_uid": "sa-uid",
				"pod": "api-7d9f", "pod_uid": "pod-uid", "node": "n1", "node_uid": "node-uid",
			}},
		{name: "kubernetes preset, namespace of the wrong type: no kubernetes attribute, token still attested", mapping: kubernetesMapping,
			token: func(e *env) string {
				return e.token(func(c map[string]any) { c["kubernetes.io"].(map[string]any)["namespace"] = 42 })
			},
			want: map[string]string{}, absent: 7, errors: 7, logSays: "attribute namespace: no such overload"},
		{name: "kubernetes preset, claim naming another namespace than sub: no kubernetes attribute", mapping: kubernetesMapping,
			token: func(e *env) string {
				return e.token(func(c map[string]any) { c["kubernetes.io"].(map[string]any)["namespace"] = "payments" })
			},
			want: map[string]string{}, absent: 7, logOmitted: true},
		{name: "github preset with a custom claim", mapping: github,
			token: func(e *env) string { return e.token(githubClaims) },
			want: map[string]string{
				"repository": "my-org/app", "repository_owner": "my-org", "repository_id": "74",
				"ref": "refs/heads/main", "environment": "prod", "email": "ci@example.com",
			}, absent: 18},
		{name: "github preset, unguarded custom claim missing", mapping: github,
			token: func(e *env) string { return e.token(githubClaims, set("email", nil)) },
			want: map[string]string{
				"repository": "my-org/app", "repository_owner": "my-org", "repository_id": "74",
				"ref": "refs/heads/main", "environment": "prod",
			}, absent: 19, errors: 1, logSays: "no such key: email"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log testproc.Buffer
			e := newEnv(t, func(c *oidc.Config) {
				c.Attributes = tt.mapping(t)
				c.Logger = slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))
			})
			raw := tt.token(e)
			w, err := e.attest(raw, attest.TypeJWT)
			if err != nil {
				t.Fatal(err)
			}
			want := maps.Clone(tt.want)
			want["sub"], want["iss"] = w.Subject, e.iss.URL()
			if !maps.Equal(w.Attributes, want) {
				t.Fatalf("attributes\n got %v\nwant %v", w.Attributes, want)
			}
			st := e.v.Stats()
			if st.AttributesAbsent != tt.absent || st.AttributeErrors != tt.errors {
				t.Errorf("stats absent %d errors %d, want %d %d", st.AttributesAbsent, st.AttributeErrors, tt.absent, tt.errors)
			}
			logged := log.String()
			if tt.logSays != "" && !strings.Contains(logged, tt.logSays) {
				t.Errorf("log does not say %q:\n%s", tt.logSays, logged)
			}
			if tt.logOmitted && strings.Contains(logged, "attribute") {
				t.Errorf("log mentions attributes:\n%s", logged)
			}
			if tt.logSays != "" && (!strings.Contains(logged, "jti=jti-1") || !strings.Contains(logged, "upstream=test")) {
				t.Errorf("log lacks jti or upstream:\n%s", logged)
			}
			if strings.Contains(logged, strings.Split(raw, ".")[1]) {
				t.Error("log holds the token")
			}
		})
	}
}
