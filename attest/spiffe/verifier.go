package spiffe

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/internal/jwtcore"
	"github.com/safeconduct/safeconduct/internal/keycache"
)

// MaxChainLength is the longest X.509-SVID chain (leaf and intermediates) looked at.
const MaxChainLength = 16

// jwtAlgorithm returns the JWS algorithm of a JWT-SVID header: RSA and ECDSA only
// (JWT-SVID §3, go-spiffe's jwtsvid list), no EdDSA.
func jwtAlgorithm(alg string) (jose.SignatureAlgorithm, bool) {
	kind, ok := jwtcore.KeyTypeFor(alg)
	return jose.SignatureAlgorithm(alg), ok && kind != jwtcore.Ed25519
}

// Verifier verifies the JWT-SVIDs and X.509-SVIDs of one SPIFFE trust domain against
// that trust domain's bundle, and only that one. It is safe for concurrent use.
type Verifier struct {
	s      *settings
	issuer string // "spiffe://" + trust domain: Workload.Issuer
	cache  *bundleCache
	ep     *endpoint       // nil unless BundleEndpoint
	wl     *workloadSource // nil unless WorkloadAPISocket

	closeOnce sync.Once
	closeErr  error
}

var (
	_ attest.ParsedVerifier = (*Verifier)(nil)
	_ attest.X509Verifier   = (*Verifier)(nil)
)

// New validates cfg, reporting every problem at once, and returns its Verifier. A
// BundleFile (and an https_spiffe BootstrapBundle) is read and vetted now; a bundle
// endpoint is fetched on first use (or after one refresh interval) and then
// refreshed in the background, and the Workload API is watched in the background, so that the STS starts while they are down (verification fails with
// attest.ErrUnavailable until a bundle is at hand). ctx supplies values, not
// cancellation: call Close to stop the Verifier's background work.
func New(ctx context.Context, cfg Config) (*Verifier, error) {
	s, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	v := &Verifier{s: s, issuer: s.td.IDString()}
	switch {
	case s.BundleFile != "":
		v.cache, err = fileSource(ctx, s)
	case s.BundleEndpoint != nil:
		v.cache, v.ep, err = endpointSource(ctx, s)
	default:
		what := "workload API " + s.WorkloadAPISocket
		cfg := cacheConfig(ctx, s, what, nil)
		cfg.MaxStale = s.WorkloadAPIMaxStale
		v.cache = keycache.New(cfg)
		if v.wl, err = startWorkloadSource(ctx, s, v.cache, what); err != nil {
			v.cache.Close()
		}
	}
	if err != nil {
		return nil, err
	}
	return v, nil
}

// Close stops background fetches and the Workload API watch; afterwards every
// verification fails with attest.ErrUnavailable. It is idempotent.
func (v *Verifier) Close() error {
	v.closeOnce.Do(func() {
		if v.wl != nil {
			v.closeErr = v.wl.close()
		}
		if v.ep != nil {
			v.ep.close()
		}
		v.cache.Close()
	})
	return v.closeErr
}

// Name returns the upstream's configured name.
func (v *Verifier) Name() string { return v.s.Name }

// TrustDomain returns the trust domain, the key to route its SVIDs by.
func (v *Verifier) TrustDomain() spiffeid.TrustDomain { return v.s.td }

// Issuer returns "spiffe://" + the trust domain: the Issuer of every Workload the
// Verifier attests.
func (v *Verifier) Issuer() string { return v.issuer }

// Stats are counters of a Verifier's bundle source, for metrics.
type Stats struct {
	// Requests counts bundle endpoint requests made (zero for other sources).
	Requests uint64
	// Updates counts bundles accepted (the first included); Failures counts
	// fetches, reads or pushed updates that failed or were refused.
	Updates, Failures uint64
	// JWTAuthorities and X509Authorities count the authorities held now;
	// BundleUpdated is when the bundle held was obtained (zero without one).
	JWTAuthorities, X509Authorities int
	BundleUpdated                   time.Time
	// BundleBehindSince is, for the Workload API, since when the bundle may be
	// behind the agent's (a stream broke or an update was refused): it is
	// unusable WorkloadAPIMaxStale after it. Zero while current, and for other
	// sources.
	BundleBehindSince time.Time
}

// Stats returns the Verifier's counters.
func (v *Verifier) Stats() Stats {
	st := Stats{Updates: v.cache.Updates(), Failures: v.cache.Failures(), BundleBehindSince: v.cache.LaggingSince()}
	if v.ep != nil {
		st.Requests = v.ep.requests.Load()
	}
	if cur := v.cache.Load(); cur != nil {
		st.JWTAuthorities = len(cur.V.jwt)
		if cur.V.x509 != nil {
			st.X509Authorities = len(cur.V.x509.X509Authorities())
		}
		st.BundleUpdated = cur.Fetched
	}
	return st
}

