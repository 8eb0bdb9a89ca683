package config

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/attest/oidc"
	"github.com/safeconduct/safeconduct/issuer"
)

// maxClients bounds the clients section.
const maxClients = 1000

// ClientConfig registers a client that authenticates with private_key_jwt
// (RFC 7523 §2.2): it signs a short-lived assertion (iss = sub = ID, aud = the
// STS issuer or token endpoint, exp, jti) with a key of its JWKS. Policy rules
// name clients (by ID, or by SPIFFE ID for mTLS clients) to require client
// authentication.
type ClientConfig struct {
	ID string `yaml:"id"`
	// Exactly one of JWKSFile and JWKSURI (https), both refreshed like an
	// upstream's keys.
	JWKSFile string `yaml:"jwks_file"`
	JWKSURI  string `yaml:"jwks_uri"`
	// Algorithms the client may sign with (default: all asymmetric ones).
	Algorithms []string `yaml:"algorithms"`
}

func (c *ClientConfig) validate(v *validator, i int, ids map[string]bool) {
	at := func(msg string, path ...any) { v.at(msg, append([]any{"clients", i}, path...)...) }
	switch {
	case c.ID == "":
		at("client id is required")
	case len(c.ID) > issuer.MaxClientID || !printable(c.ID) || strings.ContainsAny(c.ID, " \t"):
		at(fmt.Sprintf("client id %.64q: at most %d printable bytes, no spaces", c.ID, issuer.MaxClientID), "id")
	case strings.HasPrefix(c.ID, "spiffe://"):
		at("client id must not be a SPIFFE ID: SPIFFE workloads authenticate with their X.509-SVID (mTLS)", "id")
	case ids[c.ID]:
		at(fmt.Sprintf("duplicate client id %q", c.ID), "id")
	}
	ids[c.ID] = true
	switch {
	case c.JWKSFile == "" && c.JWKSURI == "":
		at("a client needs jwks_file or jwks_uri", "id")
	case c.JWKSFile != "" && c.JWKSURI != "":
		at("jwks_file and jwks_uri are mutually exclusive", "jwks_uri")
	case c.JWKSURI != "" && !strings.HasPrefix(c.JWKSURI, "https://"):
		at("jwks_uri must be an https URL", "jwks_uri")
	}
	for j, a := range c.Algorithms {
		if !attest.IsSignatureAlgorithm(a) {
			at(fmt.Sprintf("algorithm %q is not supported (want one of %s)", a, strings.Join(attest.SignatureAlgorithms(), ", ")), "algorithms", j)
		}
	}
}

// buildClients creates a verifier per registered client. Nil when none is.
func buildClients(ctx context.Context, cfg *Config, o Options) (map[string]attest.ParsedVerifier, error) {
	if len(cfg.Clients) == 0 {
		return nil, nil
	}
	byID := make(map[string]attest.ParsedVerifier, len(cfg.Clients))
	audiences := issuer.ClientAssertionAudiences(cfg.Issuer)
	var errs []error
	for _, c := range cfg.Clients {
		file := ""
		if c.JWKSFile != "" {
			file = cfg.Path(c.JWKSFile)
		}
		v, err := oidc.New(ctx, oidc.Config{
			Name:         "client:" + c.ID,
			Issuer:       c.ID,
			OpaqueIssuer: true,
			Audiences:    audiences,
			JWKSURI:      c.JWKSURI,
			JWKSFile:     file,
			Algorithms:   c.Algorithms,
			ClockSkew:    issuer.AssertionSkew,
			Subjects:     []string{c.ID},
			Now:          o.Now,
			Logger:       o.Logger,
			HTTPClient:   o.UpstreamClient,
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("client %q: %w", c.ID, err))
			continue
		}
		byID[c.ID] = v
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return byID, nil
}

// printable reports whether s has no control characters.
func printable(s string) bool {
	return !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}
