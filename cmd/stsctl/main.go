package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/safeconduct/safeconduct/internal/stsclient"
)

const usage = `usage: stsctl <command> [flags]

commands:
  exchange   exchange a subject token at the STS (RFC 8693) and print the response
  verify     validate a minted token from the STS's discovery + JWKS and print its claims
  policy     test a request against policy offline (policy test), review access (policy review),
             or show a running STS's live policy (policy status)
  revoke     revoke issued tokens (or --block new ones) by selector, through the admin API
  revocations  list or lift revocations (revocations list | revocations lift ID)
  keys       list the STS signing keys in key_dir with their full kids (keys list --key-dir DIR),
             rotate them (keys rotate [--emergency [--sts ...]]), or
             revoke every token a retired key signed (keys revoke --kid K --sts ...)
  version    print the stsctl version
  completion print a shell completion script (completion bash | completion zsh)

Token flags take a value, @FILE to read a file, or - to read standard input.
--sts takes a URL or HOST:PORT (for https://HOST:PORT).
Environment: STSCTL_STS (--sts, verify's --issuer), STSCTL_CACERT (--cacert) and
STSCTL_TOKEN (the admin --token) stand for flags not given.
--output json|table (-o) on exchange, verify, revoke, revocations, keys revoke and policy.
Run 'stsctl <command> --help' for the flags of a command.
`

func main() { os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := dispatch(ctx, args, stdin, stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		if err.Error() != errUsage.Error() {
			fmt.Fprintln(stderr, "stsctl:", err)
		}
		return 2
	default:
		fmt.Fprintln(stderr, "stsctl:", err)
		return 1
	}
}

// dispatch runs the command args name.
func dispatch(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	switch args[0] {
	case "exchange":
		return cmdExchange(ctx, args[1:], stdin, stdout, stderr)
	case "verify":
		return cmdVerify(ctx, args[1:], stdin, stdout, stderr)
	case "policy":
		return cmdPolicy(ctx, args[1:], stdin, stdout, stderr)
	case "revoke":
		return cmdRevoke(ctx, args[1:], stdin, stdout, stderr)
	case "revocations":
		return cmdRevocations(ctx, args[1:], stdin, stdout, stderr)
	case "keys":
		return cmdKeys(ctx, args[1:], stdin, stdout, stderr)
	case "version", "--version":
		_, err := fmt.Fprintln(stdout, version())
		return err
	case "completion":
		return cmdCompletion(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		_, err := fmt.Fprint(stdout, usage)
		return err
	default:
		fmt.Fprint(stderr, usage)
		return usagef("unknown command %q", args[0])
	}
}

var errUsage = errors.New("usage error")

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// readToken resolves a token flag: a literal value, @FILE, or - for stdin. The
// token is trimmed of surrounding white space.
func readToken(v string, stdin io.Reader) (string, error) {
	var data []byte
	var err error
	switch {
	case v == "-":
		data, err = io.ReadAll(io.LimitReader(stdin, 1<<20))
	case strings.HasPrefix(v, "@"):
		data, err = os.ReadFile(v[1:])
	default:
		return strings.TrimSpace(v), nil
	}
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(data)), nil
}

// tokenType expands the short names jwt, id_token and access_token.
func tokenType(v string) string {
	switch v {
	case "jwt", "id_token", "access_token":
		return "urn:ietf:params:oauth:token-type:" + v
	}
	return v
}

