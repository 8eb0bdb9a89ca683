package spiffe

import (
	"errors"
	"fmt"
	"github.com/safeconduct/safeconduct/attest/attrs"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/safeconduct/safeconduct/internal/glob"
)

// Defaults and bounds of Config and EndpointConfig.
const (
	DefaultClockSkew        = 30 * time.Second
	MaxClockSkew            = 60 * time.Second
	DefaultRefreshInterval  = 5 * time.Minute
	MinRefreshInterval      = 30 * time.Second
	DefaultMaxStale         = time.Hour
	DefaultFetchTimeout     = 5 * time.Second
	DefaultMaxResponseBytes = 1 << 20
	// FileCheckInterval is how often, while the Verifier is in use, a BundleFile
	// is read again to pick up a rotated bundle.
	FileCheckInterval = 30 * time.Second
)

// Bundle endpoint profiles (SPIFFE Federation §5).
const (
	// ProfileWeb authenticates the endpoint with web PKI: the system roots, or
	// those of Config.HTTPClient's transport.
	ProfileWeb = "https_web"
	// ProfileSPIFFE authenticates the endpoint by its X.509-SVID, which must carry
	// EndpointConfig.EndpointSPIFFEID and chain to that trust domain's bundle.
	ProfileSPIFFE = "https_spiffe"
)

// Config configures the Verifier of one SPIFFE trust domain. Zero durations and
// sizes take the documented defaults; an empty trust domain or audience list is an
// error, never "any".
type Config struct {
	// Name is the upstream's configured name (Workload.Upstream). Required.
	Name string
	// TrustDomain is the bare, canonical trust domain name, e.g. "prod.example"
	// (lower case, no scheme, no port). Required.
	TrustDomain string
	// Audiences are the accepted JWT-SVID `aud` values: a JWT-SVID must name at
	// least one. Required, no empty entry.
	Audiences []string

	// Exactly one bundle source.
	//
	// BundleFile is a SPIFFE bundle (a JWKS whose keys have use x509-svid or
	// jwt-svid) read and vetted at New, and read again every FileCheckInterval
	// while in use; a changed file that fails vetting leaves the last good bundle
	// in place.
	BundleFile string
	// BundleEndpoint is a SPIFFE bundle endpoint (federation), fetched on first
	// use (or after one refresh interval) and refreshed in the background.
	BundleEndpoint *EndpointConfig
	// WorkloadAPISocket is the address of the local SPIFFE Workload API (SPIRE
	// agent), e.g. "unix:///run/spire/agent.sock", which pushes this trust
	// domain's bundle, whether it is the agent's own or a federated one.
	WorkloadAPISocket string
	// WorkloadAPIMaxStale bounds how long the Workload API's bundle stays usable
	// once it may be behind the agent's: from the moment a stream to the agent
	// broke or an update was refused (while connected and up to date the bundle
	// is current, however old). After it, verification fails closed with
	// attest.ErrUnavailable until the agent is back. Default 1h
	// (DefaultMaxStale). With WorkloadAPISocket only.
	WorkloadAPIMaxStale time.Duration

	// PathTemplates map the path of an attested SPIFFE ID to attributes, e.g.
	// "/ns/{namespace}/sa/{service_account}". A template is a '/'-separated list of
	// segments, each a literal (matched exactly), "*" (any one segment) or
	// "{name}" (any one segment, kept as attribute name; [a-z][a-z0-9_]{0,63}, not
	// sub, iss, path or trust_domain, not twice in a template). A template matches
	// a path of exactly as many segments. The first template that matches sets its
	// captures; a path no template matches gets none (and is not refused).
	PathTemplates []string
	// Subjects bounds the trust domain's breadth: glob patterns (package
	// internal/glob) over the full SPIFFE ID, e.g. "spiffe://prod.example/ns/prod/*".
	// An SVID whose ID matches none is refused with attest.ErrInvalid. Empty means
	// any ID in the trust domain. No empty pattern, and no pattern that cannot match
	// an ID of this trust domain.
	Subjects []string
	// Guard is the upstream's condition and attribute bounds (attrs.NewGuard) over
	// the SVID's claims (a JWT-SVID's verified claims; an X.509-SVID's are "sub"
	// and "x5t#S256") and its attributes (sub, iss, trust_domain, path and the
	// path templates' captures): an SVID it refuses is refused with an
	// *attest.ConditionError naming the check, before any policy sees it. nil:
	// none.
	Guard *attrs.Guard
	// ClockSkew is the leeway on JWT-SVID exp, nbf and iat: default 30s, at most
	// 60s. X.509-SVID validity is checked without leeway, as TLS does.
	ClockSkew time.Duration
	// MaxTokenAge, when set, refuses JWT-SVIDs whose iat is older than this (plus
	// ClockSkew), and JWT-SVIDs without iat, as an OIDC upstream's max_token_age
	// does. Zero: no bound. X.509-SVIDs are not affected.
	MaxTokenAge time.Duration

	// HTTPClient supplies the transport (proxy, TLS roots for https_web) of bundle
	// endpoint fetches. Only its Transport is used: every fetch is bounded by
	// FetchTimeout and MaxResponseBytes, redirects are refused and only 200 is
	// accepted. For https_spiffe the TLS settings are replaced by SPIFFE
	// authentication (an *http.Transport is cloned to keep its proxy settings).
	// Default: a transport with the system roots and TLS 1.2 or later.
	HTTPClient *http.Client
	// Now is the clock for SVID validity and bundle ages. Default time.Now. (The
	// TLS handshake with an https_spiffe endpoint uses the real clock.)
	Now func() time.Time
	// Logger receives bundle updates and fetch failures (never tokens). Default:
	// discard.
	Logger *slog.Logger
}

