package policy_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/policy"
)

// reviewOf loads one allow rule of upstream u with the given subject and extra
// keys, and reviews it with the upstreams' subjects and limits.
func reviewOf(t *testing.T, subject, extra string, subjects map[string][]string, limits map[string]policy.UpstreamLimits) *policy.Review {
	t.Helper()
	path := filepath.Join(t.TempDir(), "p.yaml")
	doc := "sensitive_audiences: [\"https://vault.*\"]\nrules:\n  - name: r\n    effect: allow\n    owner: o\n    upstreams: [u]\n" +
		"    subjects: [\"" + subject + "\"]\n    audiences: [\"https://app.internal\"]\n    max_ttl: 10m\n" + extra
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := policy.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return p.ReviewWith(time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC), policy.ReviewOptions{UpstreamSubjects: subjects, Upstreams: limits})
}

func findingsOf(rv *policy.Review, kind string) []policy.Finding {
	var out []policy.Finding
	for _, f := range rv.Findings {
		if f.Kind == kind {
			out = append(out, f)
		}
	}
	return out
}

// Broad is any pattern spanning more than one namespace, repository owner or
// SPIFFE path root within what the upstream asserts; not only patterns without
// a literal prefix.
func TestReviewBreadth(t *testing.T) {
	tests := []struct {
		subject  string
		asserts  []string
		broad    string // in the message; "" for not broad
		severity string
	}{
		{subject: "*", broad: "has no literal prefix"},
		{subject: "*:api", broad: "has no literal prefix"},
		{subject: "system:serviceaccount:*", broad: "spans more than one namespace"},
		{subject: "system:serviceaccount:pay*", broad: "spans more than one namespace"},
		{subject: "system:service*", broad: "spans more than one namespace"},
		{subject: "system:serviceaccount:payments:*"},
		{subject: "system:serviceaccount:payments:api"},
		{subject: "repo:*", broad: "spans more than one repository owner"},
		{subject: "repo:my-org*", broad: "spans more than one repository owner"},
		{subject: "repo:my-org/*"},
		{subject: "repo:my-org/app:ref:refs/heads/main"},
		{subject: "spiffe://prod.example/*", broad: "spans more than one SPIFFE path root"},
		{subject: "spiffe://prod.example/ns/*", broad: "spans more than one SPIFFE path root"},
		{subject: "spiffe://prod.example/ns/prod*", broad: "spans more than one SPIFFE path root"},
		{subject: "spiffe://prod.example/ns/prod/*"},
		{subject: "spiffe://prod.example/billing/*"},
		{subject: "spiffe://*", broad: "spans more than one trust domain"},
		{subject: "team-a:*"},
		// Within what the upstream asserts: one namespace is not broad, two are.
		{subject: "system:serviceaccount:*", asserts: []string{"system:serviceaccount:dev:*"}},
		{subject: "*", asserts: []string{"system:serviceaccount:dev:*"}},
		{subject: "*", asserts: []string{"system:serviceaccount:dev:*", "system:serviceaccount:ci:*"}, broad: "spans more than one namespace (ci, dev)"},
		{subject: "system:serviceaccount:*", asserts: []string{"system:serviceaccount:dev:api", "system:serviceaccount:ci:api"}, broad: "spans more than one namespace (ci, dev)"},
		{subject: "*:api", asserts: []string{"system:serviceaccount:dev:*"}},
		{subject: "*", asserts: []string{"spiffe://prod.example/*"}, broad: "spans more than one SPIFFE path root"},
		{subject: "repo:*", asserts: []string{"repo:my-org/*"}},
	}
	for _, tt := range tests {
		t.Run(tt.subject+" within "+strings.Join(tt.asserts, ","), func(t *testing.T) {
			var subjects map[string][]string
			if tt.asserts != nil {
				subjects = map[string][]string{"u": tt.asserts}
			}
			rv := reviewOf(t, tt.subject, "", subjects, nil)
			fs := findingsOf(rv, policy.FindingBroad)
			switch {
			case tt.broad == "" && len(fs) > 0:
				t.Fatalf("flagged: %+v", fs)
			case tt.broad != "" && (len(fs) != 1 || !strings.Contains(fs[0].Message, tt.broad)):
				t.Fatalf("findings %+v, want one saying %q", fs, tt.broad)
			}
			if tt.broad != "" && rv.Upstreams[0].Subjects[0].Breadth == "" {
				t.Fatalf("access does not show the breadth: %+v", rv.Upstreams[0].Subjects[0])
			}
		})
	}
}

