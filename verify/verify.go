package verify

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/internal/jwtcore"
	"github.com/safeconduct/safeconduct/revocation"
)

// Errors returned by Verify, always wrapped with the detail. They never carry an
// HTTP status: Middleware maps them (401 for ErrInvalid and ErrRevoked, 503 for
// ErrStale).
var (
	// ErrInvalid: the token is not a valid access token of this issuer for this
	// audience (malformed, bad signature, wrong issuer, audience or typ, expired,
	// not yet valid, a required claim missing, or the signing keys unavailable).
	ErrInvalid = errors.New("invalid access token")
	// ErrRevoked: the token is valid but an active revoke entry of the STS's
	// revocation feed matches it.
	ErrRevoked = errors.New("access token revoked")
	// ErrStale: the token could not be checked against revocation because the local
	// copy of the feed has no snapshot yet or has not heard from the STS for longer
	// than Config.MaxStale. Retry later; do not treat the token as invalid.
	ErrStale = errors.New("revocation data stale")
)

// Defaults and bounds of Config.
const (
	DefaultMaxStale = 30 * time.Second
	// MinMaxStale keeps MaxStale well above the STS's heartbeat interval
	// (revocation.HeartbeatInterval, 5 s).
	MinMaxStale = 10 * time.Second
	MaxLeeway   = 60 * time.Second
	// maxTokenSize bounds the compact JWS accepted by Verify.
	maxTokenSize = 16 << 10
)

// Config configures a Verifier. Issuer and Audience are required.
type Config struct {
	// Issuer is the STS's issuer URL, exactly as in its tokens' `iss` (https, or
	// http on a loopback address). Discovery is read from
	// Issuer + "/.well-known/openid-configuration" and must name the same issuer.
	Issuer string
	// Audience is this API's own audience: a token is accepted only when its `aud`
	// contains it. Never empty.
	Audience string
	// HTTPClient is used for discovery, the JWKS and the revocation feed (default: a
	// client with TLS 1.2+ and the system roots). Its Timeout, if any, is not
	// applied to the long-lived feed stream; each request gets its own deadline.
	HTTPClient *http.Client

	// FeedToken returns the bearer credential for the STS's revocation feed
	// (GET /revocations and /revocations/stream), which the STS authorizes for the
	// admin action read_feed. It is called before every feed request, so it may
	// rotate. It may return "" when HTTPClient authenticates with a client
	// certificate instead. When FeedToken is set, the feed is kept in sync in the
	// background and Verify fails closed (ErrStale) until the first snapshot has
	// arrived and whenever the STS has not been heard from for MaxStale.
	// When FeedToken is nil, revocation is NOT checked: a revoked token is accepted
	// until it expires.
	FeedToken func(ctx context.Context) (string, error)
	// MaxStale bounds how long the local copy of the revocation feed may go without
	// an event or heartbeat from the STS before tokens are refused with ErrStale
	// (default 30 s, at least 10 s; the STS sends a heartbeat every 5 s).
	MaxStale time.Duration
	// RequireFeed makes the revocation feed mandatory: New fails when FeedToken is
	// nil (and Revocations too). Set it in production so that a missing credential
	// cannot silently turn revocation checking off.
	RequireFeed bool

	// Keys, when set, is where the issuer's signing keys come from instead of its
	// discovery document and JWKS (e.g. StaticKeys, for tests or keys distributed
	// out of band): New then makes no request for keys and accepts every
	// asymmetric algorithm. Default: discovery.
	Keys KeySource
	// Revocations, when set, is what tokens are checked against instead of the
	// revocation feed (e.g. StaticRevocations). FeedToken must then be nil.
	Revocations RevocationSource
	// StatusLists checks each token against the Token Status List its status
	// claim names (draft-ietf-oauth-status-list-20) instead of the revocation
	// feed: no admin credential is needed. Lists are fetched from the issuer only
	// (a uri under Issuer + "/statuslists/"), checked (typ statuslist+jwt, a key
	// of the issuer, sub, exp), and kept until their ttl. Verify fails closed: a
	// token without a status claim or with an index outside its list is
	// ErrInvalid, a list that cannot be fetched or checked ErrStale, status 1
	// ErrRevoked. FeedToken and Revocations must then be nil; it satisfies
	// RequireFeed.
	StatusLists bool

	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives feed and verification events (default slog.Default()). Tokens
	// are never logged, only their jti or SHA-256.
	Logger *slog.Logger
	// Leeway is the clock skew tolerated for exp, nbf and iat (default 0, at most
	// 60 s).
	Leeway time.Duration

	// Feed reconnection and idle bounds; zero means the defaults. Tests shorten them.
	minBackoff, maxBackoff, streamIdle time.Duration
}

