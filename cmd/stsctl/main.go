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

Token flags take a value, @FILE to read a file, or - to read standard input.
Run 'stsctl <command> -h' for the flags of a command.
`

func main() { os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "exchange":
		err = cmdExchange(ctx, args[1:], stdin, stdout, stderr)
	case "verify":
		err = cmdVerify(ctx, args[1:], stdin, stdout, stderr)
	case "policy":
		err = cmdPolicy(ctx, args[1:], stdin, stdout, stderr)
	case "revoke":
		err = cmdRevoke(ctx, args[1:], stdin, stdout, stderr)
	case "revocations":
		err = cmdRevocations(ctx, args[1:], stdin, stdout, stderr)
	case "keys":
		err = cmdKeys(ctx, args[1:], stdin, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "stsctl: unknown command %q\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		if err != errUsage {
			fmt.Fprintln(stderr, "stsctl:", err)
		}
		return 2
	default:
		fmt.Fprintln(stderr, "stsctl:", err)
		return 1
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
	sts := fs.String("sts", "", "STS base URL (the issuer), e.g. https://sts.example")
	endpoint := fs.String("token-endpoint", "", "token endpoint URL (default: STS URL + /token)")
	cacert := fs.String("cacert", "", "PEM file of the CA that signed the STS certificate (default: system roots)")
	subject := fs.String("subject-token", "", "subject token: value, @FILE or - (required)")
	subjectType := fs.String("subject-token-type", "jwt", "subject token type: jwt, id_token, access_token or a URN")
	actor := fs.String("actor-token", "", "actor token: value, @FILE or -")
	actorType := fs.String("actor-token-type", "jwt", "actor token type (with --actor-token)")
	scope := fs.String("scope", "", "space-separated scopes")
	requested := fs.String("requested-token-type", "", "requested token type (default access_token)")
	clientID := fs.String("client-id", "", "client_id to send (public client)")
	timeout := fs.Duration("timeout", 10*time.Second, "request timeout")
	tokenOnly := fs.Bool("token-only", false, "print only the access token")
	var audiences, resources listFlag
	fs.Var(&audiences, "audience", "audience to request (repeatable)")
	fs.Var(&resources, "resource", "resource URI to request (repeatable)")
	if err := fs.Parse(args); err != nil {
		return parseErr(err)
	}
	if (*sts == "" && *endpoint == "") || *subject == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: stsctl exchange --sts URL --subject-token @FILE --audience A [flags]")
		return errUsage
	}
	tokenURL := *endpoint
	if tokenURL == "" {
		tokenURL = strings.TrimSuffix(*sts, "/") + "/token"
	}
	req := stsclient.Request{
		SubjectTokenType:   tokenType(*subjectType),
		Audiences:          audiences,
		Resources:          resources,
		Scopes:             strings.Fields(*scope),
		RequestedTokenType: tokenType(*requested),
		ClientID:           *clientID,
	}
	var err error
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
	return printJSON(stdout, resp)
}

func cmdVerify(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("stsctl verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	iss := fs.String("issuer", "", "STS issuer URL (discovery is fetched from it)")
	audience := fs.String("audience", "", "the audience the token must carry (required)")
	cacert := fs.String("cacert", "", "PEM file of the CA that signed the STS certificate (default: system roots)")
	tok := fs.String("token", "-", "token: value, @FILE or - (default: standard input)")
	timeout := fs.Duration("timeout", 10*time.Second, "time limit")
	if err := fs.Parse(args); err != nil {
		return parseErr(err)
	}
	if *iss == "" || *audience == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: stsctl verify --issuer URL --audience A [--token @FILE]")
		return errUsage
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
	claims, err := stsclient.Verify(ctx, client, *iss, *audience, raw)
	if err != nil {
		return fmt.Errorf("token rejected: %w", err)
	}
	return printJSON(stdout, claims)
}

func parseErr(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return errUsage
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
