package attest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
)

// Router hands each credential to the one Verifier configured for its issuer. It
// refuses, before any cryptography and without any network traffic, whatever
// ParseHeaderInsecure refuses and any token whose `iss` no Verifier claims.
//
// A Router is immutable and safe for concurrent use.
type Router struct {
	byIssuer map[string]Verifier
}

// NewRouter returns a Router over byIssuer, which maps each exact issuer string (the
// `iss` of its tokens) to the Verifier of that upstream. Issuers must be non-empty
// and verifiers non-nil. The map is copied.
func NewRouter(byIssuer map[string]Verifier) (*Router, error) {
	if len(byIssuer) == 0 {
		return nil, errors.New("attest: router needs at least one issuer")
	}
	m := make(map[string]Verifier, len(byIssuer))
	var errs []error
	for iss, v := range byIssuer {
		if iss == "" {
			errs = append(errs, errors.New("attest: empty issuer"))
			continue
		}
		if v == nil {
			errs = append(errs, fmt.Errorf("attest: issuer %q has no verifier", iss))
			continue
		}
		m[iss] = v
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &Router{byIssuer: m}, nil
}

// Attest checks raw presented as tokenType (one of the Type* constants), routes it by
// its unverified `iss` to that issuer's Verifier and returns the Workload the
// Verifier attested. Errors wrap ErrUnsupportedType, ErrMalformed, ErrUnknownIssuer,
// ErrInvalid or ErrUnavailable; their text is for logs, never for clients.
func (r *Router) Attest(ctx context.Context, raw, tokenType string) (*Workload, error) {
	p, err := ParseInsecure(raw, tokenType)
	if err != nil {
		return nil, err
	}
	iss, err := issuerOf(p)
	if err != nil {
		return nil, err
	}
	v, ok := r.byIssuer[iss]
	if !ok {
		return nil, fmt.Errorf("%w: %.128q", ErrUnknownIssuer, iss)
	}
	var w *Workload
	if pv, ok := v.(ParsedVerifier); ok {
		w, err = pv.VerifyParsed(ctx, p)
	} else {
		w, err = v.Verify(ctx, raw, tokenType)
	}
	if err != nil {
		return nil, err
	}
	// A verifier checks `iss` itself; holding it to the routed issuer here as well
	// means a misconfigured map cannot let one upstream vouch for another's tokens.
	if w == nil || w.Issuer != iss {
		return nil, fmt.Errorf("%w: verifier for %.128q attested another issuer", ErrInvalid, iss)
	}
	return w, nil
}

// Issuers returns the issuers the Router routes, sorted.
func (r *Router) Issuers() []string {
	return slices.Sorted(maps.Keys(r.byIssuer))
}
