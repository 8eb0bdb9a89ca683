package attest

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Router hands each credential to the one Verifier configured for it: by the token's
// `iss`, or, for SPIFFE JWT-SVIDs and X.509-SVIDs, by the trust domain of its SPIFFE
// ID. It refuses, before any cryptography and without any network traffic, whatever
// ParseHeaderInsecure refuses and any credential no Verifier claims.
//
// A Router is immutable and safe for concurrent use.
type Router struct {
	byIssuer map[string]Verifier
	byTD     map[string]Verifier // trust domain name -> Verifier
}

// Routes are the Verifiers a Router dispatches to.
type Routes struct {
	// ByIssuer maps each exact issuer string (the `iss` of its tokens) to the
	// Verifier of that upstream (package attest/oidc). Issuers are non-empty.
	ByIssuer map[string]Verifier
	// ByTrustDomain maps each SPIFFE trust domain name, bare and canonical
	// ("prod.example", not "spiffe://prod.example"), to the Verifier of its
	// JWT-SVIDs (package attest/spiffe). A Verifier that also implements
	// X509Verifier receives the domain's X.509-SVIDs from AttestX509. Its
	// Workloads must carry Issuer "spiffe://" + the trust domain.
	ByTrustDomain map[string]Verifier
}

// NewRouter returns a Router over byIssuer, which maps each exact issuer string (the
// `iss` of its tokens) to the Verifier of that upstream. Issuers must be non-empty
// and verifiers non-nil. The map is copied. It is NewRouterRoutes with ByIssuer only.
func NewRouter(byIssuer map[string]Verifier) (*Router, error) {
	if len(byIssuer) == 0 {
		return nil, errors.New("attest: router needs at least one issuer")
	}
	return NewRouterRoutes(Routes{ByIssuer: byIssuer})
}

