package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/safeconduct/safeconduct/internal/stsclient"
)

// adminClient talks to the STS admin API with a bearer token or a client
// certificate.
type adminClient struct {
	base   string
	token  string
	client *http.Client
}

type adminFlags struct {
	sts, cacert, token, cert, key string
	timeout                       time.Duration
}

func (a *adminFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.sts, "sts", "", "STS base URL or HOST:PORT (required; default $STSCTL_STS)")
	fs.StringVar(&a.cacert, "cacert", "", "CA of the STS certificate (default $STSCTL_CACERT, else system roots)")
	fs.StringVar(&a.token, "token", "", "admin bearer token: value, @FILE or - (a token an upstream issued to you, authorized by an admin rule; default $STSCTL_TOKEN)")
	fs.StringVar(&a.cert, "cert", "", "client certificate (X.509-SVID) PEM, instead of --token")
	fs.StringVar(&a.key, "key", "", "private key PEM of --cert")
	fs.DurationVar(&a.timeout, "timeout", 10*time.Second, "request timeout")
}

// env fills the flags not given from STSCTL_STS, STSCTL_CACERT and STSCTL_TOKEN
// (after fs.Parse).
func (a *adminFlags) env(fs *flag.FlagSet) error {
	return applyEnv(fs, "sts", "cacert", "token")
}

func (a *adminFlags) client(stdin io.Reader) (*adminClient, error) {
	switch {
	case a.sts == "":
		return nil, usagef("missing --sts (or set %s)", EnvSTS)
	case a.token == "" && a.cert == "":
		return nil, usagef("missing --token (or --cert and --key; or set %s)", EnvToken)
	case a.token != "" && a.cert != "":
		return nil, usagef("--token and --cert are exclusive: give one credential")
	case a.cert != "" && a.key == "":
		return nil, usagef("missing --key (the private key of --cert)")
	}
	base, err := stsURL("sts", a.sts)
	if err != nil {
		return nil, err
	}
	c, err := stsclient.HTTPClient(a.cacert, a.timeout)
	if err != nil {
		return nil, err
	}
	ac := &adminClient{base: base, client: c}
	if a.token != "" {
		if ac.token, err = readToken(a.token, stdin); err != nil {
			return nil, err
		}
	} else {
		pair, err := tls.LoadX509KeyPair(a.cert, a.key)
		if err != nil {
			return nil, err
		}
		c.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{pair}
	}
	return ac, nil
}

func (ac *adminClient) do(ctx context.Context, method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, ac.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if ac.token != "" {
		req.Header.Set("Authorization", "Bearer "+ac.token)
	}
	resp, err := ac.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return fmt.Errorf("%d %s: %s", resp.StatusCode, e.Error, e.Description)
		}
		return fmt.Errorf("STS answered %s", resp.Status)
	}
	return json.Unmarshal(data, out)
}

// cmdRevoke is `stsctl revoke`: record a revocation (or a block) by selector.
func cmdRevoke(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("stsctl revoke", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var af adminFlags
	af.register(fs)
	selector := fs.String("selector", "", `which tokens or workloads, e.g. "upstream=cluster-a,sub=system:serviceaccount:payments:*" (required)`)
	reason := fs.String("reason", "", "why (required; recorded and audited)")
	block := fs.Bool("block", false, "block new tokens for matching workloads instead of revoking issued ones")
	forD := fs.Duration("for", 0, "how long the entry lasts (default: revoke until every matching token expired; block until lifted)")
	var out outputFlag
	out.register(fs)
	if err := fs.Parse(args); err != nil {
		return parseErr(err)
	}
	if err := af.env(fs); err != nil {
		return err
	}
	if err := need(fs, "selector", "reason"); err != nil {
		fmt.Fprintln(stderr, `usage: stsctl revoke --sts URL --token @ADMIN.jwt --selector "sub=..." --reason "..." [--block] [--for 24h]`)
		return err
	}
	ac, err := af.client(stdin)
	if err != nil {
		return err
	}
	body := map[string]string{"selector": *selector, "reason": *reason, "kind": "revoke"}
	if *block {
		body["kind"] = "block"
	}
	if *forD > 0 {
		body["for"] = forD.String()
	}
	var entry map[string]any
	if err := ac.do(ctx, http.MethodPost, "/admin/v1/revocations", body, &entry); err != nil {
		return err
	}
	return out.print(stdout, entry, entryTimes)
}

// cmdRevocations is `stsctl revocations list|lift`.
const revocationsUsage = "usage: stsctl revocations list [--all] | lift ID [--reason R]   (with --sts and --token or --cert/--key)"

func cmdRevocations(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if isHelp(args) {
		fmt.Fprintln(stdout, revocationsUsage)
		return nil
	}
	if len(args) == 0 || (args[0] != "list" && args[0] != "lift") {
		fmt.Fprintln(stderr, revocationsUsage)
		return errUsage
	}
	sub := args[0]
	fs := flag.NewFlagSet("stsctl revocations "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var af adminFlags
	af.register(fs)
	all := fs.Bool("all", false, "list: include lifted and expired entries")
	reason := fs.String("reason", "", "lift: why")
	var out outputFlag
	out.register(fs)
	rest := args[1:]
	var id string
	if sub == "lift" && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		id, rest = rest[0], rest[1:] // `lift ID --flags` as well as `lift --flags ID`
	}
	if err := fs.Parse(rest); err != nil {
		return parseErr(err)
	}
	if id == "" && fs.NArg() == 1 {
		id = fs.Arg(0)
	} else if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if err := af.env(fs); err != nil {
		return err
	}
	if sub == "lift" && id == "" {
		return usagef("revocations lift: missing the entry ID (stsctl revocations lift ID)")
	}
	ac, err := af.client(stdin)
	if err != nil {
		return err
	}
	var res any
	switch sub {
	case "list":
		path := "/admin/v1/revocations"
		if *all {
			path += "?all=true"
		}
		err = ac.do(ctx, http.MethodGet, path, nil, &res)
	case "lift":
		path := "/admin/v1/revocations/" + url.PathEscape(id)
		if *reason != "" {
			path += "?reason=" + url.QueryEscape(*reason)
		}
		err = ac.do(ctx, http.MethodDelete, path, nil, &res)
	}
	if err != nil {
		return err
	}
	return out.print(stdout, res, entryTimes)
}
