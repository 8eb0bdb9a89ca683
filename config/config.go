package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/safeconduct/safeconduct/attest/attrs"
	"github.com/safeconduct/safeconduct/internal/confcheck"
	"github.com/safeconduct/safeconduct/issuer"
)

// Config is the STS configuration file (see README "Configuration"). Field names are
// the contract; unknown keys are errors.
type Config struct {
	Issuer      string           `yaml:"issuer"`
	Listen      string           `yaml:"listen"`
	TLS         TLSConfig        `yaml:"tls"`
	Signing     SigningConfig    `yaml:"signing"`
	Tokens      TokensConfig     `yaml:"tokens"`
	Upstreams   []UpstreamConfig `yaml:"upstreams"`
	PolicyFiles []string         `yaml:"policy_files"`
	// PolicyReloadInterval is how often policy files are checked for changes
	// (default 5s; SIGHUP reloads at once).
	PolicyReloadInterval Duration         `yaml:"policy_reload_interval"`
	Revocation           RevocationConfig `yaml:"revocation"`
	Log                  LogConfig        `yaml:"log"`
	// Limits are the token endpoint's rate and concurrency limits (limits.go).
	Limits LimitsConfig `yaml:"limits"`
	// Audit optionally sends audit events to a file of their own (auditsink.go).
	Audit AuditConfig `yaml:"audit"`
	// Tracing optionally exports OpenTelemetry traces (tracing.go).
	Tracing TracingConfig `yaml:"tracing"`
	// StatusLists configures Token Status Lists (statuslists.go); on by default.
	StatusLists StatusListsConfig `yaml:"status_lists"`
	// Clients are the clients that authenticate with private_key_jwt (clients.go).
	Clients []ClientConfig `yaml:"clients"`
	// MetricsListen is the operations listener (host:port, plain HTTP): /metrics,
	// /healthz and /readyz. Unset: /metrics is not served at all (never on listen).
	MetricsListen string `yaml:"metrics_listen"`

	// path is the file the config was read from; relative paths resolve against its
	// directory.
	path string
	// root is the parsed document: the line of a problem found after validation
	// (a file that cannot be read, a verifier that cannot start), see errAt.
	root *yaml.Node
}

// errAt places err, found while building what the configuration names, at the key
// path in the file: "sts.yaml:7: upstreams[0]: ...", the style of the validation
// problems. The error still wraps err.
func (c *Config) errAt(err error, path ...any) error {
	if err == nil {
		return nil
	}
	p := keyPath(path...)
	where := p
	if c.path != "" {
		where = c.path + ": " + p
		if line := confcheck.Line(c.root, path...); line > 0 {
			where = fmt.Sprintf("%s:%d: %s", c.path, line, p)
		}
	}
	return &locatedError{where: where, msg: confcheck.StripKey(p, err.Error()), err: err}
}

// locatedError is an error of errAt.
type locatedError struct {
	where, msg string
	err        error
}

func (e *locatedError) Error() string { return e.where + ": " + e.msg }
func (e *locatedError) Unwrap() error { return e.err }

// keyPath renders map keys and list indexes as confcheck writes key paths.
func keyPath(path ...any) string {
	p := ""
	for _, e := range path {
		if i, ok := e.(int); ok {
			p = confcheck.Index(p, i)
		} else {
			p = confcheck.Key(p, e.(string))
		}
	}
	return p
}

// TLSConfig names the serving certificate. InsecureHTTP serves plain HTTP and must be
// asked for explicitly (tests, or TLS terminated by a trusted local proxy).
type TLSConfig struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	InsecureHTTP bool   `yaml:"insecure_http"`
	// WorkloadAPISocket serves with the STS's own X.509-SVID from the SPIFFE
	// Workload API (rotated without restart) instead of cert_file/key_file.
	WorkloadAPISocket string `yaml:"workload_api_socket"`
	// ClientCertificates is "none" (default) or "request": ask clients for a
	// certificate, verified as an X.509-SVID against the spiffe upstreams' bundles
	// (client authentication, mTLS subject/actor identity, cnf binding).
	ClientCertificates string `yaml:"client_certificates"`
	// MinVersion is the lowest TLS version served: "1.2" (default) or "1.3".
	MinVersion string `yaml:"min_version"`
}

