package policy_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/policy"
)

// githubRule is a GitHub Actions rule meant for pushes to the main branch of any
// repository of acme, written the way AWS trust policies invite.
const githubRule = `rules:
  - name: acme-deploy
    effect: allow
    upstreams: [github]
    subjects: ["repo:acme/*"]
    audiences: [https://deploy.internal]
    attributes: {ref: "refs/heads/*"}
    clients: ["ci/*"]
`

func versionDecide(t *testing.T, p *policy.Policy, subject, ref, client string) policy.Outcome {
	t.Helper()
	w := &attest.Workload{Upstream: "github", Subject: subject, ID: subject, Attributes: map[string]string{"ref": ref}}
	return p.Decide(policy.Request{Workload: w, Audiences: []string{"https://deploy.internal"}, ClientID: client, ClientAuthenticated: true, Now: time.Unix(1e9, 0)}).Outcome
}

func TestVersionSegments(t *testing.T) {
	v1, err := policy.Parse("v1.yaml", []byte(githubRule))
	if err != nil {
		t.Fatal(err)
	}
	v2, err := policy.Parse("v2.yaml", []byte("version: 2\n"+githubRule))
	if err != nil {
		t.Fatal(err)
	}
	v2any, err := policy.Parse("v2any.yaml", []byte("version: 2\n"+strings.NewReplacer(`"repo:acme/*"`, `"repo:acme/**"`, `"refs/heads/*"`, `"refs/heads/**"`, `"ci/*"`, `"ci/**"`).Replace(githubRule)))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		subject, ref, client string
		v1, v2, v2any        policy.Outcome
	}{
		{"repo:acme/app", "refs/heads/main", "ci/a", policy.Allow, policy.Allow, policy.Allow},
		// The trap: a pull_request (or environment) subject of the same repository.
		{"repo:acme/app:pull_request", "refs/heads/main", "ci/a", policy.Allow, policy.DenyNoRule, policy.Allow},
		{"repo:acme/app:environment:prod", "refs/heads/main", "ci/a", policy.Allow, policy.DenyNoRule, policy.Allow},
		// Attribute patterns follow the file's version.
		{"repo:acme/app", "refs/heads/feature/x", "ci/a", policy.Allow, policy.DenyNoRule, policy.Allow},
		// So do client patterns.
		{"repo:acme/app", "refs/heads/main", "ci/a/b", policy.Allow, policy.DenyClient, policy.Allow},
		{"repo:other/app", "refs/heads/main", "ci/a", policy.DenyNoRule, policy.DenyNoRule, policy.DenyNoRule},
	}
	for _, tt := range tests {
		for _, c := range []struct {
			name string
			p    *policy.Policy
			want policy.Outcome
		}{{"v1", v1, tt.v1}, {"v2", v2, tt.v2}, {"v2 **", v2any, tt.v2any}} {
			if got := versionDecide(t, c.p, tt.subject, tt.ref, tt.client); got != c.want {
				t.Errorf("%s: subject %q ref %q client %q: %v, want %v", c.name, tt.subject, tt.ref, tt.client, got, c.want)
			}
		}
	}

	// Version 1 files are warned about their crossing patterns, once per file;
	// version 2 files are not.
	w := v1.Warnings()
	if len(w) != 1 || !strings.Contains(w[0].String(), `3 pattern(s)`) || !strings.Contains(w[0].String(), `line 5: "repo:acme/*"`) ||
		!strings.Contains(w[0].String(), "add `version: 2`") {
		t.Errorf("v1 warnings: %v", w)
	}
	if w := v2.Warnings(); len(w) != 0 {
		t.Errorf("v2 warnings: %v", w)
	}
	// So does the review.
	count := func(p *policy.Policy) int {
		n := 0
		for _, f := range p.Review(time.Unix(1e9, 0), nil).Findings {
			if f.Kind == policy.FindingCrossesSegments {
				n++
				if !strings.Contains(f.Message, `"repo:acme/*", "refs/heads/*", "ci/*"`) {
					t.Errorf("finding: %s", f.Message)
				}
			}
		}
		return n
	}
	if n := count(v1); n != 1 {
		t.Errorf("v1 review: %d crosses_segments findings, want 1", n)
	}
	if n := count(v2); n != 0 {
		t.Errorf("v2 review: %d crosses_segments findings, want 0", n)
	}
}

func TestVersionPerFile(t *testing.T) {
	// Each file keeps its own version: a legacy file next to a version 2 one.
	second := strings.NewReplacer("acme-deploy", "acme-deploy-2", "acme/*", "beta/*").Replace(githubRule)
	p, err := policy.ParseFiles(
		policy.File{Name: "old.yaml", Data: []byte(githubRule)},
		policy.File{Name: "new.yaml", Data: []byte("rules:\n" + second[len("rules:\n"):] + "version: 2\n")},
	)
	if err != nil {
		t.Fatal(err)
	}
	if got := versionDecide(t, p, "repo:acme/app:pull_request", "refs/heads/main", "ci/a"); got != policy.Allow {
		t.Errorf("old file: %v", got)
	}
	// The version key is read first wherever it is written in the file.
	if got := versionDecide(t, p, "repo:beta/app:pull_request", "refs/heads/main", "ci/a"); got != policy.DenyNoRule {
		t.Errorf("new file: %v", got)
	}
	if got := versionDecide(t, p, "repo:beta/app", "refs/heads/main", "ci/a"); got != policy.Allow {
		t.Errorf("new file: %v", got)
	}
}

func TestVersionErrors(t *testing.T) {
	for _, v := range []string{"3", "0", `"2"`, "2.0", "[2]", "segments"} {
		_, err := policy.Parse("p.yaml", []byte("version: "+v+"\n"+githubRule))
		var le *policy.LoadError
		if !errors.As(err, &le) || len(le.Problems) != 1 || le.Problems[0].String() != "p.yaml:1: version: must be 1 or 2 (a number; 1 is the default)" {
			t.Errorf("version %s: %v", v, err)
		}
	}
	if _, err := policy.Parse("p.yaml", []byte("version: 1\n"+githubRule)); err != nil {
		t.Errorf("version 1: %v", err)
	}
}

func TestDigest(t *testing.T) {
	a := policy.File{Name: "a.yaml", Data: []byte(githubRule)}
	b := policy.File{Name: "b.yaml", Data: []byte("rules: []\n")}
	p, err := policy.ParseFiles(a, b)
	if err != nil {
		t.Fatal(err)
	}
	// sha256sum a.yaml b.yaml | sha256sum
	sum := func(data []byte) string { s := sha256.Sum256(data); return hex.EncodeToString(s[:]) }
	listing := sum(a.Data) + "  a.yaml\n" + sum(b.Data) + "  b.yaml\n"
	if got, want := p.Digest(), "sha256:"+sum([]byte(listing)); got != want {
		t.Errorf("Digest() = %s, want %s", got, want)
	}
	if f := p.Files(); len(f) != 2 || f[0] != (policy.FileDigest{Name: "a.yaml", SHA256: sum(a.Data)}) || f[1].Name != "b.yaml" {
		t.Errorf("Files() = %v", f)
	}
	// One byte changes it; the same content does not.
	q, _ := policy.ParseFiles(a, policy.File{Name: "b.yaml", Data: []byte("rules: [] \n")})
	r, _ := policy.ParseFiles(a, b)
	if q.Digest() == p.Digest() || r.Digest() != p.Digest() {
		t.Error("the digest does not follow the content")
	}
}
