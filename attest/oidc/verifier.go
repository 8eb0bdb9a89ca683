package oidc

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/internal/jwtcore"
	"github.com/safeconduct/safeconduct/internal/keycache"
)

// MaxSubjectLength is the longest `sub` accepted, in bytes.
const MaxSubjectLength = attest.MaxSubjectLength

// Verifier verifies the JWTs of one OIDC upstream against its cached keys. It is safe
// for concurrent use.
type Verifier struct {
	s     *settings
	keys  *keySet
	fetch *fetcher // nil for a JWKSFile
	algs  []jose.SignatureAlgorithm
	log   *slog.Logger

	attrAbsent, attrErrors atomic.Uint64
}

var _ attest.Verifier = (*Verifier)(nil)

// New validates cfg and returns its Verifier. A JWKSFile is read and vetted now; a
// remote key set (JWKSURI or discovery) is fetched lazily, on first use, so that the
// STS starts while an upstream is down. ctx supplies values (not cancellation, which
// is ignored, as go-oidc does) to the Verifier's fetches.
func New(ctx context.Context, cfg Config) (*Verifier, error) {
	s, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	v := &Verifier{s: s, log: s.Logger.With("upstream", s.Name)}
	for _, a := range s.Algorithms {
		v.algs = append(v.algs, jose.SignatureAlgorithm(a))
	}
	var uri string // the document the last fetch read, for the cache's logs
	keys := v.keySetConfig(ctx, &uri)
	if s.JWKSFile != "" {
		snap, err := readJWKSFile(s.JWKSFile, s.MaxResponseBytes)
		if err != nil {
			return nil, fmt.Errorf("oidc upstream %q: jwks_file: %w", s.Name, err)
		}
		// The file is re-read like a jwks_uri is fetched (every CacheTTL, and at
		// most once per RefreshMinInterval for an unknown kid), so a rotation
		// written into it (a Secret or ConfigMap update) is picked up without a
		// restart. A file that cannot be read or parsed keeps the last good keys,
		// which never go stale: they are the operator's, not a network's.
		keys.MaxStale = 0
		keys.Fetch = func(context.Context) (*snapshot, error) {
			uri = s.JWKSFile
			snap, err := readJWKSFile(s.JWKSFile, s.MaxResponseBytes)
			if err != nil {
				return nil, fmt.Errorf("jwks_file: %w", err)
			}
			return snap, nil
		}
		v.keys = keycache.New(keys)
		v.keys.Store(snap)
		return v, nil
	}
	v.fetch = &fetcher{
		client:  newFetchClient(s.HTTPClient, s.FetchTimeout, s.MaxResponseBytes),
		issuer:  s.Issuer,
		jwksURI: s.JWKSURI,
		check:   s.checkFetchURL,
	}
	keys.Fetch = func(ctx context.Context) (*snapshot, error) {
		body, u, err := v.fetch.jwks(ctx)
		uri = u
		if err != nil {
			return nil, err
		}
		snap, err := parseJWKS(body)
		if err != nil {
			return nil, fmt.Errorf("jwks %s refused: %w", u, err)
		}
		return snap, nil
	}
	v.keys = keycache.New(keys)
	return v, nil
}

func readJWKSFile(path string, max int64) (*snapshot, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, errTooLarge
	}
	return parseJWKS(data)
}

// Name returns the upstream's configured name.
func (v *Verifier) Name() string { return v.s.Name }

// Issuer returns the upstream's issuer, the key to route its tokens by.
func (v *Verifier) Issuer() string { return v.s.Issuer }

// Stats are counters of a Verifier's key fetching, for metrics.
type Stats struct {
	// Requests counts discovery and JWKS requests made.
	Requests uint64
	// Updates counts key sets accepted (the first included); Failures counts key
	// refreshes that failed or fetched a set that was refused.
	Updates, Failures uint64
	// Keys is the number of usable keys cached now; KeysFetched when they were
	// fetched (zero for a JWKSFile or before the first fetch).
	Keys        int
	KeysFetched time.Time
	// AttributesAbsent counts attributes of the Config.Attributes mapping left
	// absent on attested tokens, for any reason (mostly a claim the token does not
	// carry); AttributeErrors counts those among them whose expression failed (a
	// claim of the wrong type, an unguarded missing claim, the cost limit).
	AttributesAbsent, AttributeErrors uint64
}

// Stats returns the Verifier's counters.
func (v *Verifier) Stats() Stats {
	var st Stats
	if v.fetch != nil {
		st.Requests = v.fetch.requests.Load()
	}
	st.AttributesAbsent = v.attrAbsent.Load()
	st.AttributeErrors = v.attrErrors.Load()
	st.Updates = v.keys.Updates()
	st.Failures = v.keys.Failures()
	if cur := v.keys.Load(); cur != nil {
		st.Keys = len(cur.V.keys)
		st.KeysFetched = cur.Fetched
	}
	return st
}