// Findings are ranked by severity, then by the sensitivity of what is granted.
func TestReviewSensitivityRank(t *testing.T) {
	for _, tt := range []struct {
		extra, want string
	}{
		{"", policy.SensitivityNormal},
		{"    scopes: [ledger.write]\n", policy.SensitivityElevated},
		{"    resources: [\"https://vault.internal/\"]\n", policy.SensitivitySensitive},
	} {
		rv := reviewOf(t, "system:serviceaccount:*", tt.extra, nil, nil)
		if fs := findingsOf(rv, policy.FindingBroad); len(fs) != 1 || fs[0].Sensitivity != tt.want {
			t.Errorf("%q: %+v, want sensitivity %s", tt.extra, fs, tt.want)
		}
	}
	// A sensitive grant's broad finding is high; it outranks warnings of
	// elevated rules and infos, whatever the file order.
	dir := t.TempDir()
	path := filepath.Join(dir, "p.yaml")
	doc := `sensitive_audiences: ["https://vault.*"]
rules:
  - name: a-normal
    effect: allow
    upstreams: [u]
    subjects: ["system:serviceaccount:*"]
    audiences: [x]
    max_ttl: 5m
  - name: b-elevated
    effect: allow
    owner: o
    upstreams: [u]
    subjects: ["repo:*"]
    audiences: [x]
    scopes: [admin]
    max_ttl: 5m
  - name: c-sensitive
    effect: allow
    owner: o
    upstreams: [u]
    subjects: ["*"]
    audiences: ["https://vault.internal"]
    max_ttl: 5m
`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := policy.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range p.Review(time.Now(), nil).Findings {
		if f.Kind == policy.FindingCrossesSegments {
			continue // version 1 patterns; not what this test ranks
		}
		got = append(got, f.Severity+" "+f.Rule+" "+f.Kind)
	}
	want := "high c-sensitive broad,warning b-elevated broad,warning a-normal broad,info a-normal no_owner"
	if strings.Join(got, ",") != want {
		t.Fatalf("ranked\n%s\nwant\n%s", strings.Join(got, ","), want)
	}
}

// Review shows what an upstream's own limits allow: a rule whose attribute
// pattern is outside the upstream's attribute_bounds is never asserted, not
// access.
func TestReviewUpstreamLimits(t *testing.T) {
	limits := map[string]policy.UpstreamLimits{"u": {
		Preset:          "kubernetes",
		AttributeBounds: map[string][]string{"namespace": {"dev", "dev-*"}},
		Condition:       `attributes.namespace != "dev-secret"`,
	}}
	rv := reviewOf(t, "system:serviceaccount:*", "    attributes: {namespace: payments}\n", map[string][]string{"u": {"system:serviceaccount:*"}}, limits)
	u := rv.Upstreams[0]
	if len(u.Subjects) != 0 || len(u.NeverAsserted) != 1 || !strings.Contains(u.NeverAsserted[0], `r: attribute namespace="payments" is outside attribute_bounds "dev", "dev-*"`) {
		t.Fatalf("access %+v", u)
	}
	if u.Condition == "" || u.Preset != "kubernetes" || len(u.AttributeBounds["namespace"]) != 2 {
		t.Fatalf("upstream limits not shown: %+v", u)
	}
	if fs := findingsOf(rv, policy.FindingUnreachable); len(fs) != 1 {
		t.Fatalf("unreachable findings %+v", fs)
	}
	// Within the bounds: access as usual.
	rv = reviewOf(t, "system:serviceaccount:*", "    attributes: {namespace: dev-2}\n", nil, limits)
	if len(rv.Upstreams[0].Subjects) != 1 || len(findingsOf(rv, policy.FindingUnreachable)) != 0 {
		t.Fatalf("access %+v", rv.Upstreams[0])
	}
}

