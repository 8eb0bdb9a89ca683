package policy_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/policy"
)

const (
	ledger  = "https://ledger.internal"
	audit   = "https://audit.internal"
	billing = "https://billing.internal"
	evil    = "https://evil.example"
)

// testPolicy exercises every semantic of Decide; each rule's comment says which.
const testPolicy = `
rules:
  # Two audiences, two scopes, a cap.
  - name: payments-ledger
    effect: allow
    upstreams: [cluster-a]
    subjects: ["system:serviceaccount:payments:*"]
    audiences: ["https://ledger.internal", "https://audit.internal"]
    scopes: [ledger.read, ledger.write]
    max_ttl: 10m
  # Same workloads, another audience: never combined with the rule above.
  - name: payments-billing
    effect: allow
    upstreams: [cluster-a]
    subjects: ["system:serviceaccount:payments:*"]
    audiences: ["https://billing.internal"]
    scopes: [billing.read]
    max_ttl: 2m
  # A narrower subject with an extra scope and a shorter cap.
  - name: payments-ledger-admin
    effect: allow
    upstreams: [cluster-a]
    subjects: ["system:serviceaccount:payments:admin"]
    audiences: ["https://ledger.internal"]
    scopes: [ledger.admin]
    max_ttl: 1m
  # Written after the allow rules, and still wins: any target, any scope.
  - name: block-debug
    effect: deny
    upstreams: [cluster-a, cluster-b]
    subjects: ["*:debug-*"]
  # A deny limited to one audience and one scope.
  - name: no-ledger-write-from-b
    effect: deny
    upstreams: [cluster-b]
    subjects: ["*"]
    audiences: ["https://ledger.internal"]
    scopes: [ledger.write]
  - name: b-reporter
    effect: allow
    upstreams: [cluster-b]
    subjects: ["spiffe://b.example/ns/*/sa/reporter"]
    audiences: ["https://ledger.internal"]
    scopes: [ledger.read, ledger.write]
  # No max_ttl, no scopes.
  - name: b-metrics
    effect: allow
    upstreams: [cluster-b]
    subjects: ["spiffe://b.example/ns/monitoring/sa/*"]
    audiences: ["https://metrics.internal"]
  # A later rule that would also grant ledger.read: the first one in file order decides.
  - name: payments-ledger-read-long
    effect: allow
    upstreams: [cluster-a]
    subjects: ["system:serviceaccount:payments:*"]
    audiences: ["https://ledger.internal"]
    scopes: [ledger.read]
    max_ttl: 1h
`

