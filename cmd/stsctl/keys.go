package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/issuer"
)

const keysUsage = `usage: stsctl keys list (--key-dir DIR [--alg ES256] [--max-ttl 1h] | --config sts.yaml)
       stsctl keys rotate (--key-dir DIR [--alg ES256] [--rsa-bits 3072] | --config sts.yaml) [--emergency [--sts URL --token-file F [--cacert F] [--reason R]]]
       stsctl keys revoke --kid KID --sts URL --token-file F [--cacert F] [--reason R]
  (--token VALUE|@FILE|- or --cert/--key instead of --token-file)`

// cmdKeys manages the STS signing keys: keys list and keys rotate (in key_dir),
// keys revoke (every token a retired key signed, through the admin API).
func cmdKeys(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if isHelp(args) {
		fmt.Fprintln(stdout, keysUsage)
		return nil
	}
	if len(args) > 0 {
		switch args[0] {
		case "list":
			return cmdKeysList(args[1:], stdout, stderr)
		case "rotate":
			return cmdKeysRotate(ctx, args[1:], stdin, stdout, stderr)
		case "revoke":
			return cmdKeysRevoke(ctx, args[1:], stdin, stdout, stderr)
		}
	}
	fmt.Fprintln(stderr, keysUsage)
	return errUsage
}

// keyAdminFlags are the admin API flags of keys rotate and keys revoke: those of
// the other admin commands, plus --token-file and --reason.
type keyAdminFlags struct {
	adminFlags
	tokenFile string
	reason    string
}

func (k *keyAdminFlags) register(fs *flag.FlagSet) {
	k.adminFlags.register(fs)
	fs.StringVar(&k.tokenFile, "token-file", "", "file holding the admin bearer token (same as --token @FILE; default $STSCTL_TOKEN)")
	fs.StringVar(&k.reason, "reason", "", "why (recorded and audited; default: names the keys)")
}

// set reports whether any admin API flag was given.
func (k *keyAdminFlags) set() bool {
	return k.sts != "" || k.token != "" || k.tokenFile != "" || k.cert != "" || k.key != "" || k.cacert != ""
}

// client checks the flags and reads the credential, before anything is changed.
func (k *keyAdminFlags) client(stdin io.Reader) (*adminClient, error) {
	if k.tokenFile != "" {
		if k.token != "" {
			return nil, fmt.Errorf("%w: --token-file and --token are exclusive", errUsage)
		}
		k.token = "@" + k.tokenFile
	}
	return k.adminFlags.client(stdin)
}