// SigningConfig selects the signing algorithm and where the PEM keys live.
type SigningConfig struct {
	Algorithm string `yaml:"algorithm"`
	KeyDir    string `yaml:"key_dir"`
	// RSABits is the size of the RSA keys generated for RS256 and PS256: 2048,
	// 3072 (default) or 4096. Keys already in key_dir keep their size.
	RSABits int `yaml:"rsa_bits"`
	// PKCS11 keeps the signing keys in a PKCS#11 token (an HSM): key_dir then
	// holds references to the token keys and the kid registry, never a private key.
	PKCS11 *PKCS11Config `yaml:"pkcs11"`
}

// PKCS11Config names the PKCS#11 module, token, key label and PIN file.
type PKCS11Config struct {
	Module     string `yaml:"module"`
	TokenLabel string `yaml:"token_label"`
	KeyLabel   string `yaml:"key_label"`
	PINFile    string `yaml:"pin_file"`
}

// TokensConfig bounds minted token lifetimes.
type TokensConfig struct {
	DefaultTTL Duration `yaml:"default_ttl"`
	MaxTTL     Duration `yaml:"max_ttl"`
}

// UpstreamConfig is one trusted upstream issuer.
type UpstreamConfig struct {
	Name        string   `yaml:"name"`
	Kind        string   `yaml:"kind"`
	Issuer      string   `yaml:"issuer"`
	Audiences   []string `yaml:"audiences"`
	JWKSURI     string   `yaml:"jwks_uri"`
	JWKSFile    string   `yaml:"jwks_file"`
	Algorithms  []string `yaml:"algorithms"`
	ClockSkew   Duration `yaml:"clock_skew"`
	MaxTokenAge Duration `yaml:"max_token_age"`
	// Subjects limits which subjects this upstream may assert (issuer breadth);
	// empty = any.
	Subjects []string `yaml:"subjects"`
	// RequiredClaims maps a claim name to a glob its string value must match; a
	// name starting with '/' is a JSON Pointer into nested claims
	// ("/kubernetes.io/namespace").
	RequiredClaims map[string]string `yaml:"required_claims"`
	// Condition is a CEL expression over `claims` and `attributes` that every
	// credential of the upstream must satisfy before any policy rule is
	// consulted; AttributeBounds maps attribute names to the glob patterns their
	// values must match when present (attrs.GuardConfig). Both are type-checked
	// by `sts check-config`; refusals are audited with the check named.
	Condition       string              `yaml:"condition"`
	AttributeBounds map[string][]string `yaml:"attribute_bounds"`
	// Preset names a built-in claim -> attribute mapping (kubernetes,
	// github_actions); Attributes adds or overrides CEL expressions over `claims`.
	Preset     string            `yaml:"preset"`
	Attributes map[string]string `yaml:"attributes"`
	// BindingAttributes are runtime attributes a minted token is bound to (its
	// `bnd` claim is their fingerprint); when the same workload instance shows up
	// with other values, its earlier tokens are revoked. InstanceAttributes (with
	// the subject) tell instances apart, so that replicas sharing a subject do not
	// revoke each other's tokens.
	BindingAttributes  []string `yaml:"binding_attributes"`
	InstanceAttributes []string `yaml:"instance_attributes"`
	// OneTime makes each token of this upstream usable for one exchange: its jti
	// (required) is recorded in the revocation store until it expires, and a
	// second exchange with it is refused as a replay.
	OneTime bool `yaml:"one_time"`

	// kind: spiffe. TrustDomain names the trust domain; exactly one bundle source:
	// BundleFile, BundleEndpoint or WorkloadAPISocket. PathTemplates map SPIFFE ID
	// path segments to attributes ("/ns/{namespace}/sa/{service_account}").
	// MaxStale (workload_api_socket only; default 1h) is how long the agent's
	// bundle stays usable once the agent is unreachable or its update refused.
	TrustDomain       string                `yaml:"trust_domain"`
	BundleFile        string                `yaml:"bundle_file"`
	BundleEndpoint    *BundleEndpointConfig `yaml:"bundle_endpoint"`
	WorkloadAPISocket string                `yaml:"workload_api_socket"`
	MaxStale          Duration              `yaml:"max_stale"`
	PathTemplates     []string              `yaml:"path_templates"`
}

