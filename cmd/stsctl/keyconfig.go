package main

import (
	"flag"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/config"
	"github.com/safeconduct/safeconduct/issuer"
)

// keyConfig is the signing section of an STS config for `stsctl keys rotate`
// and `keys list --config sts.yaml`: key_dir, algorithm, rsa_bits, max_ttl and,
// with signing.pkcs11, the token (a key in an HSM is generated there).
type keyConfig struct {
	path string
}

func (k *keyConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&k.path, "config", "", "the STS config: its signing section (key_dir, algorithm, rsa_bits, pkcs11) and tokens.max_ttl replace --key-dir, --alg, --rsa-bits and --max-ttl")
}

// apply loads the config (when given) and returns the key directory, algorithm,
// key options and max_ttl it sets, with the function that closes the token.
func (k *keyConfig) apply(dir string, alg jose.SignatureAlgorithm, maxTTL time.Duration, opts []issuer.KeyOption) (string, jose.SignatureAlgorithm, time.Duration, []issuer.KeyOption, func() error, error) {
	if k.path == "" {
		return dir, alg, maxTTL, opts, func() error { return nil }, nil
	}
	cfg, err := config.Load(k.path)
	if err != nil {
		return "", "", 0, nil, nil, err
	}
	o, closeToken, err := config.SigningKeyOptions(cfg)
	if err != nil {
		return "", "", 0, nil, nil, err
	}
	return cfg.Path(cfg.Signing.KeyDir), jose.SignatureAlgorithm(cfg.Signing.Algorithm), cfg.Tokens.MaxTTL.D(), o, closeToken, nil
}
