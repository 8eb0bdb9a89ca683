package oidc

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/attest/attrs"
	"github.com/safeconduct/safeconduct/internal/glob"
)

// Defaults and bounds of Config.
const (
	DefaultClockSkew          = 30 * time.Second
	MaxClockSkew              = 60 * time.Second
	DefaultRefreshMinInterval = 30 * time.Second
	DefaultCacheTTL           = 5 * time.Minute
	DefaultMaxStale           = time.Hour
	DefaultFetchTimeout       = 5 * time.Second
	DefaultMaxResponseBytes   = 1 << 20
)

// Config configures the Verifier of one OIDC upstream. Zero durations and sizes take
// the documented defaults; an empty Issuer or audience list is an error, never "any".
type Config struct {
	// Name is the upstream's configured name (Workload.Upstream). Required.
	Name string
	// Issuer is the exact `iss` of the upstream's tokens, an absolute URL. Without
	// JWKSURI or JWKSFile it is also the discovery base: keys are found through
	// Issuer + "/.well-known/openid-configuration", whose `issuer` must equal it.
	Issuer string
	// Audiences are the accepted `aud` values: a token must name at least one.
	// Required, no empty entry.
	Audiences []string
	// JWKSURI fetches keys from a fixed URL instead of discovery. JWKSFile reads them
	// from a local file (air-gapped clusters): at New (an error there fails New),
	// then again like a fetch (every CacheTTL, or for an unknown kid at most once
	// per RefreshMinInterval), keeping the last good keys, without staleness, when
	// the file is broken. At most one of the two.
	JWKSURI  string
	JWKSFile string
	// Algorithms are the accepted JWS algorithms, a subset of
	// attest.SignatureAlgorithms (the default: all of them).
	Algorithms []string
	// ClockSkew is the leeway on exp, nbf and iat: default 30s, at most 60s.
	ClockSkew time.Duration
	// MaxTokenAge, when set, refuses tokens whose iat is older than this (and tokens
	// without iat).
	MaxTokenAge time.Duration

	// Subjects bounds the issuer's breadth: glob patterns (package internal/glob:
	// '*' matches any run of bytes, ':' and '/' included; anchored at both ends) of
	// the subjects this upstream may assert, e.g. "system:serviceaccount:prod:*" for
	// one cluster's prod namespace. A token whose `sub` matches none is refused with
	// attest.ErrInvalid, before any policy sees it. Empty means any subject: the STS
	// configuration should say so explicitly (e.g. with "*"). No empty pattern.
	Subjects []string
	// RequiredClaims maps claim names to glob patterns (as Subjects) that the claim
	// must match, e.g. {"repository_owner": "my-org"} for GitHub Actions. A name
	// starting with '/' is a JSON Pointer into nested claims (attrs.ClaimPath:
	// "/kubernetes.io/namespace"). A token whose claim is missing, not a string,
	// or outside its pattern is refused with an *attest.ConditionError (wrapping
	// attest.ErrInvalid). No empty name or pattern.
	RequiredClaims map[string]string
	// Attributes maps the verified claims to Workload.Attributes (compiled once with
	// attrs.Compile, e.g. from attrs.PresetKubernetes or attrs.PresetGitHubActions).
	// nil: no attributes besides "sub" and "iss", which are always set. An
	// attribute whose claim is missing or whose expression fails is absent, never
	// empty, and never refuses the token: absent attributes match no policy
	// attribute pattern. Failures are counted in Stats and logged at debug level.
	Attributes *attrs.Mapping
	// Guard is the upstream's condition and attribute bounds (attrs.NewGuard),
	// checked once the attributes are mapped: a token it refuses is refused with
	// an *attest.ConditionError naming the check, before any policy sees it. nil:
	// none.
	Guard *attrs.Guard

	// HTTPClient supplies the transport (proxy, TLS roots) for discovery and JWKS
	// fetches. Only its Transport is used: every fetch is bounded by FetchTimeout and
	// MaxResponseBytes, redirects are refused and only 200 is accepted, whatever the
	// client says. Default: a transport with the system roots and TLS 1.2 or later.
	HTTPClient *http.Client
	// Now is the clock for token times and cache ages. Default time.Now.
	Now func() time.Time
	// Logger receives fetch failures and key set changes (never tokens or keys).
	// Default: discard.
	Logger *slog.Logger

	// RefreshMinInterval is the least time between two key fetches of this upstream,
	// whatever triggers them (unknown kid, age, failure). Default 30s.
	RefreshMinInterval time.Duration
	// CacheTTL is the age after which fetched keys are refreshed in the background
	// while still in use. Default 5m.
	CacheTTL time.Duration
	// MaxStale is how long after the last successful fetch the keys stay usable
	// while refreshes fail; after it, Verify fails closed with ErrUnavailable.
	// Default 1h; at least CacheTTL.
	MaxStale time.Duration
	// FetchTimeout bounds each key refresh, discovery and JWKS requests together,
	// bodies included. Default 5s.
	FetchTimeout time.Duration
	// MaxResponseBytes caps each discovery or JWKS response (and JWKSFile). Larger
	// ones fail. Default 1 MiB.
	MaxResponseBytes int64

	// OpaqueIssuer accepts an Issuer that is not a URL (it is compared, never
	// fetched): an RFC 7523 client ID, whose assertions have iss = sub = the
	// client ID. It needs JWKSURI or JWKSFile.
	OpaqueIssuer bool

	// InsecureAllowLoopbackHTTP permits http:// issuer and JWKS URLs whose host is a
	// loopback address or "localhost". For tests only; production URLs are https.
	InsecureAllowLoopbackHTTP bool
}