// retryCommand is the stsctl command that revokes kid with these flags. A token
// given by value is not repeated (it is a secret): a placeholder file stands for it.
func (k *keyAdminFlags) retryCommand(kid, reason string) string {
	sts := k.sts
	if sts == "" {
		sts = "https://STS"
	}
	args := []string{"stsctl", "keys", "revoke", "--sts", sts, "--kid", kid}
	switch {
	case k.tokenFile != "":
		args = append(args, "--token-file", k.tokenFile)
	case k.token == "-" || strings.HasPrefix(k.token, "@"):
		args = append(args, "--token", k.token)
	case k.cert != "":
		args = append(args, "--cert", k.cert, "--key", k.key)
	default:
		args = append(args, "--token-file", "ADMIN_TOKEN_FILE")
	}
	if k.cacert != "" {
		args = append(args, "--cacert", k.cacert)
	}
	args = append(args, "--reason", reason)
	for i, a := range args {
		args[i] = shellQuote(a)
	}
	return strings.Join(args, " ")
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("@%+=:,./_-", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// revokeKey asks the STS to revoke every token signed by kid.
func revokeKey(ctx context.Context, ac *adminClient, kid, reason string) (map[string]any, error) {
	var entry map[string]any
	err := ac.do(ctx, http.MethodPost, "/admin/v1/keys/revoke", map[string]string{"kid": kid, "reason": reason}, &entry)
	return entry, err
}

func cmdKeysRotate(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("stsctl keys rotate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("key-dir", "", "the STS signing.key_dir (required)")
	alg := fs.String("alg", "ES256", "signing algorithm of the new key (the STS signing.algorithm)")
	emergency := fs.Bool("emergency", false, "activate the new key now, delete the key signing now, and (with --sts) revoke every token it signed")
	rsaBits := fs.Int("rsa-bits", issuer.DefaultRSABits, "size of a new RS256/PS256 key: 2048, 3072 or 4096 (the STS signing.rsa_bits)")
	var kf keyAdminFlags
	kf.register(fs)
	var kc keyConfig
	kc.register(fs)
	if err := fs.Parse(args); err != nil {
		return parseErr(err)
	}
	if err := needKeyDir(fs, *dir, kc.path); err != nil {
		fmt.Fprintln(stderr, keysUsage)
		return err
	}
	var ac *adminClient
	explicit := kf.set()
	if explicit && !*emergency {
		return fmt.Errorf("%w: --sts and the admin flags go with --emergency (a staged rotation keeps the old key's tokens valid)", errUsage)
	}
	if *emergency {
		// The environment counts for an emergency rotation only, and calls the STS
		// when it names one (STSCTL_STS).
		if err := kf.env(fs); err != nil {
			return err
		}
		if explicit || kf.sts != "" {
			// The credential is read before the keys change: a typo must not leave a
			// rotated key without its revocation.
			var err error
			if ac, err = kf.client(stdin); err != nil {
				return err
			}
		}
	}
	keyDir, keyAlg, _, opts, closeToken, err := kc.apply(*dir, jose.SignatureAlgorithm(*alg), 0, []issuer.KeyOption{issuer.WithRSABits(*rsaBits)})
	if err != nil {
		return err
	}
	defer closeToken()
	res, err := issuer.RotateKey(keyDir, keyAlg, time.Now(), *emergency, opts...)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "new key %s (%s) activates at %s\n", res.KeyID, res.File, res.ActivateAt.UTC().Format(time.RFC3339))
	if !*emergency {
		fmt.Fprintf(stdout, "published within %s; signs from %s (2 x the JWKS cache lifetime %s)\n",
			issuer.KeyReloadInterval, res.ActivateAt.UTC().Format(time.RFC3339), issuer.JWKSCacheLifetime)
		return nil
	}
	if res.Previous == "" {
		fmt.Fprintln(stdout, "no key was signing: no token to revoke")
		return nil
	}
	fmt.Fprintf(stdout, "old key %s deleted (%v)\n", res.Previous, res.Removed)
	for _, f := range res.Removed {
		if strings.HasSuffix(f, ".pkcs11") {
			fmt.Fprintln(stdout, "the old key's reference is deleted; the key itself stays in the PKCS#11 token until deleted there (pkcs11-tool --delete-object)")
		}
	}
	fmt.Fprintf(stdout, "replicas drop it from the JWKS within %s; verifiers reject its tokens at their next JWKS refresh (at most %s)\n",
		issuer.KeyReloadInterval, issuer.JWKSCacheLifetime)
	fmt.Fprintln(stdout, "verifiers may reject tokens of the new key until they refresh the JWKS")
	reason := kf.reason
	if reason == "" {
		reason = fmt.Sprintf("emergency key rotation: key %s replaced by %s", res.Previous, res.KeyID)
	}
	retry := kf.retryCommand(res.Previous, reason)
	if ac == nil {
		fmt.Fprintf(stdout, "tokens signed by the old key %s are NOT revoked: verifiers accept them until their next JWKS refresh (up to %s); revoke them now with\n    %s\n",
			res.Previous, issuer.JWKSCacheLifetime, retry)
		return nil
	}
	entry, err := revokeKey(ctx, ac, res.Previous, reason)
	if err != nil {
		fmt.Fprintf(stderr, "\n!!! TOKENS SIGNED BY THE OLD KEY %s ARE NOT REVOKED: %v\n", res.Previous, err)
		fmt.Fprintf(stderr, "!!! The keys were rotated (new key %s): do NOT rotate again. Retry the revocation with:\n    %s\n\n", res.KeyID, retry)
		return fmt.Errorf("old key %s rotated out but its tokens are NOT revoked", res.Previous)
	}
	fmt.Fprintf(stdout, "revoked every token signed by the old key %s, whatever its iat: entry %v (until %s)\n",
		res.Previous, entry["id"], entryTime(entry["expires"]))
	return nil
}

// cmdKeysRevoke is `stsctl keys revoke`: revoke every token signed by a key the
// STS no longer signs with (POST /admin/v1/keys/revoke, action rotate_keys).
func cmdKeysRevoke(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("stsctl keys revoke", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kid := fs.String("kid", "", "the full key ID whose tokens to revoke (required; stsctl keys list shows them; the STS refuses the key it signs with and kids it never had)")
	var kf keyAdminFlags
	kf.register(fs)
	var out outputFlag
	out.register(fs)
	if err := fs.Parse(args); err != nil {
		return parseErr(err)
	}
	if err := kf.env(fs); err != nil {
		return err
	}
	if err := need(fs, "kid"); err != nil {
		fmt.Fprintln(stderr, keysUsage)
		return err
	}
	ac, err := kf.client(stdin)
	if err != nil {
		return err
	}
	reason := kf.reason
	if reason == "" {
		reason = "key " + *kid + " revoked"
	}
	entry, err := revokeKey(ctx, ac, *kid, reason)
	if err != nil {
		return fmt.Errorf("tokens signed by key %s are NOT revoked: %w", *kid, err)
	}
	return out.print(stdout, entry, entryTimes)
}

// cmdKeysList is `stsctl keys list`: every key ID of key_dir, in full (the key
// revoke endpoint takes nothing else), with its state, including the removed keys
// key_dir/kids lists (still revocable).
func cmdKeysList(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("stsctl keys list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("key-dir", "", "the STS signing.key_dir (required)")
	alg := fs.String("alg", "ES256", "the STS signing.algorithm")
	maxTTL := fs.Duration("max-ttl", time.Hour, "the STS tokens.max_ttl (how long a retired key stays published)")
	var kc keyConfig
	kc.register(fs)
	if err := fs.Parse(args); err != nil {
		return parseErr(err)
	}
	if err := needKeyDir(fs, *dir, kc.path); err != nil {
		fmt.Fprintln(stderr, keysUsage)
		return err
	}
	keyDir, keyAlg, ttl, opts, closeToken, err := kc.apply(*dir, jose.SignatureAlgorithm(*alg), *maxTTL, nil)
	if err != nil {
		return err
	}
	defer closeToken()
	if _, err := os.Stat(keyDir); err != nil {
		return fmt.Errorf("key directory: %w", err)
	}
	keys, err := issuer.ListKeys(keyDir, keyAlg, ttl, time.Now(), opts...)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KID\tSTATE\tALG\tACTIVATES\tFILE")
	for _, k := range keys {
		state, algName, at, file := k.State, k.Algorithm, "always", filepath.Base(k.File)
		if !k.Until.IsZero() {
			state += " until " + k.Until.UTC().Format(time.RFC3339)
		}
		if !k.ActivateAt.IsZero() {
			at = k.ActivateAt.UTC().Format(time.RFC3339)
		}
		if k.State == "removed" {
			algName, at = "-", "-"
			file = "(" + file + ", deleted; still revocable)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.KeyID, state, algName, at, file)
	}
	if ferr := tw.Flush(); err == nil {
		err = ferr
	}
	return err
}

// entryTime renders an entry's time (unix milliseconds) for humans.
func entryTime(v any) string {
	ms, ok := v.(float64)
	if !ok || ms == 0 {
		return "never"
	}
	return time.UnixMilli(int64(ms)).UTC().Format(time.RFC3339)
}

// needKeyDir checks that exactly one of --key-dir and --config names the keys,
// and that nothing else follows the flags.
func needKeyDir(fs *flag.FlagSet, dir, config string) error {
	name := strings.TrimPrefix(fs.Name(), "stsctl ")
	switch {
	case dir == "" && config == "":
		return usagef("%s: missing --key-dir (or --config) (see %s --help)", name, fs.Name())
	case dir != "" && config != "":
		return usagef("%s: --key-dir and --config exclude each other", name)
	case fs.NArg() > 0:
		return usagef("%s: unexpected arguments %q", name, fs.Args())
	}
	return nil
}
