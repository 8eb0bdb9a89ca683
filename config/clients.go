package config

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/attest/oidc"
	"github.com/safeconduct/safeconduct/issuer"
)

// maxClients bounds the clients section.
const maxClients = 1000

// ClientConfig registers a client that authenticates with private_key_jwt
// (RFC 7523 §2.2): it signs a short-lived assertion (iss = sub = ID, aud = the
// STS issuer or one of its endpoints, exp, jti) with a key of its JWKS. Policy
// rules name clients (by ID, or by SPIFFE ID for mTLS clients) to require client
// authentication.
//
// A client with introspect_audiences is a resource server: it may introspect
// (RFC 7662) the tokens whose aud holds one of them, without any admin rule. A
// resource server that authenticates with its X.509-SVID (mTLS) is registered by
// its SPIFFE ID, with introspect_audiences and no keys.
type ClientConfig struct {
	ID string `yaml:"id"`
	// Exactly one of JWKSFile and JWKSURI (https), both refreshed like an
	// upstream's keys; neither for a SPIFFE ID.
	JWKSFile string `yaml:"jwks_file"`
	JWKSURI  string `yaml:"jwks_uri"`
	// Algorithms the client may sign with (default: all asymmetric ones).
	Algorithms []string `yaml:"algorithms"`
	// IntrospectAudiences are the aud values this client serves as a resource
	// server: it may introspect tokens issued for any of them (exact match).
	IntrospectAudiences []string `yaml:"introspect_audiences"`
}

// maxIntrospectAudiences bounds a client's introspect_audiences.
const maxIntrospectAudiences = 64

func (c *ClientConfig) validate(v *validator, i int, ids map[string]bool) {
	at := func(msg string, path ...any) { v.at(msg, append([]any{"clients", i}, path...)...) }
	switch {
	case c.ID == "":
		at("client id is required")
	case len(c.ID) > issuer.MaxClientID || !printable(c.ID) || strings.ContainsAny(c.ID, " \t"):
		at(fmt.Sprintf("client id %.64q: at most %d printable bytes, no spaces", c.ID, issuer.MaxClientID), "id")
	case ids[c.ID]:
		at(fmt.Sprintf("duplicate client id %q", c.ID), "id")
	}
	ids[c.ID] = true
	c.validateAudiences(at)
	if strings.HasPrefix(c.ID, "spiffe://") {
		// An mTLS resource server: its X.509-SVID authenticates it.
		switch {
		case c.JWKSFile != "" || c.JWKSURI != "" || len(c.Algorithms) > 0:
			at("a client registered by SPIFFE ID authenticates with its X.509-SVID (mTLS): no jwks_file, jwks_uri or algorithms", "id")
		case len(c.IntrospectAudiences) == 0:
			at("a client registered by SPIFFE ID needs introspect_audiences (it is registered only as a resource server)", "id")
		case spiffeIDError(c.ID) != nil:
			at(fmt.Sprintf("client id %.64q: %v", c.ID, spiffeIDError(c.ID)), "id")
		}
		return
	}
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

// validateAudiences checks introspect_audiences: at most
// maxIntrospectAudiences distinct, non-empty, printable values.
func (c *ClientConfig) validateAudiences(at func(string, ...any)) {
	if len(c.IntrospectAudiences) > maxIntrospectAudiences {
		at(fmt.Sprintf("at most %d introspect_audiences", maxIntrospectAudiences), "introspect_audiences")
		return
	}
	seen := map[string]bool{}
	for j, a := range c.IntrospectAudiences {
		switch {
		case a == "" || len(a) > issuer.MaxAudienceLength || !printable(a):
			at(fmt.Sprintf("an audience must be 1 to %d printable bytes", issuer.MaxAudienceLength), "introspect_audiences", j)
		case strings.Contains(a, "*"):
			at("introspect_audiences are exact aud values, not patterns", "introspect_audiences", j)
		case seen[a]:
			at(fmt.Sprintf("duplicate audience %q", a), "introspect_audiences", j)
		}
		seen[a] = true
	}
}

// spiffeIDError checks a SPIFFE ID.
func spiffeIDError(id string) error {
	_, err := spiffeid.FromString(id)
	return err
}

// resourceServers maps each client with introspect_audiences to them (nil when
// none has any).
func resourceServers(cfg *Config) map[string][]string {
	var out map[string][]string
	for _, c := range cfg.Clients {
		if len(c.IntrospectAudiences) > 0 {
			if out == nil {
				out = map[string][]string{}
			}
			out[c.ID] = c.IntrospectAudiences
		}
	}
	return out
}

// buildClients creates a verifier per client registered with keys
// (private_key_jwt). Nil when none is.
func buildClients(ctx context.Context, cfg *Config, o Options) (map[string]attest.ParsedVerifier, error) {
	byID := make(map[string]attest.ParsedVerifier, len(cfg.Clients))
	audiences := issuer.ClientAssertionAudiences(cfg.Issuer)
	var errs []error
	for i, c := range cfg.Clients {
		if strings.HasPrefix(c.ID, "spiffe://") {
			continue // an mTLS resource server: no keys
		}
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
			errs = append(errs, cfg.errAt(fmt.Errorf("client %q: %w", c.ID, err), "clients", i))
			continue
		}
		byID[c.ID] = v
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(byID) == 0 {
		return nil, nil
	}
	return byID, nil
}

// printable reports whether s has no control characters.
func printable(s string) bool {
	return !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}