// BundleEndpointConfig is a SPIFFE bundle endpoint (federation).
type BundleEndpointConfig struct {
	URL string `yaml:"url"`
	// Profile is https_web (web PKI) or https_spiffe (the endpoint presents the
	// X.509-SVID EndpointSPIFFEID, checked against the trust domain's own bundle,
	// seeded from BootstrapBundle).
	Profile          string   `yaml:"profile"`
	EndpointSPIFFEID string   `yaml:"endpoint_spiffe_id"`
	BootstrapBundle  string   `yaml:"bootstrap_bundle"`
	RefreshInterval  Duration `yaml:"refresh_interval"`
	MaxStale         Duration `yaml:"max_stale"`
}

// RevocationConfig selects the revocation store backend.
type RevocationConfig struct {
	Backend  string         `yaml:"backend"`
	Embedded EmbeddedConfig `yaml:"embedded"`
	Redis    RedisConfig    `yaml:"redis"`
	// IdentityFile remembers the store's identity outside the store, so that a
	// store that lost its data is told from a new one across restarts (default
	// for embedded: <embedded.path>.id; for redis: none, memory only).
	IdentityFile string `yaml:"identity_file"`
}

// EmbeddedConfig is the bbolt file of the embedded store.
type EmbeddedConfig struct {
	Path string `yaml:"path"`
}

// RedisConfig is how to reach Redis (standalone, Sentinel with master_name, or Cluster
// with several addrs).
type RedisConfig struct {
	Addrs      []string `yaml:"addrs"`
	MasterName string   `yaml:"master_name"`
	Cluster    bool     `yaml:"cluster"`
	Username   string   `yaml:"username"`
	// PasswordFile holds the password (never put secrets in the config itself).
	PasswordFile string `yaml:"password_file"`
	DB           int    `yaml:"db"`
	Prefix       string `yaml:"prefix"`
	TLS          bool   `yaml:"tls"`
	CAFile       string `yaml:"ca_file"`
}

// LogConfig sets the application log.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info (default), warn, error
	Format string `yaml:"format"` // json (default) or text
}

// Duration is a time.Duration written as a Go duration string ("5m", "90s").
type Duration time.Duration

// UnmarshalYAML reads a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("must be a duration such as 5m or 90s")
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("%q is not a duration (write e.g. 10m or 1h30m)", n.Value)
	}
	*d = Duration(v)
	return nil
}

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Signing algorithms the STS can mint with.
var signingAlgorithms = []string{"ES256", "EdDSA", "RS256", "PS256"}

// Problem is one configuration error at a place in a file.
type Problem = confcheck.Problem

// ConfigError holds every problem found in a configuration, in file order.
type ConfigError = confcheck.Error

