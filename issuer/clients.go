package issuer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/revocation"
)

// AssertionTypeJWTBearer is the RFC 7523 client_assertion_type.
const AssertionTypeJWTBearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// Client assertion bounds. An assertion is meant for one request: it may be valid
// for at most maxAssertionLifetime from now, so that remembering its jti (to
// refuse a replay) stays cheap.
const (
	maxAssertionLifetime = 5 * time.Minute
	// AssertionSkew is the clock skew allowed on client assertions (their
	// verifiers are built with it).
	AssertionSkew = 30 * time.Second
)

// clientRegistry verifies private_key_jwt assertions of the registered clients.
type clientRegistry struct {
	byID map[string]attest.ParsedVerifier
}

// authMethods are the token_endpoint_auth_methods_supported of the discovery
// document: none, tls_client_auth when the listener requests client
// certificates, private_key_jwt when a client is registered.
func (r *clientRegistry) authMethods(mtls bool) []string {
	m := []string{"none"}
	if mtls {
		m = append(m, "tls_client_auth")
	}
	if r != nil {
		m = append(m, "private_key_jwt")
	}
	return m
}

// MaxAudienceLength is the longest audience value accepted, in bytes.
const MaxAudienceLength = maxTargetLength

// MaxClientID is the longest client ID accepted, in bytes.
const MaxClientID = maxClientID

// ClientAssertionAudiences are the aud values a client assertion may carry: the
// issuer and the endpoints that authenticate clients (token, introspection,
// revocation). An assertion is used once whichever endpoint it is sent to.
func ClientAssertionAudiences(issuer string) []string {
	base := strings.TrimSuffix(issuer, "/")
	return []string{issuer, base + PathToken, base + PathIntrospect, base + PathRevoke}
}

// errClientAuth is the answer to every failed client authentication: 401, one
// description whatever failed (the audit log has the reason).
var errClientAuth = &oauthError{Code: codeInvalidClient, Description: "client authentication failed", Status: http.StatusUnauthorized}

// authenticateAssertion verifies a private_key_jwt client assertion and records
// its jti so that it cannot be used twice. It returns the client as a Workload
// (ID = client ID), or an error wrapping attest.ErrInvalid (401) or
// attest.ErrUnavailable (503).
func (s *core) authenticateAssertion(ctx context.Context, req *tokenRequest) (*attest.Workload, error) {
	return s.verifyAssertion(ctx, req.ClientID, req.ClientAssertionType, req.ClientAssertion)
}

// verifyAssertion is authenticateAssertion for the parameters of any endpoint:
// clientID is the client_id sent beside the assertion ("" when none).
func (s *core) verifyAssertion(ctx context.Context, clientID, assertionType, assertion string) (*attest.Workload, error) {
	if assertionType != AssertionTypeJWTBearer {
		return nil, fmt.Errorf("%w: client_assertion_type %.100q is not supported", attest.ErrInvalid, assertionType)
	}
	if s.clients == nil {
		return nil, fmt.Errorf("%w: a client assertion was sent but no client is registered", attest.ErrInvalid)
	}
	p, err := attest.ParseInsecure(assertion, attest.TypeJWT)
	if err != nil {
		return nil, fmt.Errorf("client_assertion: %w", err)
	}
	iss, _ := p.Claims["iss"].(string) // unverified: only picks the verifier
	v, ok := s.clients.byID[iss]
	if !ok {
		return nil, fmt.Errorf("%w: client_assertion names no registered client", attest.ErrInvalid)
	}
	if clientID != "" && clientID != iss {
		return nil, fmt.Errorf("%w: client_id %.64q is not the assertion's client %q", attest.ErrInvalid, clientID, iss)
	}
	wl, err := v.VerifyParsed(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("client_assertion: %w", err)
	}
	now := s.now()
	switch {
	case wl.Subject != iss:
		return nil, fmt.Errorf("%w: client %q: assertion sub is not the client ID", attest.ErrInvalid, iss)
	case wl.TokenID == "":
		return nil, fmt.Errorf("%w: client %q: assertion has no jti", attest.ErrInvalid, iss)
	case len(wl.TokenID) > 256:
		return nil, fmt.Errorf("%w: client %q: assertion jti longer than 256 bytes", attest.ErrInvalid, iss)
	case wl.Expiry.After(now.Add(maxAssertionLifetime + AssertionSkew)):
		return nil, fmt.Errorf("%w: client %q: assertion valid for more than %s", attest.ErrInvalid, iss, maxAssertionLifetime)
	}
	if err := s.claimOnce(ctx, "client\x00"+iss+"\x00"+wl.TokenID, wl.Expiry.Add(AssertionSkew)); err != nil {
		return nil, fmt.Errorf("client %q: assertion %w", iss, err)
	}
	return &attest.Workload{Upstream: "client", Issuer: iss, Subject: iss, ID: iss, TokenID: wl.TokenID, Expiry: wl.Expiry}, nil
}

// claimOneTime refuses the second use of a subject or actor token from an
// upstream marked one_time: its jti is claimed in the revocation store until the
// token expires (plus the clock skew). Tokens of other upstreams, and X.509-SVID
// identities (not bearer tokens), pass.
func (s *tokenService) claimOneTime(ctx context.Context, wl *attest.Workload, tokenType string) error {
	skew, ok := s.oneTime[wl.Upstream]
	if !ok || tokenType == TypeX509SVID {
		return nil
	}
	switch {
	case wl.TokenID == "":
		return fmt.Errorf("%w: upstream %q is one_time and the token has no jti", attest.ErrInvalid, wl.Upstream)
	case len(wl.TokenID) > 256:
		return fmt.Errorf("%w: jti longer than 256 bytes", attest.ErrInvalid)
	}
	if err := s.claimOnce(ctx, "upstream\x00"+wl.Upstream+"\x00"+wl.TokenID, wl.Expiry.Add(skew)); err != nil {
		return fmt.Errorf("token of one_time upstream %q: %w", wl.Upstream, err)
	}
	return nil
}

// claimOnce records key in the revocation store until until. It fails with
// attest.ErrInvalid when key was recorded before (a replay: "jti already used")
// or the store refuses the claim, and with attest.ErrUnavailable when the store
// cannot answer (the request then fails closed).
func (s *core) claimOnce(ctx context.Context, key string, until time.Time) error {
	fresh, err := s.store.Claim(ctx, key, until)
	switch {
	case errors.Is(err, revocation.ErrInvalid):
		return fmt.Errorf("%w: %v", attest.ErrInvalid, err)
	case err != nil:
		s.log.ErrorContext(ctx, "revocation store unavailable; cannot check for a replay", slog.String("error", err.Error()))
		return fmt.Errorf("%w: replay check: %v", attest.ErrUnavailable, err)
	case !fresh:
		return fmt.Errorf("%w: jti already used (replay)", attest.ErrInvalid)
	}
	return nil
}