// settings is a validated Config with defaults applied.
type settings struct {
	Config
	algs     map[string]bool
	subjects []glob.Glob
	required []requiredClaim // sorted by name
}

// requiredClaim is one entry of Config.RequiredClaims, compiled.
type requiredClaim struct {
	name    string
	path    attrs.ClaimPath
	pattern glob.Glob
}

// Problem is one problem of a Config: the setting's path, as in the STS
// configuration file (a key such as "jwks_uri", then list indexes or map keys:
// "algorithms", 1), and what is wrong with it.
type Problem struct {
	Path    []any
	Message string
}

// PathString is the path as written in a configuration file: jwks_uri,
// algorithms[1], required_claims["team"].
func (p Problem) PathString() string {
	var b strings.Builder
	for _, e := range p.Path {
		switch e := e.(type) {
		case int:
			fmt.Fprintf(&b, "[%d]", e)
		case string:
			if b.Len() == 0 {
				b.WriteString(e)
			} else {
				fmt.Fprintf(&b, "[%q]", e)
			}
		}
	}
	return b.String()
}

// Check reports every problem of cfg without building anything (no I/O). New fails
// on exactly these; the STS configuration loader reports them with file:line, so
// an OIDC upstream's rules are written once, here.
func (cfg Config) Check() []Problem {
	_, ps := cfg.settings()
	return ps
}

// validate checks cfg, applies defaults and reports every problem at once.
func (cfg Config) validate() (*settings, error) {
	s, ps := cfg.settings()
	if len(ps) == 0 {
		return s, nil
	}
	errs := make([]error, len(ps))
	for i, p := range ps {
		errs[i] = fmt.Errorf("oidc upstream %q: %s: %s", cfg.Name, p.PathString(), p.Message)
	}
	return nil, errors.Join(errs...)
}

