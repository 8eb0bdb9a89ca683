package attest

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
)

// Verifier verifies one upstream's credentials.
type Verifier interface {
	// Verify checks raw, presented as tokenType (one of the Type* constants), against
	// this upstream and returns the attested workload. Errors wrap one of the sentinel
	// errors of this package.
	Verify(ctx context.Context, raw, tokenType string) (*Workload, error)
}

// ParsedVerifier is a Verifier that can take a token the Router has already parsed
// (ParseInsecure), so the header and payload are decoded once per exchange. It must
// verify the signature over exactly p.Payload before trusting p.Claims.
type ParsedVerifier interface {
	Verifier
	// VerifyParsed is Verify for a token already through ParseInsecure.
	VerifyParsed(ctx context.Context, p *Parsed) (*Workload, error)
}

// X509Verifier verifies X.509-SVIDs, the client certificate chains of mTLS, for one
// SPIFFE trust domain. A Verifier routed by trust domain (Routes.ByTrustDomain) that
// also implements it receives the chains Router.AttestX509 routes to that domain.
type X509Verifier interface {
	// VerifyX509 verifies chain, leaf first as presented in the TLS handshake
	// (tls.ConnectionState.PeerCertificates), as an X.509-SVID of the trust domain
	// and returns the attested workload. Errors wrap one of the sentinel errors of
	// this package.
	VerifyX509(ctx context.Context, chain []*x509.Certificate) (*Workload, error)
}

// Sentinel errors. Every error a Verifier or the Router returns wraps exactly one of
// them, so callers map them with errors.Is. The wrapped detail is for logs, never for
// clients.
var (
	// ErrMalformed: not a well-formed compact JWS of acceptable size and shape.
	ErrMalformed = errors.New("malformed token")
	// ErrUnknownIssuer: no configured upstream claims the token's issuer.
	ErrUnknownIssuer = errors.New("unknown issuer")
	// ErrInvalid: signature, algorithm, key, audience, time or claim checks failed.
	ErrInvalid = errors.New("invalid token")
	// ErrUnavailable: the upstream's keys cannot be obtained right now (fetch
	// failed and no usable cached keys).
	ErrUnavailable = errors.New("upstream keys unavailable")
	// ErrUnsupportedType: the token type presented is not one of the Type* constants
	// (the token itself was not looked at).
	ErrUnsupportedType = errors.New("unsupported token type")
)

// ConditionError is a refusal by one of an upstream's own conditions, which every
// credential of the upstream must satisfy before any policy rule is consulted:
// its subjects, required claims, attribute bounds or CEL condition. It wraps
// ErrInvalid; Check names the condition as configured ("subjects",
// "required_claims./kubernetes.io/namespace", "attribute_bounds.namespace",
// "condition"), so that the refusal can be audited with it.
type ConditionError struct {
	Upstream string
	Check    string
	Detail   string
}

func (e *ConditionError) Error() string {
	return fmt.Sprintf("%v: upstream %q: upstream condition %s refused the token: %s", ErrInvalid, e.Upstream, e.Check, e.Detail)
}

// Unwrap returns ErrInvalid.
func (e *ConditionError) Unwrap() error { return ErrInvalid }