func cmdExchange(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("stsctl exchange", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sts := fs.String("sts", "", "STS base URL (the issuer), e.g. https://sts.example, or HOST:PORT (default $STSCTL_STS)")
	endpoint := fs.String("token-endpoint", "", "token endpoint URL (default: STS URL + /token)")
	cacert := fs.String("cacert", "", "PEM file of the CA that signed the STS certificate (default $STSCTL_CACERT, else system roots)")
	subject := fs.String("subject-token", "", "subject token: value, @FILE or - (required)")
	subjectType := fs.String("subject-token-type", "jwt", "subject token type: jwt, id_token, access_token or a URN")
	actor := fs.String("actor-token", "", "actor token: value, @FILE or -")
	actorType := fs.String("actor-token-type", "jwt", "actor token type (with --actor-token)")
	scope := fs.String("scope", "", "space-separated scopes")
	requested := fs.String("requested-token-type", "", "requested token type (default access_token)")
	clientID := fs.String("client-id", "", "client_id to send (public client)")
	timeout := fs.Duration("timeout", 10*time.Second, "request timeout")
	tokenOnly := fs.Bool("token-only", false, "print only the access token")
	var out outputFlag
	out.register(fs)
	var audiences, resources listFlag
	fs.Var(&audiences, "audience", "audience to request (repeatable)")
	fs.Var(&resources, "resource", "resource URI to request (repeatable)")
	if err := fs.Parse(args); err != nil {
		return parseErr(err)
	}
	if err := applyEnv(fs, "sts", "cacert"); err != nil {
		return err
	}
	if err := need(fs, "subject-token"); err != nil {
		fmt.Fprintln(stderr, "usage: stsctl exchange --sts URL --subject-token @FILE --audience A [flags]")
		return err
	}
	if *sts == "" && *endpoint == "" {
		fmt.Fprintln(stderr, "usage: stsctl exchange --sts URL --subject-token @FILE --audience A [flags]")
		return usagef("exchange: missing --sts (or --token-endpoint; or set %s)", EnvSTS)
	}
	base, err := stsURL("sts", *sts)
	if err != nil {
		return err
	}
	tokenURL := *endpoint
	if tokenURL == "" {
		tokenURL = base + "/token"
	}
	req := stsclient.Request{
		SubjectTokenType:   tokenType(*subjectType),
		Audiences:          audiences,
		Resources:          resources,
		Scopes:             strings.Fields(*scope),
		RequestedTokenType: tokenType(*requested),
		ClientID:           *clientID,
	}
	if req.SubjectToken, err = readToken(*subject, stdin); err != nil {
		return fmt.Errorf("subject token: %w", err)
	}
	if *actor != "" {
		if req.ActorToken, err = readToken(*actor, stdin); err != nil {
			return fmt.Errorf("actor token: %w", err)
		}
		req.ActorTokenType = tokenType(*actorType)
	}
	client, err := stsclient.HTTPClient(*cacert, *timeout)
	if err != nil {
		return err
	}
	resp, err := stsclient.Exchange(ctx, client, tokenURL, req)
	if err != nil {
		return err
	}
	if *tokenOnly {
		_, err = fmt.Fprintln(stdout, resp.AccessToken)
		return err
	}
	if out.format == "table" {
		// expires_in is a duration: say when that is.
		m := map[string]any{}
		b, _ := json.Marshal(resp)
		_ = json.Unmarshal(b, &m)
		if n, ok := m["expires_in"].(float64); ok {
			m["expires_in"] = fmt.Sprintf("%ds, until %s", int64(n), humanTime(time.Now().Add(time.Duration(n)*time.Second), time.Now()))
		}
		return out.print(stdout, m, nil)
	}
	return printJSON(stdout, resp)
}

func cmdVerify(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("stsctl verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	issFlag := fs.String("issuer", "", "STS issuer URL (discovery is fetched from it), or HOST:PORT (default $STSCTL_STS)")
	audience := fs.String("audience", "", "the audience the token must carry (required)")
	cacert := fs.String("cacert", "", "PEM file of the CA that signed the STS certificate (default $STSCTL_CACERT, else system roots)")
	tok := fs.String("token", "-", "token: value, @FILE or - (default: standard input)")
	timeout := fs.Duration("timeout", 10*time.Second, "time limit")
	var out outputFlag
	out.register(fs)
	if err := fs.Parse(args); err != nil {
		return parseErr(err)
	}
	if err := applyEnv(fs, "issuer", "cacert"); err != nil {
		return err
	}
	if err := need(fs, "issuer", "audience"); err != nil {
		fmt.Fprintln(stderr, "usage: stsctl verify --issuer URL --audience A [--token @FILE]")
		return err
	}
	iss, err := stsURL("issuer", *issFlag)
	if err != nil {
		return err
	}
	raw, err := readToken(*tok, stdin)
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	client, err := stsclient.HTTPClient(*cacert, *timeout)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	claims, err := stsclient.Verify(ctx, client, iss, *audience, raw)
	if err != nil {
		return fmt.Errorf("token rejected: %w", err)
	}
	return out.print(stdout, claims, claimTimes)
}

// parseErr is the error of a failed fs.Parse: ErrHelp for -h/--help (exit 0),
// else a usage error (the flag package has printed what was wrong).
func parseErr(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return errUsage
}

// isHelp reports whether args ask a command group for help.
func isHelp(args []string) bool {
	return len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help")
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