func mustParse(t testing.TB, src string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse("test.yaml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

func wl(upstream, subject string) *attest.Workload {
	return &attest.Workload{Upstream: upstream, Subject: subject}
}

// testNow is the time of every test request.
var testNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// at sets the request's time to testNow unless it has one.
func at(req policy.Request) policy.Request {
	if req.Now.IsZero() {
		req.Now = testNow
	}
	return req
}

func TestDecide(t *testing.T) {
	p := mustParse(t, testPolicy)
	api := wl("cluster-a", "system:serviceaccount:payments:api")
	admin := wl("cluster-a", "system:serviceaccount:payments:admin")
	reporter := wl("cluster-b", "spiffe://b.example/ns/finance/sa/reporter")

	tests := []struct {
		name string
		req  policy.Request
		want policy.Decision
		// reason, when set, must appear in the Reason (the full Reason is only
		// checked to be a non-empty sentence).
		reason string
	}{
		{
			name: "allow",
			req:  policy.Request{Workload: api, Audiences: []string{ledger}, Scopes: []string{"ledger.read"}},
			want: policy.Decision{Outcome: policy.Allow, Rule: "payments-ledger", Audiences: []string{ledger}, Scopes: []string{"ledger.read"}, MaxTTL: 10 * time.Minute},
		},
		{
			name: "allow without scopes grants no scopes",
			req:  policy.Request{Workload: api, Audiences: []string{ledger}},
			want: policy.Decision{Outcome: policy.Allow, Rule: "payments-ledger", Audiences: []string{ledger}, MaxTTL: 10 * time.Minute},
		},
		{
			name: "allow grants exactly the request, not the whole rule",
			req:  policy.Request{Workload: api, Audiences: []string{audit}, Scopes: []string{"ledger.write"}},
			want: policy.Decision{Outcome: policy.Allow, Rule: "payments-ledger", Audiences: []string{audit}, Scopes: []string{"ledger.write"}, MaxTTL: 10 * time.Minute},
		},
		{
			name: "two audiences from one rule",
			req:  policy.Request{Workload: api, Audiences: []string{audit, ledger}, Scopes: []string{"ledger.write", "ledger.read"}},
			want: policy.Decision{Outcome: policy.Allow, Rule: "payments-ledger", Audiences: []string{audit, ledger}, Scopes: []string{"ledger.write", "ledger.read"}, MaxTTL: 10 * time.Minute},
		},
		{
			name: "resources follow audiences",
			req:  policy.Request{Workload: api, Audiences: []string{audit}, Resources: []string{ledger}},
			want: policy.Decision{Outcome: policy.Allow, Rule: "payments-ledger", Audiences: []string{audit, ledger}, MaxTTL: 10 * time.Minute},
		},
		{
			name: "resources alone",
			req:  policy.Request{Workload: api, Resources: []string{ledger}},
			want: policy.Decision{Outcome: policy.Allow, Rule: "payments-ledger", Audiences: []string{ledger}, MaxTTL: 10 * time.Minute},
		},
		{
			name: "repeated targets and scopes are granted once",
			req:  policy.Request{Workload: api, Audiences: []string{ledger, ledger}, Resources: []string{audit, ledger}, Scopes: []string{"ledger.read", "ledger.read"}},
			want: policy.Decision{Outcome: policy.Allow, Rule: "payments-ledger", Audiences: []string{ledger, audit}, Scopes: []string{"ledger.read"}, MaxTTL: 10 * time.Minute},
		},
		{
			name: "max_ttl from the deciding rule",
			req:  policy.Request{Workload: api, Audiences: []string{billing}, Scopes: []string{"billing.read"}},
			want: policy.Decision{Outcome: policy.Allow, Rule: "payments-billing", Audiences: []string{billing}, Scopes: []string{"billing.read"}, MaxTTL: 2 * time.Minute},
		},
		{
			name: "max_ttl from the rule granting the scope, not the first matching one",
			req:  policy.Request{Workload: admin, Audiences: []string{ledger}, Scopes: []string{"ledger.admin"}},
			want: policy.Decision{Outcome: policy.Allow, Rule: "payments-ledger-admin", Audiences: []string{ledger}, Scopes: []string{"ledger.admin"}, MaxTTL: time.Minute},
		},
		{
			name: "no max_ttl means zero",
			req:  policy.Request{Workload: wl("cluster-b", "spiffe://b.example/ns/monitoring/sa/prom"), Audiences: []string{"https://metrics.internal"}},
			want: policy.Decision{Outcome: policy.Allow, Rule: "b-metrics", Audiences: []string{"https://metrics.internal"}},
		},
		{
			name:   "one refused audience refuses the whole request",
			req:    policy.Request{Workload: api, Audiences: []string{ledger, evil}, Scopes: []string{"ledger.read"}},
			want:   policy.Decision{Outcome: policy.DenyTarget},
			reason: `no rule grants target "https://evil.example" to this workload`,
		},
		{
			name:   "one refused resource refuses the whole request",
			req:    policy.Request{Workload: api, Audiences: []string{ledger}, Resources: []string{evil}},
			want:   policy.Decision{Outcome: policy.DenyTarget},
			reason: `"https://evil.example"`,
		},
		{
			name:   "targets of different rules are not combined",
			req:    policy.Request{Workload: api, Audiences: []string{ledger, billing}},
			want:   policy.Decision{Outcome: policy.DenyTarget},
			reason: `no single rule grants every requested target (rule "payments-ledger" refuses target "https://billing.internal")`,
		},
		{
			name:   "scope outside the grant",
			req:    policy.Request{Workload: api, Audiences: []string{ledger}, Scopes: []string{"ledger.read", "ledger.delete"}},
			want:   policy.Decision{Outcome: policy.DenyScope},
			reason: `no rule granting the requested targets grants scope "ledger.delete"`,
		},
		{
			name:   "scope of another audience's rule",
			req:    policy.Request{Workload: api, Audiences: []string{ledger}, Scopes: []string{"billing.read"}},
			want:   policy.Decision{Outcome: policy.DenyScope},
			reason: `"billing.read"`,
		},
		{
			name:   "scopes of different rules are not combined",
			req:    policy.Request{Workload: admin, Audiences: []string{ledger}, Scopes: []string{"ledger.read", "ledger.admin"}},
			want:   policy.Decision{Outcome: policy.DenyScope},
			reason: `no single rule grants the requested targets with every requested scope (rule "payments-ledger" refuses scope "ledger.admin")`,
		},
		{
			name:   "narrow rule's scope not granted to other subjects",
			req:    policy.Request{Workload: api, Audiences: []string{ledger}, Scopes: []string{"ledger.admin"}},
			want:   policy.Decision{Outcome: policy.DenyScope},
			reason: `"ledger.admin"`,
		},
		{
			name:   "deny beats allow",
			req:    policy.Request{Workload: wl("cluster-a", "system:serviceaccount:payments:debug-shell"), Audiences: []string{ledger}, Scopes: []string{"ledger.read"}},
			want:   policy.Decision{Outcome: policy.DenyRule, Rule: "block-debug"},
			reason: `deny rule "block-debug" refuses upstream "cluster-a" subject "system:serviceaccount:payments:debug-shell"`,
		},
		{
			name: "deny without audiences or scopes applies to any request",
			req:  policy.Request{Workload: wl("cluster-b", "node:debug-1"), Audiences: []string{"https://anything"}, Scopes: []string{"anything"}},
			want: policy.Decision{Outcome: policy.DenyRule, Rule: "block-debug"},
		},
		{
			name:   "deny with audience and scope applies when both are requested",
			req:    policy.Request{Workload: reporter, Audiences: []string{ledger}, Scopes: []string{"ledger.read", "ledger.write"}},
			want:   policy.Decision{Outcome: policy.DenyRule, Rule: "no-ledger-write-from-b"},
			reason: `for target "https://ledger.internal" with scope "ledger.write"`,
		},
		{
			name: "deny with a scope does not apply to other scopes",
			req:  policy.Request{Workload: reporter, Audiences: []string{ledger}, Scopes: []string{"ledger.read"}},
			want: policy.Decision{Outcome: policy.Allow, Rule: "b-reporter", Audiences: []string{ledger}, Scopes: []string{"ledger.read"}},
		},
		{
			name: "deny with a scope does not apply to a request without scopes",
			req:  policy.Request{Workload: reporter, Audiences: []string{ledger}},
			want: policy.Decision{Outcome: policy.Allow, Rule: "b-reporter", Audiences: []string{ledger}},
		},
		{
			name:   "default deny: unknown subject",
			req:    policy.Request{Workload: wl("cluster-a", "system:serviceaccount:web:frontend"), Audiences: []string{ledger}},
			want:   policy.Decision{Outcome: policy.DenyNoRule},
			reason: `no rule matches upstream "cluster-a" subject "system:serviceaccount:web:frontend"`,
		},
		{
			name:   "default deny: unknown upstream",
			req:    policy.Request{Workload: wl("cluster-z", "system:serviceaccount:payments:api"), Audiences: []string{ledger}},
			want:   policy.Decision{Outcome: policy.DenyNoRule},
			reason: `no rule matches upstream "cluster-z"`,
		},
		{
			name: "a subject matched under another upstream",
			req:  policy.Request{Workload: wl("cluster-b", "system:serviceaccount:payments:api"), Audiences: []string{ledger}},
			want: policy.Decision{Outcome: policy.DenyNoRule},
		},
		{
			name: "subjects are case-sensitive",
			req:  policy.Request{Workload: wl("cluster-a", "system:serviceaccount:Payments:api"), Audiences: []string{ledger}},
			want: policy.Decision{Outcome: policy.DenyNoRule},
		},
		{
			name: "upstreams are case-sensitive",
			req:  policy.Request{Workload: wl("Cluster-A", "system:serviceaccount:payments:api"), Audiences: []string{ledger}},
			want: policy.Decision{Outcome: policy.DenyNoRule},
		},
		{
			name: "audiences are case-sensitive",
			req:  policy.Request{Workload: api, Audiences: []string{"https://Ledger.internal"}},
			want: policy.Decision{Outcome: policy.DenyTarget},
		},
		{
			name:   "no target",
			req:    policy.Request{Workload: api, Scopes: []string{"ledger.read"}},
			want:   policy.Decision{Outcome: policy.DenyTarget},
			reason: "no audience or resource requested",
		},
		{
			name: "no target is refused before deny rules",
			req:  policy.Request{Workload: wl("cluster-a", "x:debug-y")},
			want: policy.Decision{Outcome: policy.DenyTarget},
		},
		{
			name: "empty target",
			req:  policy.Request{Workload: api, Audiences: []string{""}},
			want: policy.Decision{Outcome: policy.DenyTarget},
		},
		{
			name: "no workload",
			req:  policy.Request{Audiences: []string{ledger}},
			want: policy.Decision{Outcome: policy.DenyNoRule},
		},
		{
			name:   "too many targets",
			req:    policy.Request{Workload: api, Audiences: slices.Repeat([]string{ledger}, policy.MaxTargets+1)},
			want:   policy.Decision{Outcome: policy.DenyTarget},
			reason: "more than the 100 allowed",
		},
		{
			name: "too many scopes",
			req:  policy.Request{Workload: api, Audiences: []string{ledger}, Scopes: slices.Repeat([]string{"ledger.read"}, policy.MaxScopes+1)},
			want: policy.Decision{Outcome: policy.DenyScope},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := p.Decide(at(tt.req))
			checkDecision(t, got, tt.want, tt.reason)
		})
	}
}

func checkDecision(t *testing.T, got, want policy.Decision, reason string) {
	t.Helper()
	if got.Outcome != want.Outcome || got.Rule != want.Rule || got.MaxTTL != want.MaxTTL ||
		!slices.Equal(got.Audiences, want.Audiences) || !slices.Equal(got.Scopes, want.Scopes) {
		t.Errorf("got  %s rule=%q aud=%q scopes=%q ttl=%v (%s)\nwant %s rule=%q aud=%q scopes=%q ttl=%v",
			got.Outcome, got.Rule, got.Audiences, got.Scopes, got.MaxTTL, got.Reason,
			want.Outcome, want.Rule, want.Audiences, want.Scopes, want.MaxTTL)
	}
	if got.Allowed() != (want.Outcome == policy.Allow) {
		t.Errorf("Allowed() = %v", got.Allowed())
	}
	if got.Reason == "" || strings.Contains(got.Reason, "\n") {
		t.Errorf("Reason %q is not one sentence", got.Reason)
	}
	if reason != "" && !strings.Contains(got.Reason, reason) {
		t.Errorf("Reason %q does not contain %q", got.Reason, reason)
	}
	if !got.Allowed() && (got.Audiences != nil || got.Scopes != nil || got.MaxTTL != 0) {
		t.Errorf("a refusal grants something: %+v", got)
	}
}

func TestDecideEmptyPolicy(t *testing.T) {
	p := mustParse(t, "# nothing yet\n")
	d := p.Decide(at(policy.Request{Workload: wl("a", "b"), Audiences: []string{ledger}}))
	checkDecision(t, d, policy.Decision{Outcome: policy.DenyNoRule}, `no rule matches upstream "a" subject "b"`)

	var nilPolicy *policy.Policy
	d = nilPolicy.Decide(at(policy.Request{Workload: wl("a", "b"), Audiences: []string{ledger}}))
	checkDecision(t, d, policy.Decision{Outcome: policy.DenyNoRule}, "no policy")
}

// A Reason quotes what the caller controls, so it cannot forge log lines.
func TestDecideReasonQuotesInput(t *testing.T) {
	p := mustParse(t, testPolicy)
	d := p.Decide(at(policy.Request{Workload: wl("cluster-a", "evil\nlevel=INFO msg=granted"), Audiences: []string{ledger}}))
	if strings.Contains(d.Reason, "\n") {
		t.Errorf("Reason %q holds a raw newline", d.Reason)
	}
}

func TestDecideDoesNotAllocateOnAllow(t *testing.T) {
	p := mustParse(t, testPolicy)
	req := policy.Request{
		Workload:  wl("cluster-a", "system:serviceaccount:payments:api"),
		Audiences: []string{ledger, audit},
		Scopes:    []string{"ledger.read", "ledger.write"},
		Now:       testNow,
	}
	allocs := testing.AllocsPerRun(100, func() {
		if !p.Decide(req).Allowed() {
			t.Fatal("refused")
		}
	})
	if allocs != 0 {
		t.Errorf("Decide allocates %v times on the allow path", allocs)
	}
}

// The granted slices may share memory with the request, but appending to them must
// never write into the request.
func TestDecideGrantDoesNotAliasAppend(t *testing.T) {
	p := mustParse(t, testPolicy)
	auds := make([]string, 1, 4)
	auds[0] = ledger
	d := p.Decide(at(policy.Request{Workload: wl("cluster-a", "system:serviceaccount:payments:api"), Audiences: auds}))
	if !d.Allowed() {
		t.Fatal(d.Reason)
	}
	_ = append(d.Audiences, evil)
	if got := auds[:2][1]; got != "" {
		t.Errorf("append to the decision wrote %q into the request", got)
	}
}

func TestDecideConcurrent(t *testing.T) {
	p := mustParse(t, testPolicy)
	done := make(chan struct{})
	for i := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for j := range 200 {
				req := policy.Request{
					Workload:  wl("cluster-a", fmt.Sprintf("system:serviceaccount:payments:w%d-%d", i, j)),
					Audiences: []string{ledger},
					Resources: []string{audit},
					Scopes:    []string{"ledger.read"},
					Now:       testNow,
				}
				if d := p.Decide(req); !d.Allowed() {
					t.Errorf("refused: %s", d.Reason)
					return
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
}

func TestOutcomeString(t *testing.T) {
	for o, want := range map[policy.Outcome]string{
		policy.Allow: "allow", policy.DenyNoRule: "deny_no_rule", policy.DenyRule: "deny_rule",
		policy.DenyTarget: "deny_target", policy.DenyScope: "deny_scope", policy.Outcome(99): "unknown",
	} {
		if got := o.String(); got != want {
			t.Errorf("%d: got %q, want %q", int(o), got, want)
		}
	}
}

// benchPolicy writes n rules over 10 upstreams, 1,000 rules per file (a file holds
// at most 1 MiB), each with its own subject pattern and audience; every 10th rule
// of an upstream is a deny rule for debug shells, and every third allow rule has a
// condition.
func benchPolicy(n int) []policy.File {
	var files []policy.File
	var b strings.Builder
	for i := range n {
		if i%1000 == 0 {
			b.WriteString("rules:\n")
		}
		up := i % 10
		switch {
		case benchDeny(i):
			fmt.Fprintf(&b, "  - {name: r%d, effect: deny, upstreams: [up-%d], subjects: [\"system:serviceaccount:ns%d:debug-*\"]}\n", i, up, i)
		case benchWhen(i):
			fmt.Fprintf(&b, "  - {name: r%d, effect: allow, upstreams: [up-%d], subjects: [\"system:serviceaccount:ns%d:*\"], audiences: [\"https://svc%d.internal\"], scopes: [read, write], max_ttl: 5m, when: 'workload.attributes[\"env\"] == \"prod\" && !has(request.actor)'}\n", i, up, i, i)
		default:
			fmt.Fprintf(&b, "  - {name: r%d, effect: allow, upstreams: [up-%d], subjects: [\"system:serviceaccount:ns%d:*\"], audiences: [\"https://svc%d.internal\"], scopes: [read, write], max_ttl: 5m}\n", i, up, i, i)
		}
		if i%1000 == 999 || i == n-1 {
			files = append(files, policy.File{Name: fmt.Sprintf("bench-%d.yaml", len(files)), Data: []byte(b.String())})
			b.Reset()
		}
	}
	return files
}

func benchDeny(i int) bool { return i/10%10 == 9 }
func benchWhen(i int) bool { return !benchDeny(i) && i%3 == 0 }

// benchLast is the last allow rule of the policy, with a condition or without.
func benchLast(n int, when bool) int {
	for i := n - 1; i >= 0; i-- {
		if !benchDeny(i) && benchWhen(i) == when {
			return i
		}
	}
	panic("no such rule")
}

func BenchmarkDecide(b *testing.B) {
	for _, n := range []int{10, 1_000, 10_000} {
		p, err := policy.ParseFiles(benchPolicy(n)...)
		if err != nil {
			b.Fatal(err)
		}
		request := func(i int) policy.Request {
			w := wl(fmt.Sprintf("up-%d", i%10), fmt.Sprintf("system:serviceaccount:ns%d:api", i))
			w.Attributes = map[string]string{"env": "prod"}
			return policy.Request{
				Workload:  w,
				Audiences: []string{fmt.Sprintf("https://svc%d.internal", i)},
				Scopes:    []string{"read"},
				Now:       testNow,
			}
		}
		// The last allow rules of the policy: with a linear scan, every rule of
		// their upstream would be looked at before they grant.
		allow, allowWhen := request(benchLast(n, false)), request(benchLast(n, true))
		for _, req := range []policy.Request{allow, allowWhen} {
			if d := p.Decide(req); !d.Allowed() {
				b.Fatalf("%d rules: %s", n, d.Reason)
			}
		}
		b.Run(fmt.Sprintf("rules=%d/allow-last", n), func(b *testing.B) {
			b.ReportAllocs()
			medianLoop(b, func() { p.Decide(allow) })
		})
		b.Run(fmt.Sprintf("rules=%d/allow-when", n), func(b *testing.B) {
			b.ReportAllocs()
			medianLoop(b, func() { p.Decide(allowWhen) })
		})
		noRule := allow
		noRule.Workload = wl("up-8", "system:serviceaccount:nobody:api")
		b.Run(fmt.Sprintf("rules=%d/deny-no-rule", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p.Decide(noRule)
			}
		})
	}
}

// medianLoop runs f b.N times, timing each call, and reports the median
// (p50-ns/op) beside the mean. Timing each call adds the clock's cost (tens of
// nanoseconds) to the median.
func medianLoop(b *testing.B, f func()) {
	b.Helper()
	var samples []time.Duration
	for b.Loop() {
		start := time.Now()
		f()
		samples = append(samples, time.Since(start))
	}
	if len(samples) > 0 {
		slices.Sort(samples)
		b.ReportMetric(float64(samples[len(samples)/2].Nanoseconds()), "p50-ns/op")
	}
}

// conditionPolicy is n allow rules that share upstream, subject pattern and
// audience and differ only by their condition: one per repository, as a GitHub
// Actions policy with a rule per repository is written.
func conditionPolicy(n int, form string) []policy.File {
	var files []policy.File
	var b strings.Builder
	for i := range n {
		if b.Len() == 0 {
			b.WriteString("version: 2\nrules:\n")
		}
		var when string
		switch form {
		case "claim":
			when = fmt.Sprintf(`workload.claims.repository == "acme/app%d" && workload.claims.ref == "refs/heads/main"`, i)
		case "attribute-in":
			when = fmt.Sprintf(`workload.attributes["repository"] in ["acme/app%d", "acme/app%d-old"]`, i, i)
		case "unindexed":
			// No leading equality term: every rule's condition runs.
			when = fmt.Sprintf(`workload.claims.ref.startsWith("refs/") && workload.claims.repository == "acme/app%d"`, i)
		}
		fmt.Fprintf(&b, "  - {name: repo%d, effect: allow, upstreams: [github], subjects: [\"repo:acme/*:ref:refs/heads/main\"], audiences: [\"https://deploy.internal\"], when: '%s'}\n", i, when)
		if i%1000 == 999 || i == n-1 {
			files = append(files, policy.File{Name: fmt.Sprintf("cond-%d.yaml", len(files)), Data: []byte(b.String())})
			b.Reset()
		}
	}
	return files
}

// BenchmarkDecideConditions: n rules sharing subject and audience, differing only
// by `when`; the request is granted by the last one. Conditions with a leading
// equality term are indexed, so the cost does not grow with n.
func BenchmarkDecideConditions(b *testing.B) {
	for _, form := range []string{"claim", "attribute-in", "unindexed"} {
		for _, n := range []int{10, 1_000, 10_000} {
			if form == "unindexed" && n > 1_000 {
				continue // linear: the contrast is clear at 1,000
			}
			p, err := policy.ParseFiles(conditionPolicy(n, form)...)
			if err != nil {
				b.Fatal(err)
			}
			repo := fmt.Sprintf("acme/app%d", n-1)
			w := wl("github", "repo:"+repo+":ref:refs/heads/main")
			w.Claims = map[string]any{"repository": repo, "ref": "refs/heads/main"}
			w.Attributes = map[string]string{"repository": repo}
			req := policy.Request{Workload: w, Audiences: []string{"https://deploy.internal"}, Now: testNow}
			if d := p.Decide(req); !d.Allowed() || d.Rule != fmt.Sprintf("repo%d", n-1) {
				b.Fatalf("%s %d: %v %s", form, n, d.Outcome, d.Reason)
			}
			b.Run(fmt.Sprintf("%s/rules=%d", form, n), func(b *testing.B) {
				b.ReportAllocs()
				medianLoop(b, func() { p.Decide(req) })
			})
			if form == "claim" {
				// A repository no rule names: the refusal looks at every rule of
				// the subject to name the nearest (without running conditions the
				// terms settle), so it grows with n.
				other := *w
				other.Claims = map[string]any{"repository": "acme/unknown", "ref": "refs/heads/main"}
				refused := req
				refused.Workload = &other
				if d := p.Decide(refused); d.Allowed() {
					b.Fatal("unknown repository allowed")
				}
				b.Run(fmt.Sprintf("%s/rules=%d/refused", form, n), func(b *testing.B) {
					b.ReportAllocs()
					medianLoop(b, func() { p.Decide(refused) })
				})
			}
		}
	}
}
