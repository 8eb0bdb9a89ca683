package issuer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/attest/attrs"
	"github.com/safeconduct/safeconduct/attest/oidc"
	"github.com/safeconduct/safeconduct/attest/spiffe"
	"github.com/safeconduct/safeconduct/policy"
	"github.com/safeconduct/safeconduct/revocation"
	"github.com/safeconduct/safeconduct/revocation/boltstore"
	"github.com/safeconduct/safeconduct/revocation/redisstore"
)

// New assembles a Server from a validated Config: the signing keys (a key is created
// in an empty key_dir), the upstream verifiers, the policy and the revocation store.
// Remote upstream keys are fetched lazily, so one unreachable upstream does not stop
// the STS from starting.
func New(ctx context.Context, cfg *Config, o Options) (s *Server, err error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Limits.isZero() {
		o.Limits = cfg.Limits
	}
	closeAudit := func() error { return nil }
	if o.AuditLogger == nil && cfg.Audit.Path != "" {
		appLog := o.Logger
		if appLog == nil {
			appLog = slog.Default()
		}
		o.AuditLogger, closeAudit, err = openAuditLogger(cfg.Audit, cfg.Path(cfg.Audit.Path), appLog)
		if err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				_ = closeAudit()
			}
		}()
	}
	router, upstreams, closeAttester, err := buildAttester(ctx, cfg, o)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			closeAttester()
		}
	}()
	pol, err := loadPolicy(cfg)
	if err != nil {
		return nil, err
	}
	ring, err := loadKeyRing(cfg.Path(cfg.Signing.KeyDir), jose.SignatureAlgorithm(cfg.Signing.Algorithm), o.Now())
	if err != nil {
		return nil, err
	}
	clients, err := buildClients(ctx, cfg, o)
	if err != nil {
		return nil, err
	}
	store, err := openStore(cfg, o)
	if err != nil {
		return nil, err
	}
	s, err = newServer(deps{
		issuer:           cfg.Issuer,
		attester:         router,
		decider:          pol,
		store:            store,
		ring:             ring,
		defaultTTL:       cfg.Tokens.DefaultTTL.D(),
		maxTTL:           cfg.Tokens.MaxTTL.D(),
		bindings:         bindingsOf(cfg),
		upstreamByIssuer: upstreamsByIssuer(cfg),
		upstreams:        upstreams,
		clients:          clients,
		oneTime:          oneTimeUpstreams(cfg),
	}, o)
	if err != nil {
		store.Close()
		return nil, err
	}
	if err = s.startTracing(ctx, cfg); err != nil {
		store.Close()
		return nil, err
	}
	s.closers = append(s.closers, func() error { closeAttester(); return nil }, closeAudit)
	return s, nil
}