// Load reads, strictly parses and validates the configuration at path,
// reporting every problem together (a *ConfigError). It reads no other file and
// makes no network request.
func Load(path string) (*Config, error) {
	data, err := confcheck.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Parse parses and validates configuration bytes; name is used in problems and
// as the base for relative paths. Unknown keys, values that cannot be decoded and
// values that fail validation are all reported, each with its line and key path.
func Parse(name string, data []byte) (*Config, error) {
	cfg := &Config{path: name}
	if err := confcheck.Parse(name, data, cfg, func(root *yaml.Node) []Problem {
		v := &validator{file: name, root: root}
		cfg.root = root
		cfg.validate(v)
		return v.problems
	}); err != nil {
		return nil, err
	}
	return cfg, nil
}

// validator collects problems with the line of the offending key.
type validator struct {
	file     string
	root     *yaml.Node
	problems []Problem
}

// at records msg at the node reached by path (map keys and list indexes); the
// deepest existing node's line is used.
func (v *validator) at(msg string, path ...any) {
	p := keyPath(path...)
	v.problems = append(v.problems, Problem{File: v.file, Line: confcheck.Line(v.root, path...), Path: p, Message: confcheck.StripKey(p, msg)})
}

func (c *Config) validate(v *validator) {
	if c.Issuer == "" {
		v.at("issuer is required", "issuer")
	} else if u, err := url.Parse(c.Issuer); err != nil || !u.IsAbs() || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(c.Issuer, "/") {
		v.at("issuer must be an absolute URL without query, fragment or trailing slash", "issuer")
	} else if u.Scheme != "https" && !(u.Scheme == "http" && c.TLS.InsecureHTTP) {
		v.at("issuer must be https (http only with tls.insecure_http: true)", "issuer")
	}
	if c.Listen == "" {
		v.at("listen is required (host:port)", "listen")
	} else if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		v.at("listen must be host:port", "listen")
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			v.at("metrics_listen must be host:port", "metrics_listen")
		} else if c.MetricsListen == c.Listen {
			v.at("metrics_listen must differ from listen (the metrics are never served on the token listener)", "metrics_listen")
		}
	}
	switch {
	case c.TLS.InsecureHTTP:
		if c.TLS.CertFile != "" || c.TLS.KeyFile != "" || c.TLS.WorkloadAPISocket != "" || c.TLS.ClientCertificates == "request" {
			v.at("tls.insecure_http excludes certificates and client_certificates", "tls")
		}
	case c.TLS.WorkloadAPISocket != "":
		if c.TLS.CertFile != "" || c.TLS.KeyFile != "" {
			v.at("tls.workload_api_socket excludes cert_file and key_file", "tls")
		}
		if !strings.HasPrefix(c.TLS.WorkloadAPISocket, "unix://") {
			v.at("tls.workload_api_socket must be a unix:// address", "tls", "workload_api_socket")
		}
	case c.TLS.CertFile == "" || c.TLS.KeyFile == "":
		v.at("tls.cert_file and tls.key_file are required (or tls.workload_api_socket, or tls.insecure_http: true)", "tls")
	}
	switch {
	case c.TLS.MinVersion == "":
		if !c.TLS.InsecureHTTP {
			c.TLS.MinVersion = "1.2"
		}
	case c.TLS.InsecureHTTP:
		v.at("tls.min_version does not apply with insecure_http", "tls", "min_version")
	case tlsVersions[c.TLS.MinVersion] == 0:
		v.at(fmt.Sprintf("tls.min_version %q must be \"1.2\" or \"1.3\"", c.TLS.MinVersion), "tls", "min_version")
	}
	switch c.TLS.ClientCertificates {
	case "":
		c.TLS.ClientCertificates = "none"
	case "none", "request":
	default:
		v.at("tls.client_certificates must be none or request", "tls", "client_certificates")
	}
	if c.Signing.Algorithm == "" {
		c.Signing.Algorithm = "ES256"
	} else if !slices.Contains(signingAlgorithms, c.Signing.Algorithm) {
		v.at(fmt.Sprintf("signing.algorithm %q is not one of %s", c.Signing.Algorithm, strings.Join(signingAlgorithms, ", ")), "signing", "algorithm")
	}
	if c.Signing.KeyDir == "" {
		v.at("signing.key_dir is required", "signing")
	}
	if p := c.Signing.PKCS11; p != nil {
		for _, f := range []struct{ name, value string }{{"module", p.Module}, {"token_label", p.TokenLabel}, {"key_label", p.KeyLabel}, {"pin_file", p.PINFile}} {
			if f.value == "" {
				v.at("signing.pkcs11."+f.name+" is required", "signing", "pkcs11")
			}
		}
		if len(p.KeyLabel) > 200 {
			v.at("at most 200 characters", "signing", "pkcs11", "key_label")
		}
		if c.Signing.Algorithm == "EdDSA" {
			v.at("EdDSA keys cannot be kept in a PKCS#11 token: use ES256, RS256 or PS256", "signing", "algorithm")
		}
	}
	// rsa_bits 0 is the issuer's default (3072).
	switch {
	case c.Signing.RSABits == 0:
	case !slices.Contains(issuer.RSAKeySizes, c.Signing.RSABits):
		v.at(fmt.Sprintf("%d is not one of 2048, 3072, 4096", c.Signing.RSABits), "signing", "rsa_bits")
	case c.Signing.Algorithm != "RS256" && c.Signing.Algorithm != "PS256":
		v.at(fmt.Sprintf("applies to RS256 and PS256 only, not %s", c.Signing.Algorithm), "signing", "rsa_bits")
	}
	if c.Tokens.DefaultTTL == 0 {
		c.Tokens.DefaultTTL = Duration(5 * time.Minute)
	}
	if c.Tokens.MaxTTL == 0 {
		c.Tokens.MaxTTL = Duration(time.Hour)
	}
	if c.Tokens.DefaultTTL < Duration(time.Second) {
		v.at("tokens.default_ttl must be at least 1s", "tokens", "default_ttl")
	}
	if c.Tokens.MaxTTL < c.Tokens.DefaultTTL {
		v.at("tokens.max_ttl must not be below tokens.default_ttl", "tokens", "max_ttl")
	}
	if c.Tokens.MaxTTL > Duration(24*time.Hour) {
		v.at("tokens.max_ttl must not exceed 24h", "tokens", "max_ttl")
	}
	if len(c.Upstreams) == 0 {
		v.at("at least one upstream is required", "upstreams")
	}
	names := map[string]bool{}
	issuers := map[string]bool{}
	for i := range c.Upstreams {
		c.Upstreams[i].validate(v, i, names, issuers)
	}
	if c.TLS.ClientCertificates == "request" && !slices.ContainsFunc(c.Upstreams, func(u UpstreamConfig) bool { return u.Kind == "spiffe" }) {
		v.at("tls.client_certificates: request needs a spiffe upstream to verify client certificates against", "tls", "client_certificates")
	}
	if len(c.PolicyFiles) == 0 {
		v.at("policy_files must name at least one file (without policy nothing is issued)", "policy_files")
	}
	if c.PolicyReloadInterval == 0 {
		c.PolicyReloadInterval = Duration(5 * time.Second)
	} else if c.PolicyReloadInterval < Duration(time.Second) {
		v.at("policy_reload_interval must be at least 1s", "policy_reload_interval")
	}
	for i, f := range c.PolicyFiles {
		if f == "" {
			v.at("empty policy file name", "policy_files", i)
		}
	}
	switch c.Revocation.Backend {
	case "", "embedded":
		c.Revocation.Backend = "embedded"
		if c.Revocation.Embedded.Path == "" {
			v.at("revocation.embedded.path is required for the embedded backend", "revocation")
		}
		if c.Revocation.IdentityFile != "" && c.Path(c.Revocation.IdentityFile) == c.Path(c.Revocation.Embedded.Path) {
			v.at("must not be the store's own file", "revocation", "identity_file")
		}
	case "redis":
		if len(c.Revocation.Redis.Addrs) == 0 {
			v.at("revocation.redis.addrs must name at least one host:port", "revocation", "redis")
		}
		for i, a := range c.Revocation.Redis.Addrs {
			if _, _, err := net.SplitHostPort(a); err != nil {
				v.at(fmt.Sprintf("revocation.redis.addrs[%d] %q is not host:port", i, a), "revocation", "redis", "addrs", i)
			}
		}
	default:
		v.at(fmt.Sprintf("revocation.backend %q is not embedded or redis", c.Revocation.Backend), "revocation", "backend")
	}
	switch c.Log.Level {
	case "", "debug", "info", "warn", "error":
	default:
		v.at("log.level must be debug, info, warn or error", "log", "level")
	}
	switch c.Log.Format {
	case "", "json", "text":
	default:
		v.at("log.format must be json or text", "log", "format")
	}
	c.Limits.validate(v)
	c.Audit.validate(v)
	c.Tracing.validate(v)
	c.StatusLists.validate(v)
	if len(c.Clients) > maxClients {
		v.at(fmt.Sprintf("at most %d clients", maxClients), "clients")
	}
	clientIDs := map[string]bool{}
	for i := range c.Clients {
		c.Clients[i].validate(v, i, clientIDs)
		if strings.HasPrefix(c.Clients[i].ID, "spiffe://") && c.TLS.ClientCertificates != "request" {
			v.at("a client registered by SPIFFE ID authenticates over mTLS: set tls.client_certificates: request", "clients", i, "id")
		}
	}
}

