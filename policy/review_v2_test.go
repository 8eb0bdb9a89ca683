package policy_test

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/policy"
)

// reviewV2Of is reviewOf for a `version: 2` file: one allow rule r of upstream u
// with the given subject and extra keys.
func reviewV2Of(t *testing.T, subject, extra string, subjects map[string][]string, limits map[string]policy.UpstreamLimits) *policy.Review {
	t.Helper()
	doc := "version: 2\nrules:\n  - name: r\n    effect: allow\n    owner: o\n    upstreams: [u]\n" +
		"    subjects: [\"" + subject + "\"]\n    audiences: [\"https://app.internal\"]\n    max_ttl: 10m\n" + extra
	p, err := policy.Parse("v2.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return p.ReviewWith(time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC), policy.ReviewOptions{UpstreamSubjects: subjects, Upstreams: limits})
}

// In a version 2 file '*' stays within one segment, and the review reads it so:
// its effective subjects, breadth and never_asserted are those of the pattern
// the server enforces, within the upstream's subjects (which the verifiers read
// with version 1 meaning: "repo:acme/**" and "repo:acme/*" alike match every
// subject under repo:acme/). Some cases read the same with either meaning
// ("every namespace", "'**' spans namespaces", ...): they hold that nothing is
// reported narrower than it is.
func TestReviewVersion2(t *testing.T) {
	tests := []struct {
		name, subject string
		asserts       []string
		// effective are the effective subjects (nil: the pattern itself);
		// never is set when the upstream never asserts what the pattern matches.
		effective []string
		never     bool
		broad     string // in the broad finding and the breadth; "" for none
	}{
		{
			// The upstream asserts every subject of owner acme; the rule matches
			// its repositories' bare names only, not repo:acme/app:pull_request.
			name: "one segment within an owner", subject: "repo:acme/*", asserts: []string{"repo:acme/**"},
		},
		{
			name: "one segment within a version 1 star", subject: "repo:acme/*", asserts: []string{"repo:acme/*"},
		},
		{
			name: "not a subject with a further segment", subject: "repo:acme/*", asserts: []string{"repo:acme/app:pull_request"}, never: true,
		},
		{
			name: "not a pattern of further segments", subject: "repo:acme/*", asserts: []string{"repo:acme/app:*"}, never: true,
		},
		{
			name: "crossing where '**' says so", subject: "repo:acme/**", asserts: []string{"repo:acme/app:*"}, effective: []string{"repo:acme/app:*"},
		},
		{
			name: "one segment only, not namespace and name", subject: "system:serviceaccount:*",
			asserts: []string{"system:serviceaccount:dev:*", "system:serviceaccount:ci:*"}, never: true,
		},
		{
			name: "a lone star matches no subject with a separator", subject: "*",
			asserts: []string{"system:serviceaccount:dev:*", "system:serviceaccount:ci:*"}, never: true,
		},
		{
			name: "a lone star within a pattern without separators", subject: "*", asserts: []string{"dev-*"},
			effective: []string{"* within dev-*"},
		},
		{
			name: "every namespace", subject: "system:serviceaccount:*:api", broad: "spans more than one namespace",
		},
		{
			name: "every namespace the upstream asserts", subject: "system:serviceaccount:*:api",
			asserts: []string{"system:serviceaccount:dev:*", "system:serviceaccount:ci:*"},
			effective: []string{
				"system:serviceaccount:*:api within system:serviceaccount:ci:*",
				"system:serviceaccount:*:api within system:serviceaccount:dev:*",
			},
			broad: "spans more than one namespace (ci, dev)",
		},
		{
			// ci:x:* holds no name api of a namespace: one namespace only.
			name: "one namespace the upstream asserts", subject: "system:serviceaccount:*:api",
			asserts:   []string{"system:serviceaccount:dev:*", "system:serviceaccount:ci:x:*"},
			effective: []string{"system:serviceaccount:*:api within system:serviceaccount:dev:*"},
		},
		{
			name: "'**' spans namespaces", subject: "system:serviceaccount:**",
			asserts:   []string{"system:serviceaccount:dev:*", "system:serviceaccount:ci:*"},
			effective: []string{"system:serviceaccount:ci:*", "system:serviceaccount:dev:*"},
			broad:     "spans more than one namespace (ci, dev)",
		},
		{
			name: "a path root within a trust domain", subject: "spiffe://td/ns/*/sa/api", asserts: []string{"spiffe://td/ns/prod/*"},
			effective: []string{"spiffe://td/ns/*/sa/api within spiffe://td/ns/prod/*"},
		},
		{
			name: "not a path the upstream asserts", subject: "spiffe://td/ns/*/sa/api", asserts: []string{"spiffe://td/ns/a/b/sa/api"}, never: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var subjects map[string][]string
			if tt.asserts != nil {
				subjects = map[string][]string{"u": tt.asserts}
			}
			rv := reviewV2Of(t, tt.subject, "", subjects, nil)
			if len(rv.Upstreams) != 1 {
				t.Fatalf("upstreams %+v", rv.Upstreams)
			}
			u := rv.Upstreams[0]
			unreachable := findingsOf(rv, policy.FindingUnreachable)
			if tt.never {
				if len(u.Subjects) != 0 || len(u.NeverAsserted) != 1 || len(unreachable) != 1 {
					t.Fatalf("granted: %+v, findings %+v", u, rv.Findings)
				}
				return
			}
			if len(u.Subjects) != 1 || len(u.NeverAsserted) != 0 || len(unreachable) != 0 {
				t.Fatalf("not granted once: %+v, findings %+v", u, rv.Findings)
			}
			s := u.Subjects[0]
			if !slices.Equal(s.Effective, tt.effective) {
				t.Errorf("effective %q, want %q", s.Effective, tt.effective)
			}
			fs := findingsOf(rv, policy.FindingBroad)
			switch {
			case tt.broad == "" && (len(fs) > 0 || s.Breadth != ""):
				t.Errorf("broad: %q, %+v", s.Breadth, fs)
			case tt.broad != "" && (len(fs) != 1 || !strings.Contains(fs[0].Message, tt.broad) || !strings.Contains(s.Breadth, tt.broad)):
				t.Errorf("breadth %q, findings %+v, want both saying %q", s.Breadth, fs, tt.broad)
			}
		})
	}
}