// Verifier verifies safeconduct access tokens for one audience. It is safe for
// concurrent use; Close stops its background work.
type Verifier struct {
	leeway   time.Duration
	audience string
	now      func() time.Time
	log      *slog.Logger
	oidc     *oidc.IDTokenVerifier
	jwks     *jwksKeys        // nil with Config.Keys
	revs     RevocationSource // nil: revocation is not checked
	feed     *feed            // nil unless revs is the feed
	status   *statusLists     // nil unless Config.StatusLists

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// Token is a verified access token.
type Token struct {
	Subject  string // sub: the upstream subject
	ClientID string // client_id: the workload identity (the actor's under delegation)
	Upstream string // upstream: the STS upstream that vouched for the subject
	ID       string // jti
	// KeyID is the kid of the STS key (in its JWKS) that verified the signature.
	KeyID    string
	Audience []string
	Scopes   []string // scope, split on spaces
	IssuedAt time.Time
	Expiry   time.Time
	// Act is the delegation chain (RFC 8693 §4.1), current actor outermost; nil
	// without delegation.
	Act map[string]any
	// Attributes are the workload attributes the STS's policy copied into the token.
	Attributes map[string]string
	// Claims are all claims as decoded JSON.
	Claims map[string]any
}

// HasScope reports whether the token was granted scope s.
func (t *Token) HasScope(s string) bool { return slices.Contains(t.Scopes, s) }

// Status describes the local copy of the revocation feed.
type Status struct {
	// Feed is false when no FeedToken is configured (revocation is not checked).
	Feed bool
	// Synced is true once a snapshot has been applied.
	Synced bool
	// Stale is true when Verify refuses tokens with ErrStale right now.
	Stale bool
	// Cursor is the feed position the local copy is current to.
	Cursor string
	// Entries is the number of revoke entries held (expired ones are dropped at
	// each heartbeat).
	Entries int
	// LastContact is when the STS was last heard from (snapshot, event or
	// heartbeat); zero before the first.
	LastContact time.Time
	// LastError is the last feed error since the last successful contact, or nil.
	LastError error
}

// New discovers the issuer with go-oidc (the discovery document must name exactly
// cfg.Issuer), fetches its JWKS, and starts keeping the revocation feed in sync when
// cfg.FeedToken is set. With cfg.Keys, there is no discovery and no JWKS. ctx bounds
// discovery and the first JWKS fetch only; the background work lives until Close.
func New(ctx context.Context, cfg Config) (*Verifier, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()

	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	v := &Verifier{
		leeway:   cfg.Leeway,
		audience: cfg.Audience,
		now:      cfg.Now,
		log:      cfg.Logger,
		cancel:   cancel,
	}

	keys, algs := cfg.Keys, jwtcore.Algorithms()
	if keys == nil {
		var err error
		if v.jwks, algs, err = discover(ctx, bg, cfg); err != nil {
			cancel()
			return nil, err
		}
		keys = v.jwks
	}
	v.oidc = oidc.NewVerifier(cfg.Issuer, sourceKeySet{src: keys, algs: jwsAlgs(algs)}, &oidc.Config{
		// go-oidc checks the signature (through keys) and iss; aud and the times
		// are jwtcore's, in token.
		SkipClientIDCheck:    true,
		SkipExpiryCheck:      true,
		SupportedSigningAlgs: algs,
	})

	switch {
	case cfg.StatusLists:
		v.status = newStatusLists(cfg, keys)
	case cfg.Revocations != nil:
		v.revs = cfg.Revocations
	case cfg.FeedToken != nil:
		v.feed = newFeed(cfg)
		v.revs = v.feed
		v.wg.Add(1)
		go func() {
			defer v.wg.Done()
			v.feed.run(bg)
		}()
	default:
		v.log.Warn("verify: no revocation feed configured (Config.FeedToken is nil): revoked tokens are accepted until they expire",
			slog.String(logIssuer, cfg.Issuer))
	}
	return v, nil
}

// discover runs discovery with go-oidc, over a client that bounds what it reads,
// and fetches the JWKS it names once, within ctx. It returns the JWKS source,
// whose refreshes get bg's values, and the algorithms to accept.
func discover(ctx, bg context.Context, cfg Config) (*jwksKeys, []string, error) {
	dctx, dcancel := context.WithTimeout(ctx, fetchTimeout)
	defer dcancel()
	provider, err := oidc.NewProvider(oidc.ClientContext(dctx, limitedClient(cfg.HTTPClient, maxJWKS)), cfg.Issuer)
	if err != nil {
		return nil, nil, fmt.Errorf("verify: discovery of %s: %w", cfg.Issuer, err)
	}
	var meta struct {
		JWKSURI string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := provider.Claims(&meta); err != nil {
		return nil, nil, fmt.Errorf("verify: discovery of %s: %w", cfg.Issuer, err)
	}
	if err := checkURL(meta.JWKSURI); err != nil {
		return nil, nil, fmt.Errorf("verify: discovery of %s: jwks_uri: %w", cfg.Issuer, err)
	}
	keys := newJWKSKeys(bg, meta.JWKSURI, cfg.HTTPClient, cfg.Now)
	if _, err := keys.cache.Current(ctx); err != nil {
		keys.cache.Stop()
		return nil, nil, fmt.Errorf("verify: JWKS of %s: %w", cfg.Issuer, err)
	}
	return keys, signingAlgs(meta.Algs), nil
}

// Close stops the background work (feed sync, JWKS refreshes) and waits for it.
// Verify keeps working afterwards with the keys it has, failing closed (ErrStale)
// once the copy of the feed goes stale.
func (v *Verifier) Close() error {
	v.closeOnce.Do(func() {
		v.cancel()
		if v.jwks != nil {
			v.jwks.cache.Stop()
		}
		v.wg.Wait()
	})
	return nil
}

// Status reports the state of the local copy of the revocation feed.
func (v *Verifier) Status() Status {
	if v.feed == nil {
		return Status{}
	}
	return v.feed.status(v.now())
}

// WaitSynced blocks until the first revocation snapshot has been applied or ctx
// ends. It returns at once when no feed is configured. A readiness probe or a
// server's start-up can use it so that the first requests do not get ErrStale.
func (v *Verifier) WaitSynced(ctx context.Context) error {
	if v.feed == nil {
		return nil
	}
	select {
	case <-v.feed.syncedCh:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Verify verifies raw, a compact JWS access token: signature (the issuer's JWKS),
// iss, aud (Config.Audience), exp, nbf and iat (with Config.Leeway), the RFC 9068
// `typ` header at+jwt and the claims RFC 9068 requires (sub, jti, client_id, iat,
// exp), then the local copy of the revocation feed (the token's facts with the kid
// of the key that verified it). Errors wrap ErrInvalid, ErrRevoked or ErrStale.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Token, error) {
	if len(raw) > maxTokenSize {
		return nil, fmt.Errorf("%w: over %d bytes", ErrInvalid, maxTokenSize)
	}
	if err := checkType(raw); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	var kid string // set by sourceKeySet.VerifySignature to the key that verified
	idt, err := v.oidc.Verify(context.WithValue(ctx, verifiedKeyKey{}, &kid), raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return nil, fmt.Errorf("%w: claims: %w", ErrInvalid, err)
	}
	now := v.now()
	tok, err := v.token(claims, now)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	tok.KeyID = kid
	if v.status != nil {
		if err := v.status.check(ctx, claims); err != nil {
			if errors.Is(err, ErrRevoked) {
				v.log.LogAttrs(ctx, slog.LevelInfo, "verify: revoked token refused",
					slog.String(logJTI, tok.ID), slog.String(logSubject, tok.Subject), slog.String(logError, err.Error()))
			}
			return nil, err
		}
	}
	if v.revs != nil {
		facts := revocation.FactsFromClaims(claims)
		facts.KeyID = kid
		if err := v.revs.CheckRevocation(&facts, now); err != nil {
			if errors.Is(err, ErrRevoked) {
				v.log.LogAttrs(ctx, slog.LevelInfo, "verify: revoked token refused",
					slog.String(logJTI, tok.ID), slog.String(logSubject, tok.Subject), slog.String(logError, err.Error()))
			}
			return nil, err
		}
	}
	return tok, nil
}

// token checks the claims go-oidc does not (aud, exp, nbf and iat with leeway,
// the RFC 9068 required claims) and builds the Token.
func (v *Verifier) token(c map[string]any, now time.Time) (*Token, error) {
	t := &Token{Claims: c}
	var err error
	if t.Audience, err = jwtcore.CheckAudience(c, []string{v.audience}); err != nil {
		return nil, err
	}
	times, err := jwtcore.CheckTimes(c, now, jwtcore.TimeRules{Skew: v.leeway, RequireIssuedAt: true})
	if err != nil {
		return nil, err
	}
	t.Expiry, t.IssuedAt = times.Expiry, times.IssuedAt
	for _, f := range []struct {
		name string
		dst  *string
	}{{"sub", &t.Subject}, {"jti", &t.ID}, {"client_id", &t.ClientID}} {
		s, _ := c[f.name].(string)
		if s == "" {
			return nil, fmt.Errorf("claim %s missing or not a string", f.name)
		}
		*f.dst = s
	}
	if u, ok := c["upstream"]; ok {
		if t.Upstream, ok = u.(string); !ok {
			return nil, errors.New("claim upstream is not a string")
		}
	}
	if s, ok := c["scope"]; ok {
		str, ok := s.(string)
		if !ok {
			return nil, errors.New("claim scope is not a string")
		}
		t.Scopes = strings.Fields(str)
	}
	if a, ok := c["act"]; ok {
		if t.Act, ok = a.(map[string]any); !ok {
			return nil, errors.New("claim act is not an object")
		}
	}
	if a, ok := c["attributes"]; ok {
		m, ok := a.(map[string]any)
		if !ok {
			return nil, errors.New("claim attributes is not an object")
		}
		t.Attributes = make(map[string]string, len(m))
		for k, val := range m {
			s, ok := val.(string)
			if !ok {
				return nil, fmt.Errorf("attribute %q is not a string", k)
			}
			t.Attributes[k] = s
		}
	}
	return t, nil
}

// checkType requires the RFC 9068 §4 `typ` header at+jwt (or application/at+jwt),
// so that an ID token or another JWT of the same issuer is never taken for an
// access token. The header is covered by the signature go-oidc then checks.
func checkType(raw string) error {
	head, _, ok := strings.Cut(raw, ".")
	if !ok || len(head) > 4096 {
		return errors.New("not a compact JWS")
	}
	b, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return errors.New("not a compact JWS")
	}
	var h struct {
		Typ *string `json:"typ"`
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return errors.New("not a compact JWS")
	}
	if h.Typ == nil {
		return errors.New("no typ header (want at+jwt)")
	}
	if t := strings.ToLower(*h.Typ); t != "at+jwt" && t != "application/at+jwt" {
		return fmt.Errorf("typ %q is not at+jwt", *h.Typ)
	}
	return nil
}

func (c *Config) validate() error {
	var errs []error
	if c.Issuer == "" {
		errs = append(errs, errors.New("missing Issuer (the STS issuer URL)"))
	} else if err := checkURL(c.Issuer); err != nil {
		errs = append(errs, fmt.Errorf("bad Issuer: %w", err))
	}
	if c.Audience == "" {
		errs = append(errs, errors.New("missing Audience (the API's own audience)"))
	}
	if c.StatusLists && (c.FeedToken != nil || c.Revocations != nil) {
		errs = append(errs, errors.New("StatusLists with FeedToken or Revocations set (one revocation source)"))
	}
	if c.RequireFeed && c.FeedToken == nil && c.Revocations == nil && !c.StatusLists {
		errs = append(errs, errors.New("no FeedToken while RequireFeed is set"))
	}
	if c.FeedToken != nil && c.Revocations != nil {
		errs = append(errs, errors.New("both FeedToken and Revocations set (one revocation source)"))
	}
	if c.MaxStale != 0 && c.MaxStale < MinMaxStale {
		errs = append(errs, fmt.Errorf("bad MaxStale %s: below %s (the STS sends a heartbeat every %s)", c.MaxStale, MinMaxStale, revocation.HeartbeatInterval))
	}
	if c.Leeway < 0 || c.Leeway > MaxLeeway {
		errs = append(errs, fmt.Errorf("bad Leeway %s: not within [0, %s]", c.Leeway, MaxLeeway))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("verify: config: %w", err)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.HTTPClient == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		c.HTTPClient = &http.Client{Transport: tr}
	}
	if c.MaxStale == 0 {
		c.MaxStale = DefaultMaxStale
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.minBackoff <= 0 {
		c.minBackoff = 200 * time.Millisecond
	}
	if c.maxBackoff <= 0 {
		c.maxBackoff = min(10*time.Second, c.MaxStale/3)
	}
	if c.streamIdle <= 0 {
		// Three missed heartbeats, and a reconnect well before the copy goes stale.
		c.streamIdle = min(15*time.Second, c.MaxStale/2)
	}
}

// checkURL accepts an absolute https URL, or http on a loopback address, without
// query or fragment.
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("%q is not an absolute URL without query, fragment or user info", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		h := u.Hostname()
		if ip := net.ParseIP(h); h == "localhost" || (ip != nil && ip.IsLoopback()) {
			return nil
		}
	}
	return fmt.Errorf("%q is not https (http only on a loopback address)", raw)
}

// signingAlgs is the discovery document's algorithms restricted to asymmetric
// ones (jwtcore's table), or all asymmetric ones when it names none.
func signingAlgs(advertised []string) []string {
	all := jwtcore.Algorithms()
	out := slices.DeleteFunc(slices.Clone(all), func(a string) bool { return !slices.Contains(advertised, a) })
	if len(out) == 0 {
		return all
	}
	return out
}

func jwsAlgs(names []string) []jose.SignatureAlgorithm {
	out := make([]jose.SignatureAlgorithm, len(names))
	for i, a := range names {
		out[i] = jose.SignatureAlgorithm(a)
	}
	return out
}

// limitedClient is c with response bodies capped at limit bytes (go-oidc reads
// the discovery document without a bound).
func limitedClient(c *http.Client, limit int64) *http.Client {
	cp := *c
	base := cp.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	cp.Transport = limitTransport{base: base, limit: limit}
	return &cp
}

type limitTransport struct {
	base  http.RoundTripper
	limit int64
}

func (t limitTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &limitedBody{rc: resp.Body, left: t.limit}
	return resp, nil
}

type limitedBody struct {
	rc   io.ReadCloser
	left int64
}

var errBodyTooLarge = errors.New("response body too large")

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// Anything beyond the limit is an error, not a silent truncation.
		var one [1]byte
		n, err := b.rc.Read(one[:])
		if n > 0 {
			return 0, errBodyTooLarge
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

// Log field names.
const (
	logIssuer      = "issuer"
	logJTI         = "jti"
	logSubject     = "sub"
	logError       = "error"
	logCursor      = "cursor"
	logBackoff     = "backoff"
	logTokenSHA256 = "token_sha256"
)