// Check is the dry run of New behind `sts check-config`: it validates everything New
// would use (policy files, JWKS files, TLS files, the key directory) without
// creating keys, opening the store or making network requests. All problems are
// reported together.
func Check(ctx context.Context, cfg *Config) error {
	var errs []error
	if _, _, closeAttester, err := buildAttester(ctx, cfg, Options{}); err != nil {
		errs = append(errs, err)
	} else {
		closeAttester()
	}
	if _, err := loadPolicy(cfg); err != nil {
		errs = append(errs, err)
	}
	if _, err := buildClients(ctx, cfg, Options{}); err != nil {
		errs = append(errs, err)
	}
	if !cfg.TLS.InsecureHTTP && cfg.TLS.WorkloadAPISocket == "" {
		if _, err := LoadTLS(cfg); err != nil {
			errs = append(errs, err)
		}
	}
	dir := cfg.Path(cfg.Signing.KeyDir)
	if _, err := os.Stat(dir); err == nil {
		if keys, err := readKeys(dir, jose.SignatureAlgorithm(cfg.Signing.Algorithm)); err != nil {
			errs = append(errs, err)
		} else if len(keys) > 0 {
			if _, err := newKeyRing(keys, jose.SignatureAlgorithm(cfg.Signing.Algorithm)); err != nil {
				errs = append(errs, fmt.Errorf("%w (a %s key is created at start when none exists)", err, cfg.Signing.Algorithm))
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("signing.key_dir: %w", err))
	}
	if cfg.Audit.Path != "" {
		if fi, err := os.Stat(filepath.Dir(cfg.Path(cfg.Audit.Path))); err != nil {
			errs = append(errs, fmt.Errorf("audit.path: %w", err))
		} else if !fi.IsDir() {
			errs = append(errs, fmt.Errorf("audit.path: %s is not a directory", filepath.Dir(cfg.Path(cfg.Audit.Path))))
		}
	}
	if err := cfg.Tracing.check(cfg); err != nil {
		errs = append(errs, err)
	}
	if cfg.Revocation.Backend == "redis" && cfg.Revocation.Redis.PasswordFile != "" {
		if _, err := os.Stat(cfg.Path(cfg.Revocation.Redis.PasswordFile)); err != nil {
			errs = append(errs, fmt.Errorf("revocation.redis.password_file: %w", err))
		}
	}
	return errors.Join(errs...)
}

// buildAttester makes one verifier per upstream and the router over them. close
// releases the verifiers' background work (bundle refreshes, Workload API streams).
// upstreams read each verifier's key stats, for metrics.
func buildAttester(ctx context.Context, cfg *Config, o Options) (router *attest.Router, upstreams []upstreamStats, close func(), err error) {
	routes := attest.Routes{ByIssuer: map[string]attest.Verifier{}, ByTrustDomain: map[string]attest.Verifier{}}
	var closers []func() error
	close = func() {
		for _, c := range closers {
			_ = c()
		}
	}
	var errs []error
	for _, u := range cfg.Upstreams {
		switch u.Kind {
		case "spiffe":
			v, err := spiffe.New(ctx, spiffeConfig(cfg, u, o))
			if err != nil {
				errs = append(errs, fmt.Errorf("upstream %s: %w", u.Name, err))
				continue
			}
			closers = append(closers, v.Close)
			routes.ByTrustDomain[v.TrustDomain().Name()] = v
			upstreams = append(upstreams, upstreamStats{name: u.Name, stats: func() upstreamKeyStats {
				st := v.Stats()
				return upstreamKeyStats{Fetches: st.Requests, Failures: st.Failures, Keys: st.JWTAuthorities}
			}})
		default:
			v, err := oidcVerifier(ctx, cfg, u, o)
			if err != nil {
				errs = append(errs, fmt.Errorf("upstream %s: %w", u.Name, err))
				continue
			}
			routes.ByIssuer[u.Issuer] = v
			upstreams = append(upstreams, upstreamStats{name: u.Name, stats: func() upstreamKeyStats {
				st := v.Stats()
				return upstreamKeyStats{Fetches: st.Requests, Failures: st.Failures, Keys: st.Keys}
			}})
		}
	}
	if len(errs) == 0 {
		router, err = attest.NewRouterRoutes(routes)
		if err == nil {
			return router, upstreams, close, nil
		}
		errs = append(errs, err)
	}
	close()
	return nil, nil, nil, errors.Join(errs...)
}

func oidcVerifier(ctx context.Context, cfg *Config, u UpstreamConfig, o Options) (*oidc.Verifier, error) {
	var mapping *attrs.Mapping
	if u.Preset != "" || len(u.Attributes) > 0 {
		m, err := attrs.Compile(u.Preset, u.Attributes)
		if err != nil {
			return nil, err
		}
		mapping = m
	}
	return oidc.New(ctx, oidc.Config{
		Name:           u.Name,
		Issuer:         u.Issuer,
		Audiences:      u.Audiences,
		JWKSURI:        u.JWKSURI,
		JWKSFile:       cfg.Path(u.JWKSFile),
		Algorithms:     u.Algorithms,
		ClockSkew:      u.ClockSkew.D(),
		MaxTokenAge:    u.MaxTokenAge.D(),
		Now:            o.Now,
		Logger:         o.Logger,
		HTTPClient:     o.UpstreamClient,
		Subjects:       u.Subjects,
		RequiredClaims: u.RequiredClaims,
		Attributes:     mapping,
	})
}

func spiffeConfig(cfg *Config, u UpstreamConfig, o Options) spiffe.Config {
	sc := spiffe.Config{
		Name:              u.Name,
		TrustDomain:       u.TrustDomain,
		Audiences:         u.Audiences,
		BundleFile:        cfg.Path(u.BundleFile),
		WorkloadAPISocket: u.WorkloadAPISocket,
		PathTemplates:     u.PathTemplates,
		Subjects:          u.Subjects,
		HTTPClient:        o.UpstreamClient,
		Now:               o.Now,
		Logger:            o.Logger,
	}
	if e := u.BundleEndpoint; e != nil {
		sc.BundleEndpoint = &spiffe.EndpointConfig{
			URL:              e.URL,
			Profile:          e.Profile,
			EndpointSPIFFEID: e.EndpointSPIFFEID,
			BootstrapBundle:  cfg.Path(e.BootstrapBundle),
			RefreshInterval:  e.RefreshInterval.D(),
			MaxStale:         e.MaxStale.D(),
		}
	}
	return sc
}

func loadPolicy(cfg *Config) (*policy.Policy, error) {
	files := make([]string, len(cfg.PolicyFiles))
	for i, f := range cfg.PolicyFiles {
		files[i] = cfg.Path(f)
	}
	p, err := policy.Load(files...)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(cfg.Upstreams))
	for i, u := range cfg.Upstreams {
		names[i] = u.Name
	}
	if err := p.ValidateUpstreams(names); err != nil {
		return nil, err
	}
	return p, nil
}

