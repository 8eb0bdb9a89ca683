package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/config"
	"github.com/safeconduct/safeconduct/internal/stsclient"
	"github.com/safeconduct/safeconduct/policy"
)

const policyUsage = `usage: stsctl policy <test|review|status> [flags]

  test     decide one request offline and print the decision and its trace
  review   print who can obtain what, and findings (unused, past review, broad rules)
  status   show a running STS's live policy (digest, load time, last reload; exit 1 if it failed)
`

func cmdPolicy(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if isHelp(args) {
		fmt.Fprint(stdout, policyUsage)
		return nil
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, policyUsage)
		return errUsage
	}
	switch args[0] {
	case "test":
		return cmdPolicyTest(ctx, args[1:], stdin, stdout, stderr)
	case "review":
		return cmdPolicyReview(ctx, args[1:], stdout, stderr)
	case "status":
		return cmdPolicyStatus(ctx, args[1:], stdout, stderr)
	default:
		fmt.Fprint(stderr, policyUsage)
		return errUsage
	}
}

// policySource loads the policy from --policy files, or from the config's
// policy_files, validating upstream names against the config when there is one.
type policySource struct {
	files  listFlag
	config string
}

func (ps *policySource) register(fs *flag.FlagSet) {
	fs.Var(&ps.files, "policy", "policy file (repeatable; default: the config's policy_files)")
	fs.StringVar(&ps.config, "config", "", "STS config: routes tokens to upstreams by iss, maps attributes, checks upstream names")
}

func (ps *policySource) load() (*policy.Policy, *config.Config, error) {
	var cfg *config.Config
	if ps.config != "" {
		var err error
		if cfg, err = config.Load(ps.config); err != nil {
			return nil, nil, err
		}
	}
	files := []string(ps.files)
	if len(files) == 0 {
		if cfg == nil {
			return nil, nil, usagef("missing --policy or --config (the policy to use)")
		}
		for _, f := range cfg.PolicyFiles {
			files = append(files, cfg.Path(f))
		}
	}
	p, err := policy.Load(files...)
	if err != nil {
		return nil, nil, err
	}
	if cfg != nil {
		names := make([]string, len(cfg.Upstreams))
		for i, u := range cfg.Upstreams {
			names[i] = u.Name
		}
		if err := p.ValidateUpstreams(names); err != nil {
			return nil, nil, err
		}
	}
	return p, cfg, nil
}