// NewRouterRoutes returns a Router over routes, which must name at least one
// Verifier. Issuers must be non-empty, trust domains valid canonical SPIFFE trust
// domain names, and verifiers non-nil; every problem is reported. The maps are
// copied.
func NewRouterRoutes(routes Routes) (*Router, error) {
	if len(routes.ByIssuer)+len(routes.ByTrustDomain) == 0 {
		return nil, errors.New("attest: router needs at least one issuer or trust domain")
	}
	r := &Router{
		byIssuer: make(map[string]Verifier, len(routes.ByIssuer)),
		byTD:     make(map[string]Verifier, len(routes.ByTrustDomain)),
	}
	var errs []error
	for _, iss := range slices.Sorted(maps.Keys(routes.ByIssuer)) {
		v := routes.ByIssuer[iss]
		switch {
		case iss == "":
			errs = append(errs, errors.New("attest: empty issuer"))
		case v == nil:
			errs = append(errs, fmt.Errorf("attest: issuer %q has no verifier", iss))
		default:
			r.byIssuer[iss] = v
		}
	}
	for _, name := range slices.Sorted(maps.Keys(routes.ByTrustDomain)) {
		v := routes.ByTrustDomain[name]
		td, err := spiffeid.TrustDomainFromString(name)
		switch {
		case err != nil || td.Name() != name:
			errs = append(errs, fmt.Errorf("attest: %q is not a canonical SPIFFE trust domain name (e.g. prod.example)", name))
		case v == nil:
			errs = append(errs, fmt.Errorf("attest: trust domain %q has no verifier", name))
		default:
			r.byTD[name] = v
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return r, nil
}

// Attest checks raw presented as tokenType (one of the Type* constants), routes it to
// one Verifier and returns the Workload that Verifier attested. Routing, on the
// unverified payload:
//
//  1. a string `iss` that a Routes.ByIssuer entry claims goes to that Verifier;
//  2. otherwise (no `iss`, or one no upstream claims), a `sub` that parses strictly
//     as a SPIFFE ID goes to the Verifier of its trust domain, if one is configured
//     (a JWT-SVID: SPIRE mints them without `iss` unless told otherwise);
//  3. anything else is refused: ErrUnknownIssuer for an unclaimed `iss` or an
//     unconfigured trust domain, ErrMalformed for a malformed SPIFFE ID or a token
//     with neither `iss` nor a SPIFFE `sub`.
//
// An `iss` that is present but not a non-empty string is ErrMalformed. An OIDC
// issuer always wins: a token whose `iss` is configured never reaches a trust
// domain's Verifier, whatever its `sub`. The Verifier's answer is held to the route
// taken (the issuer, or "spiffe://"+trust domain and the routed `sub`).
//
// Errors wrap ErrUnsupportedType, ErrMalformed, ErrUnknownIssuer, ErrInvalid or
// ErrUnavailable; their text is for logs, never for clients.
func (r *Router) Attest(ctx context.Context, raw, tokenType string) (*Workload, error) {
	p, err := ParseInsecure(raw, tokenType)
	if err != nil {
		return nil, err
	}
	iss, hasIss, err := optionalIssuer(p)
	if err != nil {
		return nil, err
	}
	if hasIss {
		if v, ok := r.byIssuer[iss]; ok {
			w, err := verify(ctx, v, p)
			if err != nil {
				return nil, err
			}
			// A verifier checks `iss` itself; holding it to the routed issuer here as
			// well means a misconfigured map cannot let one upstream vouch for
			// another's tokens.
			if w == nil || w.Issuer != iss {
				return nil, fmt.Errorf("%w: verifier for %.128q attested another issuer", ErrInvalid, iss)
			}
			return w, nil
		}
	}
	sub, _ := p.Claims["sub"].(string)
	if len(r.byTD) == 0 || !strings.HasPrefix(sub, spiffeScheme) {
		if hasIss {
			return nil, fmt.Errorf("%w: %.128q", ErrUnknownIssuer, iss)
		}
		return nil, fmt.Errorf("%w: iss missing and sub is not a SPIFFE ID", ErrMalformed)
	}
	id, err := spiffeid.FromString(sub)
	if err != nil {
		return nil, fmt.Errorf("%w: sub is not a valid SPIFFE ID: %w", ErrMalformed, err)
	}
	td := id.TrustDomain().Name()
	v, ok := r.byTD[td]
	if !ok {
		return nil, fmt.Errorf("%w: SPIFFE trust domain %.128q", ErrUnknownIssuer, td)
	}
	w, err := verify(ctx, v, p)
	if err != nil {
		return nil, err
	}
	return checkTrustDomainRoute(w, td, sub)
}

// AttestX509 routes a client certificate chain (leaf first, as
// tls.ConnectionState.PeerCertificates holds it) by the trust domain of the leaf's
// SPIFFE ID to that trust domain's X509Verifier and returns the Workload it
// attested. A leaf without exactly one well-formed SPIFFE ID URI SAN is ErrMalformed;
// a trust domain without a Verifier, or whose Verifier does not implement
// X509Verifier, is ErrUnknownIssuer. The answer is held to the route taken (Issuer
// "spiffe://"+trust domain, Subject the leaf's SPIFFE ID).
func (r *Router) AttestX509(ctx context.Context, chain []*x509.Certificate) (*Workload, error) {
	if len(chain) == 0 || chain[0] == nil {
		return nil, fmt.Errorf("%w: no client certificate", ErrMalformed)
	}
	id, err := x509svid.IDFromCert(chain[0])
	if err != nil {
		return nil, fmt.Errorf("%w: client certificate is not an X.509-SVID: %w", ErrMalformed, err)
	}
	td := id.TrustDomain().Name()
	v, ok := r.byTD[td]
	if !ok {
		return nil, fmt.Errorf("%w: SPIFFE trust domain %.128q", ErrUnknownIssuer, td)
	}
	xv, ok := v.(X509Verifier)
	if !ok {
		return nil, fmt.Errorf("%w: SPIFFE trust domain %.128q verifies no X.509-SVIDs", ErrUnknownIssuer, td)
	}
	w, err := xv.VerifyX509(ctx, chain)
	if err != nil {
		return nil, err
	}
	return checkTrustDomainRoute(w, td, id.String())
}

// spiffeScheme prefixes every SPIFFE ID.
const spiffeScheme = "spiffe://"

// checkTrustDomainRoute holds a trust domain's Verifier to the route taken: its
// Workload must name that trust domain as issuer and the routed SPIFFE ID as subject.
func checkTrustDomainRoute(w *Workload, td, id string) (*Workload, error) {
	if w == nil || w.Issuer != spiffeScheme+td || w.Subject != id {
		return nil, fmt.Errorf("%w: verifier for trust domain %.128q attested another identity", ErrInvalid, td)
	}
	return w, nil
}

// verify hands p to v, parsed when v can take it so.
func verify(ctx context.Context, v Verifier, p *Parsed) (*Workload, error) {
	if pv, ok := v.(ParsedVerifier); ok {
		return pv.VerifyParsed(ctx, p)
	}
	return v.Verify(ctx, p.Raw, p.TokenType)
}

// Issuers returns the issuers the Router routes, sorted.
func (r *Router) Issuers() []string {
	return slices.Sorted(maps.Keys(r.byIssuer))
}

// TrustDomains returns the SPIFFE trust domains the Router routes, sorted.
func (r *Router) TrustDomains() []string {
	return slices.Sorted(maps.Keys(r.byTD))
}