func (u *UpstreamConfig) validate(v *validator, i int, names, issuers map[string]bool) {
	at := func(msg string, path ...any) { v.at(msg, append([]any{"upstreams", i}, path...)...) }
	switch {
	case u.Name == "":
		at("upstream name is required")
	case names[u.Name]:
		at(fmt.Sprintf("duplicate upstream name %q", u.Name), "name")
	case !validName(u.Name):
		at(fmt.Sprintf("upstream name %q may hold only letters, digits, '.', '_' and '-'", u.Name), "name")
	}
	names[u.Name] = true
	switch u.Kind {
	case "oidc":
		u.validateOIDC(at, issuers)
	case "spiffe":
		u.validateSPIFFE(at, issuers)
	default:
		at(fmt.Sprintf("%q is not supported (want oidc or spiffe)", u.Kind), "kind")
	}
	for j, a := range append(slices.Clone(u.BindingAttributes), u.InstanceAttributes...) {
		if !attrs.ValidName(a) && a != "trust_domain" && a != "path" {
			at(fmt.Sprintf("attribute name %q is not valid", a), "binding_attributes", j)
		}
	}
	for _, p := range attrs.CheckGuard(u.guardConfig()) {
		at(p.Message, p.Path...)
	}
	if len(u.InstanceAttributes) > 0 && len(u.BindingAttributes) == 0 {
		at("instance_attributes needs binding_attributes", "instance_attributes")
	}
	for _, a := range u.InstanceAttributes {
		if slices.Contains(u.BindingAttributes, a) {
			at(fmt.Sprintf("attribute %q cannot both identify the instance and bind its tokens", a), "instance_attributes")
		}
	}
}