// EndpointConfig is a SPIFFE bundle endpoint.
type EndpointConfig struct {
	// URL is the endpoint's https URL. Required.
	URL string
	// Profile is ProfileWeb ("https_web") or ProfileSPIFFE ("https_spiffe").
	// Required.
	Profile string
	// EndpointSPIFFEID is the SPIFFE ID the endpoint's X.509-SVID must carry.
	// Required for https_spiffe, refused for https_web.
	EndpointSPIFFEID string
	// BootstrapBundle is a file holding the SPIFFE bundle of EndpointSPIFFEID's
	// trust domain, used to authenticate the endpoint until the first fetch. When
	// the endpoint belongs to the trust domain it serves (the usual case), each
	// fetched bundle then authenticates the next fetch. Required for https_spiffe,
	// refused for https_web.
	BootstrapBundle string
	// RefreshInterval is how often the bundle is fetched again, in the background,
	// whether or not it is in use (from the end of the previous fetch). Zero: the bundle's spiffe_refresh_hint, bounded to
	// [MinRefreshInterval, DefaultRefreshInterval], or DefaultRefreshInterval
	// without a hint.
	RefreshInterval time.Duration
	// MaxStale is how long after the last successful fetch the bundle stays usable
	// while refreshes fail; after it, verification fails closed with
	// attest.ErrUnavailable. Default 1h; longer than the refresh interval.
	MaxStale time.Duration
	// FetchTimeout bounds each fetch, body included. Default 5s.
	FetchTimeout time.Duration
	// MaxResponseBytes caps each response (and the BootstrapBundle and BundleFile
	// files). Default 1 MiB.
	MaxResponseBytes int64
}

// settings is a validated Config with defaults applied.
type settings struct {
	Config
	td         spiffeid.TrustDomain
	endpoint   EndpointConfig // zero unless BundleEndpoint
	endpointID spiffeid.ID
	maxBytes   int64 // for BundleFile and BootstrapBundle too
	templates  []pathTemplate
	subjects   []glob.Glob
}