// settings applies the defaults to cfg and collects its problems.
func (cfg Config) settings() (*settings, []Problem) {
	var ps []Problem
	bad := func(path []any, format string, args ...any) {
		ps = append(ps, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	}
	at := func(p ...any) []any { return p }
	if cfg.Name == "" {
		bad(at("name"), "is required")
	}
	if cfg.Issuer == "" {
		bad(at("issuer"), "is required")
	} else if cfg.OpaqueIssuer {
		if cfg.JWKSURI == "" && cfg.JWKSFile == "" {
			bad(at("issuer"), "an opaque issuer needs jwks_uri or jwks_file")
		}
		if len(cfg.Issuer) > 256 || strings.ContainsFunc(cfg.Issuer, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			bad(at("issuer"), "%.64q: at most 256 bytes, no spaces or control characters", cfg.Issuer)
		}
	} else if u, err := url.Parse(cfg.Issuer); err != nil || !u.IsAbs() || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		bad(at("issuer"), "%q is not an absolute http(s) URL", cfg.Issuer)
	} else if cfg.JWKSURI == "" && cfg.JWKSFile == "" {
		if err := cfg.checkFetchURL(cfg.Issuer); err != nil {
			bad(at("issuer"), "used for discovery: %v (or set jwks_uri or jwks_file)", err)
		}
	}
	if len(cfg.Audiences) == 0 {
		bad(at("audiences"), "must name at least one expected audience (an empty expectation would accept any)")
	}
	for i, a := range cfg.Audiences {
		if strings.TrimSpace(a) == "" {
			bad(at("audiences", i), "empty audience")
		}
	}
	switch {
	case cfg.JWKSURI != "" && cfg.JWKSFile != "":
		bad(at("jwks_uri"), "jwks_uri and jwks_file are mutually exclusive")
	case cfg.JWKSURI != "":
		if err := cfg.checkFetchURL(cfg.JWKSURI); err != nil {
			bad(at("jwks_uri"), "%v", err)
		}
	}
	s := &settings{Config: cfg, algs: map[string]bool{}}
	if len(s.Algorithms) == 0 {
		s.Algorithms = attest.SignatureAlgorithms()
	} else {
		s.Algorithms = slices.Clone(s.Algorithms)
	}
	for i, a := range s.Algorithms {
		if !attest.IsSignatureAlgorithm(a) {
			bad(at("algorithms", i), "algorithm %q not allowed (use %v)", a, attest.SignatureAlgorithms())
		}
		s.algs[a] = true
	}
	s.Audiences = slices.Clone(s.Audiences)
	s.Subjects = slices.Clone(s.Subjects)
	for i, p := range s.Subjects {
		if strings.TrimSpace(p) == "" {
			bad(at("subjects", i), "empty subject pattern (leave subjects out to allow any subject)")
			continue
		}
		s.subjects = append(s.subjects, glob.Compile(p))
	}
	s.RequiredClaims = maps.Clone(s.RequiredClaims)
	for _, name := range slices.Sorted(maps.Keys(s.RequiredClaims)) {
		p := s.RequiredClaims[name]
		switch {
		case name == "":
			bad(at("required_claims"), "required claim with an empty name")
		case p == "":
			bad(at("required_claims", name), "required claim %q has an empty pattern", name)
		default:
			cp, err := attrs.ParseClaimPath(name)
			if err != nil {
				bad(at("required_claims", name), "%v", err)
				continue
			}
			s.required = append(s.required, requiredClaim{name: name, path: cp, pattern: glob.Compile(p)})
		}
	}

	dur := func(name string, v *time.Duration, def, max time.Duration) {
		switch {
		case *v < 0:
			bad(at(name), "must not be negative")
		case *v == 0:
			*v = def
		case max > 0 && *v > max:
			bad(at(name), "%v exceeds the maximum %v", *v, max)
		}
	}
	dur("clock_skew", &s.ClockSkew, DefaultClockSkew, MaxClockSkew)
	dur("max_token_age", &s.MaxTokenAge, 0, 0)
	dur("refresh_min_interval", &s.RefreshMinInterval, DefaultRefreshMinInterval, 0)
	dur("cache_ttl", &s.CacheTTL, DefaultCacheTTL, 0)
	dur("max_stale", &s.MaxStale, DefaultMaxStale, 0)
	dur("fetch_timeout", &s.FetchTimeout, DefaultFetchTimeout, 0)
	if s.MaxStale < s.CacheTTL {
		bad(at("max_stale"), "%v is shorter than cache_ttl %v", s.MaxStale, s.CacheTTL)
	}
	switch {
	case s.MaxResponseBytes < 0:
		bad(at("max_response_bytes"), "must not be negative")
	case s.MaxResponseBytes == 0:
		s.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	if len(ps) > 0 {
		return nil, ps
	}
	return s, nil
}

// checkFetchURL accepts https URLs, and http URLs on a loopback host when
// InsecureAllowLoopbackHTTP is set.
func (cfg *Config) checkFetchURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("invalid URL: %w", err)
	}
	if u.Host == "" || u.User != nil || u.Fragment != "" {
		return fmt.Errorf("%q must be an absolute URL without userinfo or fragment", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if cfg.InsecureAllowLoopbackHTTP && isLoopback(u.Hostname()) {
			return nil
		}
	}
	return fmt.Errorf("%q must be an https URL", raw)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