// validateSPIFFE checks a kind: spiffe upstream. Trust domains share the issuer
// namespace as spiffe://<td>, so one trust domain routes to exactly one upstream.
func (u *UpstreamConfig) validateSPIFFE(at func(string, ...any), issuers map[string]bool) {
	if len(u.Audiences) == 0 {
		at("must name at least one expected audience (an empty expectation would accept any)", "audiences")
	}
	for j, a := range u.Audiences {
		if strings.TrimSpace(a) == "" {
			at("empty audience", "audiences", j)
		}
	}
	for j, p := range u.Subjects {
		if strings.TrimSpace(p) == "" {
			at("empty subject pattern (leave subjects out to allow any subject)", "subjects", j)
		}
	}
	if u.TrustDomain == "" {
		at("trust_domain is required for a spiffe upstream", "trust_domain")
	} else if _, err := spiffeid.TrustDomainFromString(u.TrustDomain); err != nil || strings.Contains(u.TrustDomain, "/") {
		at(fmt.Sprintf("trust_domain %q is not a valid SPIFFE trust domain name", u.TrustDomain), "trust_domain")
	} else if key := "spiffe://" + u.TrustDomain; issuers[key] {
		at(fmt.Sprintf("trust domain %q is claimed by two upstreams", u.TrustDomain), "trust_domain")
	} else {
		issuers[key] = true
	}
	sources := 0
	for _, set := range []bool{u.BundleFile != "", u.BundleEndpoint != nil, u.WorkloadAPISocket != ""} {
		if set {
			sources++
		}
	}
	if sources != 1 {
		at("a spiffe upstream needs exactly one of bundle_file, bundle_endpoint, workload_api_socket", "trust_domain")
	}
	if e := u.BundleEndpoint; e != nil {
		if p, err := url.Parse(e.URL); err != nil || p.Scheme != "https" || p.Host == "" {
			at("bundle_endpoint.url must be an https URL", "bundle_endpoint", "url")
		}
		switch e.Profile {
		case "https_web":
		case "https_spiffe":
			if _, err := spiffeid.FromString(e.EndpointSPIFFEID); err != nil {
				at("bundle_endpoint.endpoint_spiffe_id must be a SPIFFE ID for the https_spiffe profile", "bundle_endpoint", "endpoint_spiffe_id")
			}
			if e.BootstrapBundle == "" {
				at("bundle_endpoint.bootstrap_bundle is required for the https_spiffe profile", "bundle_endpoint")
			}
		default:
			at("bundle_endpoint.profile must be https_web or https_spiffe", "bundle_endpoint", "profile")
		}
		if e.RefreshInterval < 0 || e.MaxStale < 0 {
			at("bundle_endpoint durations must not be negative", "bundle_endpoint")
		}
	}
	if u.WorkloadAPISocket != "" && !strings.HasPrefix(u.WorkloadAPISocket, "unix://") {
		at("workload_api_socket must be a unix:// address", "workload_api_socket")
	}
	switch {
	case u.MaxStale < 0:
		at("must not be negative", "max_stale")
	case u.MaxStale != 0 && u.WorkloadAPISocket == "":
		at("applies to workload_api_socket only (a bundle endpoint's is bundle_endpoint.max_stale)", "max_stale")
	}
	for _, f := range []struct {
		set  bool
		name string
	}{{u.Issuer != "", "issuer"}, {u.JWKSURI != "", "jwks_uri"}, {u.JWKSFile != "", "jwks_file"},
		{len(u.Algorithms) > 0, "algorithms"}, {len(u.RequiredClaims) > 0, "required_claims"},
		{u.Preset != "", "preset"}, {len(u.Attributes) > 0, "attributes"}, {u.ClockSkew != 0, "clock_skew"}} {
		if f.set {
			at(f.name+" does not apply to a spiffe upstream", f.name)
		}
	}
	if u.MaxTokenAge < 0 {
		at("must not be negative", "max_token_age")
	}
}