// LoadPolicy loads and validates the configured policy files (for hot reload).
func LoadPolicy(cfg *Config) (Decider, error) { return loadPolicy(cfg) }

func openStore(cfg *Config, o Options) (revocation.Store, error) {
	revokeTTL := cfg.Tokens.MaxTTL.D() + time.Minute
	switch cfg.Revocation.Backend {
	case "redis":
		r := cfg.Revocation.Redis
		rc := redisstore.Config{
			Addrs:      r.Addrs,
			MasterName: r.MasterName,
			Cluster:    r.Cluster,
			Username:   r.Username,
			DB:         r.DB,
		}
		if r.PasswordFile != "" {
			pw, err := os.ReadFile(cfg.Path(r.PasswordFile))
			if err != nil {
				return nil, fmt.Errorf("revocation.redis.password_file: %w", err)
			}
			rc.Password = strings.TrimRight(string(pw), "\r\n")
		}
		if r.TLS {
			tc := &tls.Config{MinVersion: tls.VersionTLS12}
			if r.CAFile != "" {
				pem, err := os.ReadFile(cfg.Path(r.CAFile))
				if err != nil {
					return nil, fmt.Errorf("revocation.redis.ca_file: %w", err)
				}
				tc.RootCAs = x509.NewCertPool()
				if !tc.RootCAs.AppendCertsFromPEM(pem) {
					return nil, errors.New("revocation.redis.ca_file: no certificate found")
				}
			}
			rc.TLS = tc
		}
		// With replicas (Sentinel or Cluster) an acknowledged revocation is also
		// confirmed by a replica (WAIT), so a failover cannot lose it.
		replicated := r.MasterName != "" || r.Cluster || len(r.Addrs) > 1
		return redisstore.New(redisstore.NewClient(rc), redisstore.Options{
			Prefix: r.Prefix, Now: o.Now, RevokeTTL: revokeTTL, ConfirmReplicas: replicated, ReplicaTimeout: time.Second,
		}), nil
	default:
		return boltstore.Open(cfg.Path(cfg.Revocation.Embedded.Path), boltstore.Options{Now: o.Now, RevokeTTL: revokeTTL})
	}
}

func bindingsOf(cfg *Config) map[string]binding {
	out := map[string]binding{}
	for _, u := range cfg.Upstreams {
		if len(u.BindingAttributes) > 0 {
			out[u.Name] = binding{names: u.BindingAttributes, instance: u.InstanceAttributes}
		}
	}
	return out
}

// oneTimeUpstreams maps each upstream marked one_time to its clock skew (its
// tokens' jti are remembered until exp plus the skew).
func oneTimeUpstreams(cfg *Config) map[string]time.Duration {
	out := map[string]time.Duration{}
	for _, u := range cfg.Upstreams {
		if u.OneTime {
			skew := u.ClockSkew.D()
			if skew <= 0 {
				skew = time.Minute // the most any verifier allows
			}
			out[u.Name] = skew
		}
	}
	return out
}

func upstreamsByIssuer(cfg *Config) map[string]string {
	out := map[string]string{}
	for _, u := range cfg.Upstreams {
		if u.Issuer != "" {
			out[u.Issuer] = u.Name
		}
	}
	return out
}