// Verify checks raw, a JWT-SVID presented as tokenType, and returns the attested
// Workload. In order: the checks of attest.ParseHeaderInsecure; an RSA or ECDSA
// algorithm (no EdDSA, HMAC or none); `typ` absent or "JWT"; a `kid`; a `sub` that
// is a well-formed SPIFFE ID of this trust domain with a non-empty path (a token of
// another trust domain is refused before any key is looked up); the JWT authority
// of this trust domain's bundle with that kid (an unknown kid triggers one rate
// limited, shared refresh of a fetched bundle), fitting the alg; exactly one
// signature, verified; and only then the claims: `aud` (one of Audiences), `exp`
// (required), `nbf` and `iat` with at most ClockSkew of leeway, and the age of
// `iat` when MaxTokenAge is set (package internal/jwtcore, as for OIDC upstreams);
// then the trust domain's Subjects. `iss` is not checked (the Router routed the token here because
// no OIDC upstream claims it). Errors wrap attest.ErrUnsupportedType, ErrMalformed,
// ErrInvalid or ErrUnavailable.
func (v *Verifier) Verify(ctx context.Context, raw, tokenType string) (*attest.Workload, error) {
	p, err := attest.ParseInsecure(raw, tokenType)
	if err != nil {
		return nil, err
	}
	return v.VerifyParsed(ctx, p)
}

// VerifyParsed is Verify for a token already parsed by attest.ParseInsecure (the
// Router's path). The signature is verified over exactly p.Payload before p.Claims
// is trusted.
func (v *Verifier) VerifyParsed(ctx context.Context, p *attest.Parsed) (*attest.Workload, error) {
	hdr := p.Header
	alg, ok := jwtAlgorithm(hdr.Alg)
	switch {
	case !ok:
		return nil, v.invalid("alg %s not allowed for JWT-SVIDs", hdr.Alg)
	case hdr.Typ != "" && hdr.Typ != "JWT" && hdr.Typ != "JOSE":
		return nil, v.invalid("typ %.32q is not a JWT-SVID's (JWT or JOSE)", hdr.Typ)
	case hdr.Kid == "":
		return nil, v.invalid("kid missing")
	}
	// The trust domain comes from the unverified sub, as in go-spiffe; a token of
	// another trust domain never reaches this one's keys.
	sub, _ := p.Claims["sub"].(string)
	id, err := v.checkID(sub)
	if err != nil {
		return nil, err
	}
	cur, err := v.cache.Current(ctx)
	if err != nil {
		return nil, v.unavailable(err)
	}
	if cur.V.jwt == nil {
		return nil, v.unavailable(fmt.Errorf("%w: no JWT bundle received yet", attest.ErrUnavailable))
	}
	k := cur.V.jwt[hdr.Kid]
	if k == nil {
		// The trust domain may have rotated: one refresh, shared and rate limited.
		next, err := v.cache.Refresh(ctx, cur)
		if err != nil {
			return nil, v.unavailable(err)
		}
		if next != nil && next != cur {
			k = next.V.jwt[hdr.Kid]
		}
	}
	switch {
	case k == nil:
		return nil, v.invalid("no JWT authority with kid %.64q", hdr.Kid)
	case !k.fits(hdr.Alg):
		return nil, v.invalid("alg %s does not fit JWT authority %.64q", hdr.Alg, hdr.Kid)
	}
	// Only once the signature is verified over these very bytes are the claims
	// decoded from them trusted: an expired forged token fails as forged.
	err = p.VerifySignature([]jose.SignatureAlgorithm{alg}, func() (any, error) { return k.pub, nil })
	if err != nil {
		return nil, fmt.Errorf("upstream %q: %w", v.s.Name, err)
	}
	return v.jwtWorkload(id, p.Claims)
}

// jwtWorkload checks the verified claims of a JWT-SVID and builds the Workload.
func (v *Verifier) jwtWorkload(id spiffeid.ID, c map[string]any) (*attest.Workload, error) {
	aud, err := jwtcore.CheckAudience(c, v.s.Audiences)
	if err != nil {
		return nil, v.invalid("%v", err)
	}
	times, err := jwtcore.CheckTimes(c, v.s.Now(), jwtcore.TimeRules{Skew: v.s.ClockSkew, MaxAge: v.s.MaxTokenAge})
	if err != nil {
		return nil, v.invalid("%v", err)
	}
	var jti string
	if j, ok := c["jti"]; ok {
		if jti, ok = j.(string); !ok {
			return nil, v.invalid("jti not a string")
		}
	}
	if err := v.checkBreadth(id); err != nil {
		return nil, err
	}
	w := &attest.Workload{
		Upstream:   v.s.Name,
		Issuer:     v.issuer,
		Subject:    id.String(),
		ID:         id.String(),
		TokenID:    jti,
		Audience:   aud,
		Expiry:     times.Expiry,
		IssuedAt:   times.IssuedAt,
		Attributes: v.attributes(id),
		Claims:     c,
	}
	if err := v.guard(w); err != nil {
		return nil, err
	}
	return w, nil
}

// guard applies the upstream's Guard to an attested workload.
func (v *Verifier) guard(w *attest.Workload) error {
	if r := v.s.Guard.Check(w.Claims, w.Attributes); r != nil {
		return &attest.ConditionError{Upstream: v.s.Name, Check: r.Check, Detail: r.Detail}
	}
	return nil
}