// Verify checks raw, presented as tokenType, and returns the attested Workload. In
// order: the checks of attest.ParseHeaderInsecure; the upstream's algorithm list;
// go-jose parsing with exactly one signature; the key by kid (one shared, rate
// limited refresh for an unknown kid) fitting the alg; the signature; and only then
// the claims: iss, aud, exp, nbf, iat, max age, sub, the upstream's allowed
// subjects and required claims. Attributes are mapped last, then checked with
// the upstream's Guard (bounds, condition). Errors wrap
// attest.ErrUnsupportedType, ErrMalformed, ErrInvalid or ErrUnavailable; a
// refusal by the upstream's subjects, required claims or Guard is an
// *attest.ConditionError.
func (v *Verifier) Verify(ctx context.Context, raw, tokenType string) (*attest.Workload, error) {
	p, err := attest.ParseInsecure(raw, tokenType)
	if err != nil {
		return nil, err
	}
	return v.VerifyParsed(ctx, p)
}

// VerifyParsed is Verify for a token already parsed by attest.ParseInsecure (the
// Router's path): the header and payload are not decoded a second time. The
// signature is verified over exactly p.Payload before p.Claims is looked at.
func (v *Verifier) VerifyParsed(ctx context.Context, p *attest.Parsed) (*attest.Workload, error) {
	hdr := p.Header
	if !v.s.algs[hdr.Alg] {
		return nil, v.invalid("alg %s not allowed for this upstream", hdr.Alg)
	}
	// Only once the signature is verified over these very bytes are the claims
	// decoded from them trusted: an expired forged token fails as forged.
	err := p.VerifySignature(v.algs, func() (any, error) {
		k, err := v.key(ctx, hdr.Kid, hdr.Alg)
		if err != nil {
			return nil, err
		}
		return k.pub, nil
	})
	if err != nil {
		return nil, fmt.Errorf("upstream %q: %w", v.s.Name, err)
	}
	return v.workload(p.Claims)
}

func (v *Verifier) invalid(format string, args ...any) error {
	return fmt.Errorf("%w: upstream %q: %s", attest.ErrInvalid, v.s.Name, fmt.Sprintf(format, args...))
}

// workload checks verified claims and builds the Workload.
func (v *Verifier) workload(c map[string]any) (*attest.Workload, error) {
	if iss, _ := c["iss"].(string); iss != v.s.Issuer {
		return nil, v.invalid("iss %.128q is not the upstream's issuer", iss)
	}
	aud, err := jwtcore.CheckAudience(c, v.s.Audiences)
	if err != nil {
		return nil, v.invalid("%v", err)
	}
	times, err := jwtcore.CheckTimes(c, v.s.Now(), jwtcore.TimeRules{Skew: v.s.ClockSkew, MaxAge: v.s.MaxTokenAge})
	if err != nil {
		return nil, v.invalid("%v", err)
	}

	sub, ok := c["sub"].(string)
	if !ok {
		return nil, v.invalid("sub missing or not a string")
	}
	if err := attest.CheckSubject(sub); err != nil {
		return nil, v.invalid("sub: %v", err)
	}
	var jti string
	if j, ok := c["jti"]; ok {
		if jti, ok = j.(string); !ok {
			return nil, v.invalid("jti not a string")
		}
	}

	if len(v.s.subjects) > 0 && !v.allowedSubject(sub) {
		return nil, v.refused("subjects", "subject outside the upstream's allowed subjects (sub %.128q)", sub)
	}
	for i := range v.s.required {
		r := &v.s.required[i]
		val, _ := r.path.Lookup(c)
		s, ok := val.(string)
		if !ok {
			return nil, v.refused("required_claims."+r.name, "required claim %.128q missing or not a string", r.name)
		}
		if !r.pattern.Match(s) {
			return nil, v.refused("required_claims."+r.name, "required claim %.128q outside the upstream's allowed values", r.name)
		}
	}

	w := &attest.Workload{
		Upstream: v.s.Name,
		Issuer:   v.s.Issuer,
		Subject:  sub,
		ID:       sub,
		TokenID:  jti,
		Audience: aud,
		Expiry:   times.Expiry,
		IssuedAt: times.IssuedAt,
		Claims:   c,
	}
	w.Attributes = v.attributes(c, jti)
	w.Attributes["sub"] = sub
	w.Attributes["iss"] = v.s.Issuer
	if r := v.s.Guard.Check(c, w.Attributes); r != nil {
		return nil, v.refused(r.Check, "%s", r.Detail)
	}
	return w, nil
}

// refused is the refusal of one of the upstream's own conditions.
func (v *Verifier) refused(check, format string, args ...any) error {
	return &attest.ConditionError{Upstream: v.s.Name, Check: check, Detail: fmt.Sprintf(format, args...)}
}

func (v *Verifier) allowedSubject(sub string) bool {
	for i := range v.s.subjects {
		if v.s.subjects[i].Match(sub) {
			return true
		}
	}
	return false
}

// attributes applies the upstream's mapping to verified claims. Failures leave
// attributes absent, never refuse the token: they are counted and logged.
func (v *Verifier) attributes(c map[string]any, jti string) map[string]string {
	m := v.s.Attributes
	if m == nil {
		return make(map[string]string, 2)
	}
	attrs, err := m.Apply(c)
	if absent := m.Len() - len(attrs); absent > 0 {
		v.attrAbsent.Add(uint64(absent))
	}
	if err != nil {
		v.attrErrors.Add(uint64(countErrors(err)))
		v.log.Debug("attributes absent after failed expressions", "jti", jti, "error", err)
	}
	return attrs
}

// countErrors counts the errors joined in err.
func countErrors(err error) int {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return len(j.Unwrap())
	}
	return 1
}
