package config

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/attest/attrs"
	"github.com/safeconduct/safeconduct/attest/oidc"
	"github.com/safeconduct/safeconduct/attest/spiffe"
	"github.com/safeconduct/safeconduct/issuer"
	"github.com/safeconduct/safeconduct/policy"
	"github.com/safeconduct/safeconduct/revocation"
	"github.com/safeconduct/safeconduct/revocation/boltstore"
	"github.com/safeconduct/safeconduct/revocation/redisstore"
)

// Options are the injectable dependencies of Build; zero values are defaulted.
type Options struct {
	// Logger is the application log (default: slog.Default()).
	Logger *slog.Logger
	// AuditLogger receives one event per decision (default: the audit.path file
	// when set, else AuditSink, else Logger with log=audit). Given, the audit
	// path's failure handling (audit.on_failure) is the logger's business.
	AuditLogger *slog.Logger
	// AuditSink is where audit events go when audit.path is not set (sts serve:
	// stderr); they are written through the issuer's audit writer.
	AuditSink io.Writer
	// Now is the clock (default: time.Now).
	Now func() time.Time
	// UpstreamClient supplies the transport for upstream discovery and JWKS fetches
	// (default: system roots, which honour SSL_CERT_FILE).
	UpstreamClient *http.Client
}

// Build assembles a Server from a validated Config: the signing keys (a key is
// created in an empty key_dir), the upstream verifiers, the policy, the client
// verifiers, the audit sink, tracing and the revocation store. Remote upstream keys
// are fetched lazily, so one unreachable upstream does not stop the STS from
// starting. On error everything opened so far is released.
func Build(ctx context.Context, cfg *Config, o Options) (s *issuer.Server, err error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	var closers []func() error
	defer func() {
		if err != nil {
			for _, c := range slices.Backward(closers) {
				_ = c()
			}
		}
	}()
	auditSink := o.AuditSink
	var collectors []prometheus.Collector
	if o.AuditLogger != nil {
		auditSink = nil
	} else if cfg.Audit.Path != "" {
		var closeAudit func() error
		if auditSink, closeAudit, err = openAuditSink(cfg.Audit, cfg.Path(cfg.Audit.Path), o.Logger); err != nil {
			return nil, err
		}
		closers = append(closers, closeAudit)
	} else if cfg.Audit.HTTP != nil {
		sink, err := NewAuditHTTPSink(*cfg.Audit.HTTP, cfg, cfg.Issuer, o.Logger)
		if err != nil {
			return nil, err
		}
		auditSink, collectors = sink, sink.Collectors()
		closers = append(closers, sink.Close)
	}
	router, upstreams, closeAttester, err := buildAttester(ctx, cfg, o)
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() error { closeAttester(); return nil })
	pol, err := loadPolicy(cfg)
	if err != nil {
		return nil, err
	}
	keyOpts, closeToken, err := SigningKeyOptions(cfg)
	if err != nil {
		return nil, err
	}
	closers = append(closers, closeToken)
	keys, err := issuer.OpenKeyDir(cfg.Path(cfg.Signing.KeyDir), jose.SignatureAlgorithm(cfg.Signing.Algorithm), o.Now(), keyOpts...)
	if err != nil {
		return nil, err
	}
	clients, err := buildClients(ctx, cfg, o)
	if err != nil {
		return nil, err
	}
	var tp *sdktrace.TracerProvider
	if cfg.Tracing.Enabled() {
		if tp, err = newTracerProvider(ctx, cfg); err != nil {
			return nil, err
		}
		closers = append(closers, func() error { return tp.Shutdown(context.Background()) })
	}
	store, err := openGuardedStore(cfg, o)
	if err != nil {
		return nil, err
	}
	closers = append(closers, store.Close)
	s, err = issuer.New(issuer.Config{
		Issuer:          cfg.Issuer,
		Attester:        router,
		Decider:         pol,
		Store:           store,
		Keys:            keys,
		DefaultTTL:      cfg.Tokens.DefaultTTL.D(),
		MaxTTL:          cfg.Tokens.MaxTTL.D(),
		Upstreams:       upstreams,
		Clients:         clients,
		ResourceServers: resourceServers(cfg),
		// Client certificates are requested (config.ServingTLS) on a TLS
		// listener only.
		ClientCertificates: !cfg.TLS.InsecureHTTP && cfg.TLS.ClientCertificates == "request",
		Limits:             cfg.Limits.issuer(),
		TracerProvider:     tp,
		Logger:             o.Logger,
		AuditLogger:        o.AuditLogger,
		AuditSink:          auditSink,
		AuditContinue:      cfg.Audit.OnFailure == AuditContinue,
		StatusLists:        cfg.StatusLists.issuer(),
		Collectors:         collectors,
		Now:                o.Now,
		// The server closes the store itself, after these.
		Closers: closers[:len(closers)-1],
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Check is the dry run of New behind `sts check-config`: it validates everything New
// would use (policy files, JWKS files, TLS files, the key directory) without
// creating keys, opening the store or making network requests. All problems are
// reported together.
func Check(ctx context.Context, cfg *Config) error {
	var errs []error
	if _, _, closeAttester, err := buildAttester(ctx, cfg, Options{Logger: slog.Default(), Now: time.Now}); err != nil {
		errs = append(errs, err)
	} else {
		closeAttester()
	}
	if _, err := loadPolicy(cfg); err != nil {
		errs = append(errs, err)
	}
	if _, err := buildClients(ctx, cfg, Options{Logger: slog.Default(), Now: time.Now}); err != nil {
		errs = append(errs, err)
	}
	if !cfg.TLS.InsecureHTTP && cfg.TLS.WorkloadAPISocket == "" {
		if _, err := LoadTLS(cfg); err != nil {
			errs = append(errs, err)
		}
	}
	if keyOpts, closeToken, err := SigningKeyOptions(cfg); err != nil {
		errs = append(errs, err)
	} else {
		if err := issuer.CheckKeyDir(cfg.Path(cfg.Signing.KeyDir), jose.SignatureAlgorithm(cfg.Signing.Algorithm), keyOpts...); err != nil {
			errs = append(errs, err)
		}
		_ = closeToken()
	}
	if cfg.Audit.Path != "" {
		if fi, err := os.Stat(filepath.Dir(cfg.Path(cfg.Audit.Path))); err != nil {
			errs = append(errs, cfg.errAt(err, "audit", "path"))
		} else if !fi.IsDir() {
			errs = append(errs, cfg.errAt(fmt.Errorf("%s is not a directory", filepath.Dir(cfg.Path(cfg.Audit.Path))), "audit", "path"))
		}
	}
	if err := cfg.Tracing.check(cfg); err != nil {
		errs = append(errs, err)
	}
	if cfg.Audit.HTTP != nil {
		if err := cfg.Audit.HTTP.check(cfg); err != nil {
			errs = append(errs, err)
		}
	}
	if cfg.Revocation.Backend == "redis" && cfg.Revocation.Redis.PasswordFile != "" {
		if _, err := os.Stat(cfg.Path(cfg.Revocation.Redis.PasswordFile)); err != nil {
			errs = append(errs, cfg.errAt(err, "revocation", "redis", "password_file"))
		}
	}
	return errors.Join(errs...)
}

// Attester builds the upstream verifiers of cfg and the router over them exactly as
// Build does for the server, so that a tool (stsctl policy test) attests a token as
// the server would: same keys (jwks_file, discovery, bundles), audiences,
// algorithms, times (judged at o.Now), subjects, required claims, max token age and
// attribute mappings. close releases the verifiers' background work.
func Attester(ctx context.Context, cfg *Config, o Options) (router *attest.Router, close func(), err error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	router, _, close, err = buildAttester(ctx, cfg, o)
	return router, close, err
}

// buildAttester makes one verifier per upstream and the router over them. close
// releases the verifiers' background work (bundle refreshes, Workload API streams).
// upstreams read each verifier's key stats, for metrics.
func buildAttester(ctx context.Context, cfg *Config, o Options) (router *attest.Router, upstreams []issuer.Upstream, close func(), err error) {
	routes := attest.Routes{ByIssuer: map[string]attest.Verifier{}, ByTrustDomain: map[string]attest.Verifier{}}
	var closers []func() error
	close = func() {
		for _, c := range closers {
			_ = c()
		}
	}
	var errs []error
	for i, u := range cfg.Upstreams {
		switch u.Kind {
		case "spiffe":
			sc := spiffeConfig(cfg, u, o)
			guard, err := attrs.NewGuard(u.guardConfig())
			if err != nil {
				errs = append(errs, cfg.errAt(fmt.Errorf("upstream %s: %w", u.Name, err), "upstreams", i))
				continue
			}
			sc.Guard = guard
			v, err := spiffe.New(ctx, sc)
			if err != nil {
				errs = append(errs, cfg.errAt(fmt.Errorf("upstream %s: %w", u.Name, err), "upstreams", i))
				continue
			}
			closers = append(closers, v.Close)
			routes.ByTrustDomain[v.TrustDomain().Name()] = v
			upstreams = append(upstreams, upstreamOf(u, func() issuer.UpstreamKeyStats {
				st := v.Stats()
				return issuer.UpstreamKeyStats{Fetches: st.Requests, Failures: st.Failures, Keys: st.JWTAuthorities}
			}))
		default:
			v, err := oidcVerifier(ctx, cfg, u, o)
			if err != nil {
				errs = append(errs, cfg.errAt(fmt.Errorf("upstream %s: %w", u.Name, err), "upstreams", i))
				continue
			}
			routes.ByIssuer[u.Issuer] = v
			upstreams = append(upstreams, upstreamOf(u, func() issuer.UpstreamKeyStats {
				st := v.Stats()
				return issuer.UpstreamKeyStats{Fetches: st.Requests, Failures: st.Failures, Keys: st.Keys}
			}))
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
	guard, err := attrs.NewGuard(u.guardConfig())
	if err != nil {
		return nil, err
	}
	oc := u.oidcConfig()
	oc.JWKSFile = cfg.Path(u.JWKSFile)
	oc.Now, oc.Logger, oc.HTTPClient, oc.Attributes, oc.Guard = o.Now, o.Logger, o.UpstreamClient, mapping, guard
	return oidc.New(ctx, oc)
}

// oidcConfig is the verifier configuration of an oidc upstream, without what
// assembly adds (resolved paths, clock, logger, transport, compiled attributes).
func (u *UpstreamConfig) oidcConfig() oidc.Config {
	return oidc.Config{
		Name:           u.Name,
		Issuer:         u.Issuer,
		Audiences:      u.Audiences,
		JWKSURI:        u.JWKSURI,
		JWKSFile:       u.JWKSFile,
		Algorithms:     u.Algorithms,
		ClockSkew:      u.ClockSkew.D(),
		MaxTokenAge:    u.MaxTokenAge.D(),
		Subjects:       u.Subjects,
		RequiredClaims: u.RequiredClaims,
	}
}

func spiffeConfig(cfg *Config, u UpstreamConfig, o Options) spiffe.Config {
	sc := spiffe.Config{
		Name:                u.Name,
		TrustDomain:         u.TrustDomain,
		Audiences:           u.Audiences,
		BundleFile:          cfg.Path(u.BundleFile),
		WorkloadAPISocket:   u.WorkloadAPISocket,
		WorkloadAPIMaxStale: u.MaxStale.D(),
		PathTemplates:       u.PathTemplates,
		Subjects:            u.Subjects,
		MaxTokenAge:         u.MaxTokenAge.D(),
		HTTPClient:          o.UpstreamClient,
		Now:                 o.Now,
		Logger:              o.Logger,
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

// PolicyWarnings loads the configured policy and returns its warnings (what is
// legal but probably not meant: a file defining no rules, '*' patterns that cross
// segments in a file without `version: 2`), formatted "file:line: path: message",
// for `sts check-config`. A policy that does not load has none: Check reports it.
func PolicyWarnings(cfg *Config) []string {
	p, err := loadPolicy(cfg)
	if err != nil {
		return nil
	}
	var out []string
	for _, w := range p.Warnings() {
		out = append(out, w.String())
	}
	return out
}

// PolicySource is the configured policy files as the server's hot-reload source.
func PolicySource(cfg *Config) issuer.PolicySource { return policySource{cfg} }

type policySource struct{ cfg *Config }

func (p policySource) Load() (issuer.Decider, error) { return loadPolicy(p.cfg) }

func (p policySource) Digest() [32]byte { return policyDigest(p.cfg) }

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
			tc := clientTLS()
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

// upstreamOf is what the server needs to know of u beyond its verifier.
func upstreamOf(u UpstreamConfig, stats func() issuer.UpstreamKeyStats) issuer.Upstream {
	return issuer.Upstream{
		Name:               u.Name,
		Issuer:             u.Issuer,
		BindingAttributes:  u.BindingAttributes,
		InstanceAttributes: u.InstanceAttributes,
		OneTime:            u.OneTime,
		ClockSkew:          u.ClockSkew.D(),
		KeyStats:           stats,
	}
}

// policyDigest hashes the names and contents of the policy files (a missing or
// unreadable file hashes as such, so its return is noticed too).
func policyDigest(cfg *Config) [32]byte {
	h := sha256.New()
	for _, f := range cfg.PolicyFiles {
		p := cfg.Path(f)
		io.WriteString(h, p)
		h.Write([]byte{0})
		fh, err := os.Open(p)
		if err != nil {
			io.WriteString(h, "\x00missing")
			continue
		}
		_, _ = io.Copy(h, io.LimitReader(fh, 2<<20))
		fh.Close()
		h.Write([]byte{0})
	}
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// SigningKeyOptions are the issuer key options of the signing section: the RSA
// key size and, with signing.pkcs11, the opened token (closed by the function
// returned, which is a no-op without a token).
func SigningKeyOptions(cfg *Config) ([]issuer.KeyOption, func() error, error) {
	opts := []issuer.KeyOption{issuer.WithRSABits(cfg.Signing.RSABits)}
	p := cfg.Signing.PKCS11
	if p == nil {
		return opts, func() error { return nil }, nil
	}
	tok, err := issuer.OpenPKCS11(issuer.PKCS11Config{Module: p.Module, TokenLabel: p.TokenLabel, KeyLabel: p.KeyLabel, PINFile: cfg.Path(p.PINFile)})
	if err != nil {
		return nil, nil, err
	}
	return append(opts, issuer.WithPKCS11(tok)), tok.Close, nil
}