// An attribute pattern of a version 2 file is read in its mode against the
// upstream's attribute_bounds (version 1 patterns).
func TestReviewVersion2AttributeBounds(t *testing.T) {
	limits := map[string]policy.UpstreamLimits{"u": {AttributeBounds: map[string][]string{"team": {"a/b/*"}}}}
	// "a/*" stays within one segment: it matches no value under a/b/.
	rv := reviewV2Of(t, "x:*", "    attributes: {team: \"a/*\"}\n", nil, limits)
	if u := rv.Upstreams[0]; len(u.Subjects) != 0 || len(u.NeverAsserted) != 1 || !strings.Contains(u.NeverAsserted[0], `attribute team="a/*" is outside attribute_bounds "a/b/*"`) {
		t.Fatalf("access %+v", u)
	}
	// "a/**" crosses: a/b/c is within both.
	rv = reviewV2Of(t, "x:*", "    attributes: {team: \"a/**\"}\n", nil, limits)
	if u := rv.Upstreams[0]; len(u.Subjects) != 1 || len(u.NeverAsserted) != 0 || len(findingsOf(rv, policy.FindingUnreachable)) != 0 {
		t.Fatalf("access %+v", u)
	}
}

// The same pattern text in a version 1 and a version 2 file is one access entry
// where it means the same (no lone '*') and two where it does not, the version 1
// one first, each with its own rules and breadth.
func TestReviewVersionsNotMerged(t *testing.T) {
	rule := func(name string) string {
		return "rules:\n  - name: " + name + "\n    effect: allow\n    owner: o\n    upstreams: [u]\n" +
			"    subjects: [\"repo:acme/*\", \"repo:acme/**\", \"repo:acme/app\"]\n    audiences: [\"https://app.internal\"]\n    max_ttl: 10m\n"
	}
	p, err := policy.ParseFiles(
		policy.File{Name: "v1.yaml", Data: []byte(rule("old"))},
		policy.File{Name: "v2.yaml", Data: []byte("version: 2\n" + rule("new"))},
	)
	if err != nil {
		t.Fatal(err)
	}
	rv := p.ReviewWith(time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC), policy.ReviewOptions{UpstreamSubjects: map[string][]string{"u": {"repo:acme/**"}}})
	var got []string
	for _, s := range rv.Upstreams[0].Subjects {
		got = append(got, s.Subject+" "+strings.Join(s.Rules, ",")+" effective="+strings.Join(s.Effective, ","))
	}
	want := []string{
		"repo:acme/* old effective=repo:acme/**", // version 1: '*' crosses, as "**" does
		"repo:acme/* new effective=",             // version 2: one segment
		"repo:acme/** old,new effective=",
		"repo:acme/app old,new effective=",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("subjects\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var text bytes.Buffer
	if err := rv.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"    repo:acme/* (version 1)\n", "    repo:acme/* (version 2)\n", "    repo:acme/**\n", "    repo:acme/app\n"} {
		if !strings.Contains(text.String(), line) {
			t.Errorf("text lacks %q:\n%s", line, text.String())
		}
	}
}
