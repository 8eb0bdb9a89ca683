package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/issuer"
)

// cmdKeys manages the STS signing keys in key_dir: keys rotate.
func cmdKeys(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "rotate" {
		fmt.Fprintln(stderr, "usage: stsctl keys rotate --key-dir DIR [--alg ES256] [--emergency]")
		return errUsage
	}
	fs := flag.NewFlagSet("stsctl keys rotate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("key-dir", "", "the STS signing.key_dir (required)")
	alg := fs.String("alg", "ES256", "signing algorithm of the new key (the STS signing.algorithm)")
	emergency := fs.Bool("emergency", false, "activate the new key now and delete the key signing now")
	if err := fs.Parse(args[1:]); err != nil {
		return parseErr(err)
	}
	if *dir == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: stsctl keys rotate --key-dir DIR [--alg ES256] [--emergency]")
		return errUsage
	}
	res, err := issuer.RotateKey(*dir, jose.SignatureAlgorithm(*alg), time.Now(), *emergency)
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
		fmt.Fprintln(stdout, "no key was signing")
		return nil
	}
	fmt.Fprintf(stdout, "old key %s deleted (%v)\n", res.Previous, res.Removed)
	fmt.Fprintf(stdout, "replicas drop it from the JWKS within %s; verifiers reject its tokens at their next JWKS refresh (at most %s)\n",
		issuer.KeyReloadInterval, issuer.JWKSCacheLifetime)
	fmt.Fprintln(stdout, "verifiers may reject tokens of the new key until they refresh the JWKS")
	return nil
}