func cmdPolicyTest(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("stsctl policy test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var ps policySource
	ps.register(fs)
	upstream := fs.String("upstream", "", "upstream name of the subject token (without --config: required; with it: checked)")
	actorUpstream := fs.String("actor-upstream", "", "upstream name of the actor token (as --upstream)")
	subject := fs.String("subject-token", "", "subject token: value, @FILE or - (verified with --config's upstreams; without --config only its claims are read)")
	subjectType := fs.String("subject-token-type", "jwt", "subject token type: jwt, id_token, access_token or a URN")
	actor := fs.String("actor-token", "", "actor token: value, @FILE or -")
	actorType := fs.String("actor-token-type", "jwt", "actor token type (with --actor-token)")
	scope := fs.String("scope", "", "space-separated scopes")
	requested := fs.String("requested-token-type", "access_token", "requested token type")
	clientID := fs.String("client-id", "", "client_id of the request")
	clientAuth := fs.Bool("client-authenticated", false, "the client_id was authenticated (mTLS or private_key_jwt)")
	senderConstrained := fs.Bool("sender-constrained", false, "the request is over mTLS, so the token would be sender-constrained")
	nowFlag := fs.String("now", "", "decide, and judge token times, at this time (RFC 3339; default: now)")
	expect := fs.String("expect", "", "allow or deny: exit 1 unless the decision matches (for policy tests in CI)")
	asJSON := fs.Bool("json", false, "print the decision as JSON (same as --output json)")
	var out outputFlag
	out.registerWith(fs, "table")
	var audiences, resources listFlag
	fs.Var(&audiences, "audience", "requested audience (repeatable)")
	fs.Var(&resources, "resource", "requested resource (repeatable)")
	if err := fs.Parse(args); err != nil {
		return parseErr(err)
	}
	err := need(fs, "subject-token")
	if err == nil && *expect != "" && *expect != "allow" && *expect != "deny" {
		err = usagef("policy test: --expect %q: want allow or deny", *expect)
	}
	if err != nil {
		fmt.Fprintln(stderr, "usage: stsctl policy test --config C [--policy F] --subject-token @FILE --audience A [--scope S] [--actor-token @FILE] [--now T] [--expect allow|deny]")
		fmt.Fprintln(stderr, "       stsctl policy test --policy F --upstream U --subject-token @FILE ... (claims only: nothing is verified)")
		return err
	}
	p, cfg, err := ps.load()
	if err != nil {
		return err
	}
	now := time.Now()
	if *nowFlag != "" {
		if now, err = time.Parse(time.RFC3339, *nowFlag); err != nil {
			return fmt.Errorf("%w: --now: %v", errUsage, err)
		}
	}
	sub := presented{flag: "subject_token", typ: tokenType(*subjectType), upstream: *upstream}
	if sub.raw, err = readToken(*subject, stdin); err != nil {
		return fmt.Errorf("subject token: %w", err)
	}
	var act *presented
	if *actor != "" {
		act = &presented{flag: "actor_token", typ: tokenType(*actorType), upstream: *actorUpstream}
		if act.raw, err = readToken(*actor, stdin); err != nil {
			return fmt.Errorf("actor token: %w", err)
		}
	}
	t := &policyTrial{
		req: policy.Request{
			Audiences: audiences, Resources: resources, Scopes: strings.Fields(*scope),
			RequestedTokenType: tokenType(*requested), ClientID: *clientID, Now: now,
			ClientAuthenticated: *clientAuth, SenderConstrained: *senderConstrained,
		},
	}
	if cfg != nil {
		router, closeAttester, err := config.Attester(ctx, cfg, config.Options{
			Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
			Now:    func() time.Time { return now },
		})
		if err != nil {
			return err
		}
		defer closeAttester()
		t.verified = true
		t.attested = fmt.Sprintf("yes (signature and upstream limits checked with %s at %s)", cfg.File(), now.UTC().Format(time.RFC3339))
		err = t.run(p, sub, act, func(tok presented) (*attest.Workload, error) { return router.Attest(ctx, tok.raw, tok.typ) })
		if err != nil {
			return err
		}
	} else {
		t.attested = "no (claims only; give --config to verify like the server)"
		if err := t.run(p, sub, act, workloadInsecure); err != nil {
			return err
		}
	}
	if *asJSON || out.format == "json" {
		err = printJSON(stdout, t.json())
	} else {
		err = t.print(stdout)
	}
	if err != nil {
		return err
	}
	if (*expect == "allow") != t.allowed() && *expect != "" {
		return fmt.Errorf("expected %s, got %s", *expect, t.outcome())
	}
	return nil
}

// presented is a subject or actor token as the request carries it.
type presented struct {
	flag     string // subject_token or actor_token: the parameter, for reasons
	raw, typ string
	upstream string // --upstream or --actor-upstream
}

// policyTrial is one policy test: the request, and either a refusal before (or
// after) policy, as the server makes them, or policy's decision.
type policyTrial struct {
	req policy.Request
	// verified is set when the tokens went through the config's verifiers;
	// attested says what was verified, for the output.
	verified bool
	attested string
	// refused, when set, is the outcome of a refusal outside policy (the server's
	// attestation or request checks); reason says why.
	refused, reason string
	// decided is set once policy decided d.
	decided bool
	d       policy.Decision
}

// Outcomes of refusals outside policy.
const (
	refusedSubject = "deny_subject_token"
	refusedActor   = "deny_actor_token"
)

// run attests the tokens with attest and applies the server's order and checks
// around policy (issuer.Server's exchange): the subject token, its act chain, the
// actor token, policy, then the lifetime left. attest's refusals become refusals;
// errors are what the server cannot decide either (upstream keys unavailable) and
// usage errors.
func (t *policyTrial) run(p *policy.Policy, sub presented, act *presented, attestFn func(presented) (*attest.Workload, error)) error {
	attestOne := func(tok presented, outcome string) (*attest.Workload, bool, error) {
		wl, err := attestFn(tok)
		switch {
		case errors.Is(err, attest.ErrUnavailable):
			return nil, false, fmt.Errorf("%s: %w (the server answers temporarily_unavailable)", tok.flag, err)
		case errors.Is(err, errUsage):
			return nil, false, err
		case err != nil:
			t.refused, t.reason = outcome, tok.flag+": "+err.Error()
			return nil, false, nil
		case tok.upstream != "" && wl.Upstream != tok.upstream:
			return nil, false, fmt.Errorf("%s: upstream %s attested it, not %s", tok.flag, wl.Upstream, tok.upstream)
		}
		return wl, true, nil
	}
	wl, ok, err := attestOne(sub, refusedSubject)
	if !ok {
		return err
	}
	t.req.Workload = wl
	chain, err := wl.ActChain()
	if err != nil {
		t.refused, t.reason = refusedSubject, "subject_token: "+err.Error()
		return nil
	}
	notAfter := wl.Expiry
	if act != nil {
		if t.req.Actor, ok, err = attestOne(*act, refusedActor); !ok {
			return err
		}
		t.req.DelegationDepth = 1 + len(chain)
		if t.req.Actor.Expiry.Before(notAfter) {
			notAfter = t.req.Actor.Expiry
		}
	} else if len(chain) > 0 {
		t.refused, t.reason = refusedSubject, "subject_token carries act but no actor_token was sent (a delegated token is exchanged with an actor token)"
		return nil
	}
	t.d, t.decided = p.Explain(t.req), true
	// The server mints from the second it decided at, never past the tokens' exp.
	if t.d.Allowed() && !notAfter.IsZero() && notAfter.Truncate(time.Second).Sub(t.req.Now.Truncate(time.Second)) < time.Second {
		t.refused, t.reason = refusedSubject, "policy allows, but the subject or actor token expires within a second"
	}
	return nil
}

func (t *policyTrial) allowed() bool { return t.refused == "" && t.d.Allowed() }

func (t *policyTrial) outcome() string {
	if t.refused != "" {
		return t.refused
	}
	return t.d.Outcome.String()
}

func (t *policyTrial) json() map[string]any {
	out := map[string]any{"attested": t.verified, "attestation": t.attested}
	if wl := t.req.Workload; wl != nil {
		out["workload"] = wl.Upstream + " " + wl.Subject
	}
	if !t.decided {
		out["decision"] = map[string]any{"outcome": t.refused, "reason": t.reason}
		return out
	}
	d := decisionJSON(t.d)
	if t.refused != "" {
		d["outcome"], d["reason"], d["policy_outcome"] = t.refused, t.reason, t.d.Outcome.String()
	}
	out["decision"] = d
	return out
}

// workloadInsecure builds the workload a token names, from its claims alone (no
// --config): nothing is verified, and the upstream is --upstream. Without an
// attribute mapping the attributes are sub and iss.
func workloadInsecure(tok presented) (*attest.Workload, error) {
	if tok.upstream == "" {
		return nil, fmt.Errorf("%w: %s: name its upstream (--upstream, --actor-upstream), or give --config to verify it", errUsage, tok.flag)
	}
	claims, err := claimsInsecure(tok.raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", attest.ErrMalformed, err)
	}
	iss, _ := claims["iss"].(string)
	sub, _ := claims["sub"].(string)
	if sub == "" {
		return nil, fmt.Errorf("%w: no sub claim", attest.ErrMalformed)
	}
	wl := &attest.Workload{Issuer: iss, Subject: sub, ID: sub, Claims: claims, Upstream: tok.upstream}
	wl.Attributes = map[string]string{"sub": sub, "iss": iss}
	return wl, nil
}

// claimsInsecure decodes a JWT's payload without verifying it.
func claimsInsecure(raw string) (map[string]any, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 || len(raw) > attest.MaxTokenSize {
		return nil, errors.New("not a compact JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, errors.New("payload is not base64url")
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		return nil, errors.New("payload is not a JSON object")
	}
	return claims, nil
}

// print writes the decision for people: the outcome and reason, what was
// attested, the workload, the grants and the trace of every rule considered.
func (t *policyTrial) print(w io.Writer) error {
	req, d := &t.req, &t.d
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "decision:\t%s\n", t.outcome())
	if d.Rule != "" && t.refused == "" {
		fmt.Fprintf(tw, "rule:\t%s\n", d.Rule)
	}
	if t.refused != "" {
		fmt.Fprintf(tw, "reason:\t%s\n", t.reason)
	} else {
		fmt.Fprintf(tw, "reason:\t%s\n", d.Reason)
	}
	fmt.Fprintf(tw, "attested:\t%s\n", t.attested)
	if wl := req.Workload; wl != nil {
		fmt.Fprintf(tw, "workload:\t%s %s\n", wl.Upstream, wl.Subject)
		if len(wl.Attributes) > 0 {
			var kv []string
			for _, k := range slices.Sorted(maps.Keys(wl.Attributes)) {
				kv = append(kv, k+"="+wl.Attributes[k])
			}
			fmt.Fprintf(tw, "attributes:\t%s\n", strings.Join(kv, " "))
		}
	}
	if req.Actor != nil {
		fmt.Fprintf(tw, "actor:\t%s %s (depth %d)\n", req.Actor.Upstream, req.Actor.Subject, req.DelegationDepth)
	}
	if t.refused != "" && t.decided {
		fmt.Fprintf(tw, "policy:\t%s (%s)\n", d.Outcome, d.Reason)
	}
	if t.allowed() {
		fmt.Fprintf(tw, "grants:\taudiences %s; scopes %s; max_ttl %s\n", list(d.Audiences), list(d.Scopes), ttl(d.MaxTTL))
		if len(d.CopyAttributes) > 0 {
			fmt.Fprintf(tw, "copies:\t%s\n", strings.Join(d.CopyAttributes, ", "))
		}
	}
	for _, a := range d.Audited {
		fmt.Fprintf(tw, "audit mode:\trule %s (%s) would have given %s\n", a.Rule, a.Effect, a.Would)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if !t.decided {
		return nil
	}
	fmt.Fprintln(w, "trace:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, s := range d.Trace {
		mark := " "
		if s.Decided {
			mark = "*"
		}
		fmt.Fprintf(tw, "  %s %s\t%s/%s\t%s\t%s\n", mark, s.Rule, s.Effect, s.Mode, s.Verdict, s.Detail)
	}
	return tw.Flush()
}

func decisionJSON(d policy.Decision) map[string]any {
	return map[string]any{
		"outcome": d.Outcome.String(), "rule": d.Rule, "reason": d.Reason,
		"audiences": d.Audiences, "scopes": d.Scopes, "max_ttl": ttl(d.MaxTTL),
		"copy_attributes": d.CopyAttributes, "audited": d.Audited, "trace": d.Trace,
	}
}

func list(v []string) string {
	if len(v) == 0 {
		return "-"
	}
	return strings.Join(v, ", ")
}

func ttl(d time.Duration) string {
	if d == 0 {
		return "none"
	}
	return d.String()
}

func cmdPolicyReview(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("stsctl policy review", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var ps policySource
	ps.register(fs)
	metrics := fs.String("metrics", "", "the STS's /metrics URL (on its metrics_listen) or a saved copy: rule usage (enables 'unused' findings)")
	cacert := fs.String("cacert", "", "CA of the STS certificate, for an https --metrics URL (default $STSCTL_CACERT)")
	nowFlag := fs.String("now", "", "review as of this time (RFC 3339; default: now)")
	asJSON := fs.Bool("json", false, "print the review as JSON (same as --output json)")
	var out outputFlag
	out.registerWith(fs, "table")
	if err := fs.Parse(args); err != nil {
		return parseErr(err)
	}
	if err := need(fs); err != nil {
		return err
	}
	if err := applyEnv(fs, "cacert"); err != nil {
		return err
	}
	p, cfg, err := ps.load()
	if err != nil {
		return err
	}
	now := time.Now()
	if *nowFlag != "" {
		if now, err = time.Parse(time.RFC3339, *nowFlag); err != nil {
			return fmt.Errorf("%w: --now: %v", errUsage, err)
		}
	}
	o := policy.ReviewOptions{UpstreamSubjects: upstreamSubjects(cfg), Upstreams: upstreamLimits(cfg)}
	if *metrics != "" {
		if o.Usage, err = ruleUsage(ctx, *metrics, *cacert); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	rv := p.ReviewWith(now, o)
	if *asJSON || out.format == "json" {
		return printJSON(stdout, rv)
	}
	return rv.WriteText(stdout)
}

// upstreamSubjects are the subjects each upstream of cfg may assert, as its
// verifier enforces them: its subjects, or for a SPIFFE upstream without any, its
// trust domain. nil without a config.
func upstreamSubjects(cfg *config.Config) map[string][]string {
	if cfg == nil {
		return nil
	}
	out := map[string][]string{}
	for _, u := range cfg.Upstreams {
		switch {
		case len(u.Subjects) > 0:
			out[u.Name] = u.Subjects
		case u.Kind == "spiffe":
			out[u.Name] = []string{"spiffe://" + u.TrustDomain + "/*"}
		}
	}
	return out
}

// upstreamLimits are each upstream's own checks in cfg (preset, required
// claims, attribute bounds, condition), for the review. nil without a config.
func upstreamLimits(cfg *config.Config) map[string]policy.UpstreamLimits {
	if cfg == nil {
		return nil
	}
	out := map[string]policy.UpstreamLimits{}
	for _, u := range cfg.Upstreams {
		out[u.Name] = policy.UpstreamLimits{
			Preset: u.Preset, RequiredClaims: u.RequiredClaims, AttributeBounds: u.AttributeBounds, Condition: u.Condition,
		}
	}
	return out
}

// usageLine matches the per-rule counters the STS exports.
var usageLine = regexp.MustCompile(`^safeconduct_policy_(?:decisions|audit_hits|admin_decisions)_total\{([^}]*)\} ([0-9.e+]+)$`)
var ruleLabel = regexp.MustCompile(`(?:^|,)rule="((?:[^"\\]|\\.)*)"`)

// ruleUsage reads matches per rule from Prometheus text (a URL or a file).
func ruleUsage(ctx context.Context, src, cacert string) (map[string]uint64, error) {
	var r io.Reader
	if strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://") {
		client, err := stsclient.HTTPClient(cacert, 10*time.Second)
		if err != nil {
			return nil, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
		if err != nil {
			return nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s answered %s", src, resp.Status)
		}
		r = io.LimitReader(resp.Body, 32<<20)
	} else {
		f, err := os.Open(src)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = io.LimitReader(f, 32<<20)
	}
	usage := map[string]uint64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	seen := false
	for sc.Scan() {
		m := usageLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		seen = true
		lm := ruleLabel.FindStringSubmatch(m[1])
		if lm == nil || lm[1] == "" {
			continue
		}
		rule, err := strconv.Unquote(`"` + lm[1] + `"`)
		if err != nil {
			continue
		}
		n, err := strconv.ParseFloat(m[2], 64)
		if err != nil || n < 0 {
			continue
		}
		usage[rule] += uint64(n)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !seen {
		return nil, errors.New("no safeconduct_policy_* counters found (is this the STS's /metrics?)")
	}
	return usage, nil
}
