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
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/attest/attrs"
	"github.com/safeconduct/safeconduct/config"
	"github.com/safeconduct/safeconduct/internal/stsclient"
	"github.com/safeconduct/safeconduct/policy"
)

const policyUsage = `usage: stsctl policy <test|review> [flags]

  test     decide one request offline and print the decision and its trace
  review   print who can obtain what, and findings (unused, past review, broad rules)
`

func cmdPolicy(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, policyUsage)
		return errUsage
	}
	switch args[0] {
	case "test":
		return cmdPolicyTest(args[1:], stdin, stdout, stderr)
	case "review":
		return cmdPolicyReview(ctx, args[1:], stdout, stderr)
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
		if cfg, err = config.LoadConfig(ps.config); err != nil {
			return nil, nil, err
		}
	}
	files := []string(ps.files)
	if len(files) == 0 {
		if cfg == nil {
			return nil, nil, fmt.Errorf("%w: --policy or --config is required", errUsage)
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

func cmdPolicyTest(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("stsctl policy test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var ps policySource
	ps.register(fs)
	upstream := fs.String("upstream", "", "upstream name of the subject token (default: found by iss in --config)")
	actorUpstream := fs.String("actor-upstream", "", "upstream name of the actor token (default: found by iss in --config)")
	subject := fs.String("subject-token", "", "subject token: value, @FILE or - (its claims are read, its signature is NOT verified)")
	actor := fs.String("actor-token", "", "actor token: value, @FILE or -")
	scope := fs.String("scope", "", "space-separated scopes")
	requested := fs.String("requested-token-type", "access_token", "requested token type")
	clientID := fs.String("client-id", "", "client_id of the request")
	clientAuth := fs.Bool("client-authenticated", false, "the client_id was authenticated (mTLS or private_key_jwt)")
	senderConstrained := fs.Bool("sender-constrained", false, "the request is over mTLS, so the token would be sender-constrained")
	nowFlag := fs.String("now", "", "decide at this time (RFC 3339; default: now)")
	expect := fs.String("expect", "", "allow or deny: exit 1 unless the decision matches (for policy tests in CI)")
	asJSON := fs.Bool("json", false, "print the decision as JSON")
	var audiences, resources listFlag
	fs.Var(&audiences, "audience", "requested audience (repeatable)")
	fs.Var(&resources, "resource", "requested resource (repeatable)")
	if err := fs.Parse(args); err != nil {
		return parseErr(err)
	}
	if *subject == "" || fs.NArg() > 0 || (*expect != "" && *expect != "allow" && *expect != "deny") {
		fmt.Fprintln(stderr, "usage: stsctl policy test --policy F|--config C --subject-token @FILE --audience A [--scope S] [--actor-token @FILE] [--expect allow|deny]")
		return errUsage
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
	raw, err := readToken(*subject, stdin)
	if err != nil {
		return fmt.Errorf("subject token: %w", err)
	}
	wl, err := workloadInsecure(raw, *upstream, cfg)
	if err != nil {
		return fmt.Errorf("subject token: %w", err)
	}
	req := policy.Request{
		Workload: wl, Audiences: audiences, Resources: resources, Scopes: strings.Fields(*scope),
		RequestedTokenType: tokenType(*requested), ClientID: *clientID, Now: now,
		ClientAuthenticated: *clientAuth, SenderConstrained: *senderConstrained,
	}
	if *actor != "" {
		rawActor, err := readToken(*actor, stdin)
		if err != nil {
			return fmt.Errorf("actor token: %w", err)
		}
		if req.Actor, err = workloadInsecure(rawActor, *actorUpstream, cfg); err != nil {
			return fmt.Errorf("actor token: %w", err)
		}
		chain, err := wl.ActChain()
		if err != nil {
			return fmt.Errorf("subject token: %w", err)
		}
		req.DelegationDepth = 1 + len(chain)
	}
	d := p.Explain(req)
	if *asJSON {
		err = printJSON(stdout, map[string]any{"workload": wl.Upstream + " " + wl.Subject, "decision": decisionJSON(d)})
	} else {
		err = printDecision(stdout, req, d)
	}
	if err != nil {
		return err
	}
	if (*expect == "allow") != d.Allowed() && *expect != "" {
		return fmt.Errorf("expected %s, got %s", *expect, d.Outcome)
	}
	return nil
}

// workloadInsecure builds the workload a token would attest to, from its claims
// alone: the signature is not verified (policy test answers "what would policy
// decide for this identity", not "is this token genuine"). With a config, the
// upstream is found by iss and its attribute mapping applied.
func workloadInsecure(raw, upstream string, cfg *config.Config) (*attest.Workload, error) {
	claims, err := claimsInsecure(raw)
	if err != nil {
		return nil, err
	}
	iss, _ := claims["iss"].(string)
	sub, _ := claims["sub"].(string)
	if sub == "" {
		return nil, errors.New("no sub claim")
	}
	wl := &attest.Workload{Issuer: iss, Subject: sub, ID: sub, Claims: claims, Upstream: upstream}
	var up *config.UpstreamConfig
	if cfg != nil {
		for i := range cfg.Upstreams {
			u := &cfg.Upstreams[i]
			if (upstream != "" && u.Name == upstream) || (upstream == "" && u.Issuer == iss) {
				up = u
				break
			}
		}
		if up == nil {
			return nil, fmt.Errorf("no upstream in %s for iss %q (or --upstream)", cfg.File(), iss)
		}
		wl.Upstream = up.Name
	}
	if wl.Upstream == "" {
		return nil, errors.New("name the upstream with --upstream, or give --config to find it by iss")
	}
	wl.Attributes = map[string]string{"sub": sub, "iss": iss}
	if up != nil && (up.Preset != "" || len(up.Attributes) > 0) {
		m, err := attrs.Compile(up.Preset, up.Attributes)
		if err != nil {
			return nil, err
		}
		mapped, _ := m.Apply(claims)
		for k, v := range mapped {
			wl.Attributes[k] = v
		}
	}
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

func printDecision(w io.Writer, req policy.Request, d policy.Decision) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "decision:\t%s\n", d.Outcome)
	if d.Rule != "" {
		fmt.Fprintf(tw, "rule:\t%s\n", d.Rule)
	}
	fmt.Fprintf(tw, "reason:\t%s\n", d.Reason)
	wl := req.Workload
	fmt.Fprintf(tw, "workload:\t%s %s\n", wl.Upstream, wl.Subject)
	if len(wl.Attributes) > 0 {
		names := make([]string, 0, len(wl.Attributes))
		for k := range wl.Attributes {
			names = append(names, k)
		}
		slices.Sort(names)
		var kv []string
		for _, k := range names {
			kv = append(kv, k+"="+wl.Attributes[k])
		}
		fmt.Fprintf(tw, "attributes:\t%s\n", strings.Join(kv, " "))
	}
	if req.Actor != nil {
		fmt.Fprintf(tw, "actor:\t%s %s (depth %d)\n", req.Actor.Upstream, req.Actor.Subject, req.DelegationDepth)
	}
	if d.Allowed() {
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
	fmt.Fprintln(w, "trace:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, s := range d.Trace {
		mark := " "
		if s.Decided {
			mark = "*"
		}
		fmt.Fprintf(tw, "  %s %s\t%s/%s\t%s\t%s\n", mark, s.Rule, s.Effect, s.Mode, s.Verdict, s.Detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, "note: token signatures were not verified; run stsctl exchange against the STS for that.")
	return err
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
	metrics := fs.String("metrics", "", "the STS's /metrics URL or a saved copy: rule usage (enables 'unused' findings)")
	cacert := fs.String("cacert", "", "CA of the STS certificate, for an https --metrics URL")
	nowFlag := fs.String("now", "", "review as of this time (RFC 3339; default: now)")
	asJSON := fs.Bool("json", false, "print the review as JSON")
	if err := fs.Parse(args); err != nil {
		return parseErr(err)
	}
	if fs.NArg() > 0 {
		return errUsage
	}
	p, _, err := ps.load()
	if err != nil {
		return err
	}
	now := time.Now()
	if *nowFlag != "" {
		if now, err = time.Parse(time.RFC3339, *nowFlag); err != nil {
			return fmt.Errorf("%w: --now: %v", errUsage, err)
		}
	}
	var usage map[string]uint64
	if *metrics != "" {
		if usage, err = ruleUsage(ctx, *metrics, *cacert); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	rv := p.Review(now, usage)
	if *asJSON {
		return printJSON(stdout, rv)
	}
	return rv.WriteText(stdout)
}

// usageLine matches the per-rule counters the STS exports.
var usageLine = regexp.MustCompile(`^safeconduct_policy_(?:decisions|audit_hits)_total\{([^}]*)\} ([0-9.e+]+)$`)
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