// VerifyX509 verifies chain (leaf first, as presented in the TLS handshake) as an
// X.509-SVID of this trust domain with go-spiffe's x509svid.Verify at the
// Verifier's clock: a leaf with exactly one URI SAN, a well-formed SPIFFE ID of
// this trust domain with a non-empty path (checked before the bundle is looked
// at), not a CA, without keyCertSign or cRLSign, chaining to one of this trust
// domain's X.509 authorities through the chain's intermediates, every certificate
// within its validity. Then the trust domain's Subjects. The Workload's Expiry is
// the earliest NotAfter of the verified chain, IssuedAt the leaf's NotBefore, and
// Claims hold "sub" and "x5t#S256" (Thumbprint of the leaf). Errors wrap
// attest.ErrMalformed, ErrInvalid or ErrUnavailable.
func (v *Verifier) VerifyX509(ctx context.Context, chain []*x509.Certificate) (*attest.Workload, error) {
	if len(chain) == 0 || len(chain) > MaxChainLength {
		return nil, fmt.Errorf("%w: upstream %q: chain of %d certificates (allowed 1 to %d)", attest.ErrMalformed, v.s.Name, len(chain), MaxChainLength)
	}
	for _, c := range chain {
		if c == nil {
			return nil, fmt.Errorf("%w: upstream %q: nil certificate in chain", attest.ErrMalformed, v.s.Name)
		}
	}
	leaf := chain[0]
	uid, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return nil, v.invalid("leaf is not an X.509-SVID: %v", err)
	}
	id, err := v.checkID(uid.String())
	if err != nil {
		return nil, err
	}
	cur, err := v.cache.Current(ctx)
	if err != nil {
		return nil, v.unavailable(err)
	}
	if cur.V.x509 == nil {
		return nil, v.unavailable(fmt.Errorf("%w: no X.509 bundle received yet", attest.ErrUnavailable))
	}
	// The snapshot is an x509bundle.Source of this trust domain only.
	_, chains, err := x509svid.Verify(chain, cur.V, x509svid.WithTime(v.s.Now()))
	if err != nil {
		return nil, v.invalid("%v", err)
	}
	if err := v.checkBreadth(id); err != nil {
		return nil, err
	}
	expiry := leaf.NotAfter
	for _, c := range chains[0] {
		if c.NotAfter.Before(expiry) {
			expiry = c.NotAfter
		}
	}
	w := &attest.Workload{
		Upstream:   v.s.Name,
		Issuer:     v.issuer,
		Subject:    id.String(),
		ID:         id.String(),
		Expiry:     expiry,
		IssuedAt:   leaf.NotBefore,
		Attributes: v.attributes(id),
		Claims:     map[string]any{"sub": id.String(), "x5t#S256": Thumbprint(leaf)},
	}
	if err := v.guard(w); err != nil {
		return nil, err
	}
	return w, nil
}

// Thumbprint returns the base64url (unpadded) SHA-256 of cert's DER encoding, the
// `x5t#S256` confirmation of RFC 8705 §3.1 that binds a token to the certificate.
func Thumbprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// checkID parses sub strictly as a SPIFFE ID of this trust domain naming a
// workload (a non-empty path) and within attest.CheckSubject.
func (v *Verifier) checkID(sub string) (spiffeid.ID, error) {
	if err := attest.CheckSubject(sub); err != nil {
		return spiffeid.ID{}, v.invalid("sub: %v", err)
	}
	id, err := spiffeid.FromString(sub)
	switch {
	case err != nil:
		return id, v.invalid("sub is not a valid SPIFFE ID: %v", err)
	case !id.MemberOf(v.s.td):
		return id, v.invalid("SPIFFE ID of trust domain %q", id.TrustDomain())
	case id.Path() == "":
		return id, v.invalid("SPIFFE ID names the trust domain, not a workload")
	}
	return id, nil
}

// checkBreadth applies Subjects.
func (v *Verifier) checkBreadth(id spiffeid.ID) error {
	if len(v.s.subjects) == 0 {
		return nil
	}
	s := id.String()
	for i := range v.s.subjects {
		if v.s.subjects[i].Match(s) {
			return nil
		}
	}
	return &attest.ConditionError{Upstream: v.s.Name, Check: "subjects", Detail: fmt.Sprintf("subject outside the upstream's allowed subjects (sub %.128q)", s)}
}

// attributes are the Workload's: the captures of the first matching path template,
// then sub, iss, trust_domain and path.
func (v *Verifier) attributes(id spiffeid.ID) map[string]string {
	m := make(map[string]string, 8)
	path := id.Path()
	for i := range v.s.templates {
		if v.s.templates[i].match(path, m) {
			break
		}
	}
	m["sub"] = id.String()
	m["iss"] = v.issuer
	m["trust_domain"] = v.s.td.Name()
	m["path"] = path
	return m
}

func (v *Verifier) invalid(format string, args ...any) error {
	return fmt.Errorf("%w: upstream %q: %s", attest.ErrInvalid, v.s.Name, fmt.Sprintf(format, args...))
}

func (v *Verifier) unavailable(err error) error {
	return fmt.Errorf("upstream %q: %w", v.s.Name, err)
}