// GitHub Actions rules must pin event_name, a protected ref or an environment.
func TestReviewGitHubUnpinned(t *testing.T) {
	gh := map[string]policy.UpstreamLimits{"u": {Preset: "github_actions"}}
	tests := []struct {
		name, subject, extra string
		limits               policy.UpstreamLimits
		flagged              bool
	}{
		{name: "sub only", subject: "repo:my-org/app:ref:refs/heads/main", flagged: true},
		{name: "repository attribute only", subject: "repo:my-org/*", extra: "    attributes: {repository: my-org/app}\n", flagged: true},
		{name: "event_name: \"*\" pins nothing", subject: "repo:my-org/*", extra: "    attributes: {event_name: \"*\"}\n", flagged: true},
		{name: "ref_protected false", subject: "repo:my-org/*", extra: "    attributes: {ref_protected: \"false\"}\n", flagged: true},
		{name: "event_name", subject: "repo:my-org/*", extra: "    attributes: {event_name: push}\n"},
		{name: "ref_protected", subject: "repo:my-org/*", extra: "    attributes: {ref_protected: \"true\"}\n"},
		{name: "environment attribute", subject: "repo:my-org/*", extra: "    attributes: {environment: prod}\n"},
		{name: "environment subject", subject: "repo:my-org/app:environment:prod"},
		{name: "when on runner_environment pins nothing", subject: "repo:my-org/*", extra: "    when: workload.attributes[\"runner_environment\"] == \"github-hosted\"\n", flagged: true},
		{name: "when", subject: "repo:my-org/*", extra: "    when: workload.attributes[\"event_name\"] == \"push\"\n"},
		{name: "upstream condition", subject: "repo:my-org/*", limits: policy.UpstreamLimits{Preset: "github_actions", Condition: `attributes.event_name == "push"`}},
		{name: "upstream required claim", subject: "repo:my-org/*", limits: policy.UpstreamLimits{Preset: "github_actions", RequiredClaims: map[string]string{"ref_protected": "true"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := gh
			if tt.limits.Preset != "" {
				l = map[string]policy.UpstreamLimits{"u": tt.limits}
			}
			fs := findingsOf(reviewOf(t, tt.subject, tt.extra, nil, l), policy.FindingGitHubUnpinned)
			if (len(fs) > 0) != tt.flagged {
				t.Fatalf("findings %+v, want flagged %v", fs, tt.flagged)
			}
		})
	}
	// Not a github_actions upstream: never flagged.
	if fs := findingsOf(reviewOf(t, "repo:my-org/*", "", nil, map[string]policy.UpstreamLimits{"u": {Preset: "kubernetes"}}), policy.FindingGitHubUnpinned); len(fs) > 0 {
		t.Fatalf("kubernetes upstream flagged: %+v", fs)
	}
}

// The upstream's condition bounds what review shows as access, where it has
// one of the simple forms conditionBounds follows.
func TestReviewUpstreamCondition(t *testing.T) {
	tests := []struct {
		condition, attrs string
		never            string // in never_asserted; "" for access
	}{
		{`attributes.namespace == "dev"`, "{namespace: payments}", `outside the upstream's condition, which allows "dev"`},
		{`attributes.namespace == "dev"`, "{namespace: dev}", ""},
		{`"dev" == attributes["namespace"] && claims.x == 1`, "{namespace: payments}", `allows "dev"`},
		{`attributes.namespace.startsWith("dev-")`, "{namespace: payments}", `allows "dev-*"`},
		{`attributes.namespace.startsWith("dev-")`, "{namespace: \"dev-*\"}", ""},
		{`attributes.namespace in ["a", "b"]`, "{namespace: c}", `allows "a", "b"`},
		{`attributes.namespace in ["a", "b"]`, "{namespace: b}", ""},
		// Not followed: a disjunction, a negation, an unparsable condition.
		{`attributes.namespace == "dev" || attributes.namespace == "ci"`, "{namespace: payments}", ""},
		{`attributes.namespace != "payments"`, "{namespace: payments}", ""},
		{`attributes.namespace ==`, "{namespace: payments}", ""},
	}
	for _, tt := range tests {
		t.Run(tt.condition+" "+tt.attrs, func(t *testing.T) {
			limits := map[string]policy.UpstreamLimits{"u": {Condition: tt.condition}}
			rv := reviewOf(t, "system:serviceaccount:dev:*", "    attributes: "+tt.attrs+"\n", nil, limits)
			u := rv.Upstreams[0]
			switch {
			case tt.never == "" && (len(u.NeverAsserted) > 0 || len(u.Subjects) != 1):
				t.Fatalf("access %+v", u)
			case tt.never != "" && (len(u.Subjects) != 0 || len(u.NeverAsserted) != 1 || !strings.Contains(u.NeverAsserted[0], tt.never)):
				t.Fatalf("access %+v, want never asserted saying %q", u, tt.never)
			}
		})
	}
	// A condition on sub bounds the subjects of an upstream without subjects.
	limits := map[string]policy.UpstreamLimits{"u": {Condition: `attributes.sub.startsWith("system:serviceaccount:dev:")`}}
	rv := reviewOf(t, "system:serviceaccount:*", "", nil, limits)
	if u := rv.Upstreams[0]; len(u.Subjects) != 1 || u.Subjects[0].Breadth != "" || len(u.AssertsOnly) != 1 || u.AssertsOnly[0] != "system:serviceaccount:dev:*" {
		t.Fatalf("access %+v", u)
	}
	if fs := findingsOf(rv, policy.FindingBroad); len(fs) != 0 {
		t.Fatalf("broad within one namespace: %+v", fs)
	}
}