// validate checks cfg, applies defaults and reports every problem at once.
func (cfg Config) validate() (*settings, error) {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("spiffe upstream %q: "+format, append([]any{cfg.Name}, args...)...))
	}
	s := &settings{Config: cfg, maxBytes: DefaultMaxResponseBytes}
	if cfg.Name == "" {
		bad("name is required")
	}
	switch td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain); {
	case cfg.TrustDomain == "":
		bad("trust_domain is required")
	case err != nil || td.Name() != cfg.TrustDomain:
		bad("trust_domain %q is not a canonical SPIFFE trust domain name (lower case letters, digits, '.', '-', '_'; no scheme or port)", cfg.TrustDomain)
	default:
		s.td = td
	}
	if len(cfg.Audiences) == 0 {
		bad("at least one audience is required")
	}
	if slices.Contains(cfg.Audiences, "") {
		bad("empty audience")
	}
	s.Audiences = slices.Clone(cfg.Audiences)

	sources := 0
	for _, set := range []bool{cfg.BundleFile != "", cfg.BundleEndpoint != nil, cfg.WorkloadAPISocket != ""} {
		if set {
			sources++
		}
	}
	if sources != 1 {
		bad("exactly one bundle source is required (bundle_file, bundle_endpoint or workload_api_socket), got %d", sources)
	}
	if cfg.WorkloadAPISocket != "" {
		if err := workloadapi.ValidateAddress(cfg.WorkloadAPISocket); err != nil {
			bad("workload_api_socket: %v", err)
		}
	}
	switch {
	case s.WorkloadAPIMaxStale < 0:
		bad("max_stale must not be negative")
	case s.WorkloadAPIMaxStale > 0 && cfg.WorkloadAPISocket == "":
		bad("max_stale applies to workload_api_socket only (a bundle endpoint's is bundle_endpoint.max_stale)")
	case s.WorkloadAPIMaxStale == 0 && cfg.WorkloadAPISocket != "":
		s.WorkloadAPIMaxStale = DefaultMaxStale
	}
	if e := cfg.BundleEndpoint; e != nil {
		s.endpoint = *e
		s.validateEndpoint(bad)
	}

	for i, t := range cfg.PathTemplates {
		pt, err := compileTemplate(t)
		if err != nil {
			bad("path_templates[%d] %q: %v", i, t, err)
			continue
		}
		s.templates = append(s.templates, pt)
	}
	s.PathTemplates = slices.Clone(cfg.PathTemplates)
	s.Subjects = slices.Clone(cfg.Subjects)
	for i, p := range s.Subjects {
		if p == "" {
			bad("subjects[%d]: empty pattern", i)
			continue
		}
		g := glob.Compile(p)
		if want := "spiffe://" + cfg.TrustDomain + "/"; !s.td.IsZero() &&
			!strings.HasPrefix(g.Prefix(), want) && !strings.HasPrefix(want, g.Prefix()) {
			bad("subjects[%d] %q can match no SPIFFE ID of trust domain %q", i, p, cfg.TrustDomain)
			continue
		}
		s.subjects = append(s.subjects, g)
	}

	switch {
	case s.ClockSkew < 0:
		bad("clock_skew must not be negative")
	case s.ClockSkew == 0:
		s.ClockSkew = DefaultClockSkew
	case s.ClockSkew > MaxClockSkew:
		bad("clock_skew %v exceeds %v", s.ClockSkew, MaxClockSkew)
	}
	if s.MaxTokenAge < 0 {
		bad("max_token_age must not be negative")
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

// validateEndpoint checks and defaults s.endpoint.
func (s *settings) validateEndpoint(bad func(string, ...any)) {
	e := &s.endpoint
	if u, err := url.Parse(e.URL); err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.Fragment != "" {
		bad("bundle_endpoint.url %q must be an https URL without userinfo or fragment", e.URL)
	}
	switch e.Profile {
	case ProfileWeb:
		if e.EndpointSPIFFEID != "" || e.BootstrapBundle != "" {
			bad("bundle_endpoint: endpoint_spiffe_id and bootstrap_bundle apply to the %s profile only", ProfileSPIFFE)
		}
	case ProfileSPIFFE:
		id, err := spiffeid.FromString(e.EndpointSPIFFEID)
		switch {
		case e.EndpointSPIFFEID == "":
			bad("bundle_endpoint.endpoint_spiffe_id is required for the %s profile", ProfileSPIFFE)
		case err != nil:
			bad("bundle_endpoint.endpoint_spiffe_id %q is not a valid SPIFFE ID: %v", e.EndpointSPIFFEID, err)
		default:
			s.endpointID = id
		}
		if e.BootstrapBundle == "" {
			bad("bundle_endpoint.bootstrap_bundle is required for the %s profile", ProfileSPIFFE)
		}
	case "":
		bad("bundle_endpoint.profile is required (%s or %s)", ProfileWeb, ProfileSPIFFE)
	default:
		bad("bundle_endpoint.profile %q is neither %s nor %s", e.Profile, ProfileWeb, ProfileSPIFFE)
	}
	dur := func(name string, v *time.Duration, def time.Duration) {
		switch {
		case *v < 0:
			bad("bundle_endpoint.%s must not be negative", name)
		case *v == 0:
			*v = def
		}
	}
	dur("refresh_interval", &e.RefreshInterval, 0) // zero: from the bundle's hint
	dur("max_stale", &e.MaxStale, DefaultMaxStale)
	dur("fetch_timeout", &e.FetchTimeout, DefaultFetchTimeout)
	longest := e.RefreshInterval
	if longest == 0 {
		longest = DefaultRefreshInterval // the bound of a hinted interval
	}
	if e.MaxStale <= longest {
		bad("bundle_endpoint.max_stale %v must be longer than the refresh interval %v", e.MaxStale, longest)
	}
	switch {
	case e.MaxResponseBytes < 0:
		bad("bundle_endpoint.max_response_bytes must not be negative")
	case e.MaxResponseBytes == 0:
		e.MaxResponseBytes = DefaultMaxResponseBytes
	}
	s.maxBytes = e.MaxResponseBytes
}