// validateOIDC checks a kind: oidc upstream.
func (u *UpstreamConfig) validateOIDC(at func(string, ...any), issuers map[string]bool) {
	for _, f := range []struct {
		set  bool
		name string
	}{{u.TrustDomain != "", "trust_domain"}, {u.BundleFile != "", "bundle_file"}, {u.BundleEndpoint != nil, "bundle_endpoint"},
		{u.WorkloadAPISocket != "", "workload_api_socket"}, {u.MaxStale != 0, "max_stale"}, {len(u.PathTemplates) > 0, "path_templates"}} {
		if f.set {
			at(f.name+" applies to spiffe upstreams only", f.name)
		}
	}
	// The verifier's own rules (issuer, audiences, key source, algorithms,
	// subjects, required claims, durations) are attest/oidc's, checked once there.
	for _, p := range u.oidcConfig().Check() {
		at(p.Message, p.Path...)
	}
	if u.Issuer != "" && issuers[u.Issuer] {
		at(fmt.Sprintf("issuer %q is claimed by two upstreams; a token must route to exactly one", u.Issuer), "issuer")
	}
	issuers[u.Issuer] = true
	if _, err := attrs.Compile(u.Preset, u.Attributes); err != nil {
		at("attribute mapping: "+strings.ReplaceAll(err.Error(), "\n", "; "), "attributes")
	}
}

// guardConfig is the upstream's condition and attribute bounds, with the
// attribute names its verifier can produce.
func (u *UpstreamConfig) guardConfig() attrs.GuardConfig {
	gc := attrs.GuardConfig{Condition: u.Condition, AttributeBounds: u.AttributeBounds, Known: []string{"sub", "iss"}}
	switch u.Kind {
	case "spiffe":
		gc.Known = append(gc.Known, "trust_domain", "path")
		for _, t := range u.PathTemplates {
			for _, seg := range strings.Split(t, "/") {
				if name, ok := strings.CutPrefix(seg, "{"); ok && strings.HasSuffix(name, "}") {
					gc.Known = append(gc.Known, strings.TrimSuffix(name, "}"))
				}
			}
		}
	default:
		if m, err := attrs.Compile(u.Preset, u.Attributes); err == nil {
			gc.Known = append(gc.Known, m.Names()...)
		} else {
			gc.Known = nil // the mapping's own problems are reported; names unknown
		}
	}
	return gc
}

func validName(s string) bool {
	if len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// Path resolves a path from the config against the config file's directory.
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(c.path), p)
}

// File is the path the configuration was read from.
func (c *Config) File() string { return c.path }
