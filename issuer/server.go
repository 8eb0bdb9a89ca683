package issuer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/policy"
	"github.com/safeconduct/safeconduct/revocation"
)

// Attester turns a presented credential into an attested workload
// (attest.Router in production).
type Attester interface {
	// Attest verifies raw presented as tokenType; errors wrap attest's sentinels.
	Attest(ctx context.Context, raw, tokenType string) (*attest.Workload, error)
	// AttestX509 verifies a client certificate chain (leaf first) as an X.509-SVID.
	AttestX509(ctx context.Context, chain []*x509.Certificate) (*attest.Workload, error)
}

// Decider is the issuance policy (policy.Policy in production).
type Decider interface {
	// Decide answers one request; it is pure and safe for concurrent use.
	Decide(req policy.Request) policy.Decision
	// DecideAdmin answers whether a caller may perform an admin action.
	DecideAdmin(req policy.AdminRequest) policy.Decision
}

// Config are the typed parts a Server is assembled from. Package config builds them
// from the configuration file; tests and embedders may build them directly. The
// optional fields are defaulted when zero.
type Config struct {
	// Issuer is the STS's issuer URL (iss of minted tokens, base of its endpoints).
	Issuer string
	// Attester verifies subject, actor and client credentials (attest.Router).
	Attester Attester
	// Decider is the issuance policy in force at start (SetPolicy swaps it).
	Decider Decider
	// Store is the revocation store; Close closes it.
	Store revocation.Store
	// Keys are the signing keys (OpenKeyDir).
	Keys *SigningKeys
	// DefaultTTL and MaxTTL bound minted token lifetimes.
	DefaultTTL, MaxTTL time.Duration
	// Upstreams describe the trusted upstreams: runtime binding, one-time tokens,
	// key statistics for metrics.
	Upstreams []Upstream
	// Clients verify private_key_jwt assertions, by client ID (nil: none
	// registered). Each verifier must accept only ClientAssertionAudiences.
	Clients map[string]attest.ParsedVerifier
	// ResourceServers are the clients (by client ID, or SPIFFE ID for mTLS) that
	// may introspect tokens whose aud holds one of their audiences, without an
	// admin rule (introspect.go).
	ResourceServers map[string][]string
	// ClientCertificates says the listener requests client certificates
	// (tls.client_certificates: request): discovery then offers tls_client_auth
	// and certificate-bound tokens (RFC 8705).
	ClientCertificates bool
	// Limits are the token endpoint's rate and concurrency limits (zero = per-IP
	// limit off, default concurrency bound).
	Limits Limits
	// TracerProvider, when set, exports a span per request and per pipeline
	// step; Close shuts it down.
	TracerProvider *sdktrace.TracerProvider
	// Logger is the application log (default: slog.Default()).
	Logger *slog.Logger
	// AuditLogger receives one event per decision (default: Logger with
	// log=audit). AuditSink replaces it.
	AuditLogger *slog.Logger
	// AuditSink, when set, receives the audit events (JSON lines) through a
	// bounded queue and one writer goroutine (audit.go); its failures are
	// counted, logged and shown by /readyz. AuditContinue keeps issuing while
	// events cannot be written (audit.on_failure: continue); by default /token
	// and admin changes then answer 503.
	AuditSink     io.Writer
	AuditContinue bool
	// StatusLists, when set, gives every minted token an entry in a Token Status
	// List served at PathStatusLists (statuslist.go); the Store must implement
	// revocation.StatusStore. Nil: off, tokens carry no status claim.
	StatusLists *StatusListConfig
	// Collectors are more metrics for the server's registry (an audit sink's).
	Collectors []prometheus.Collector
	// Now is the clock (default: time.Now).
	Now func() time.Time
	// Closers release what the parts started (verifier background work, an
	// audit file); Close calls them before closing the store.
	Closers []func() error
}

// Upstream is what the server needs to know of one trusted upstream beyond its
// verifier.
type Upstream struct {
	Name string
	// Issuer is the upstream's iss (empty for SPIFFE), for iss= revocation
	// selectors.
	Issuer string
	// BindingAttributes are the runtime attributes tokens are bound to;
	// InstanceAttributes (with the subject) tell instances apart.
	BindingAttributes, InstanceAttributes []string
	// OneTime makes each token usable for one exchange; ClockSkew is how long
	// past its exp its jti is remembered (default 1m).
	OneTime   bool
	ClockSkew time.Duration
	// KeyStats reads the verifier's key fetching counters (nil: none).
	KeyStats func() UpstreamKeyStats
}

// Server is the STS as an HTTP server: it routes to its concerns, guards /token
// with the limits and overload gate, serves health, and drains on shutdown; the
// metrics have a listener of their own (metricsserver.go). The concerns are their
// own types:
//
//   - tokenService: the /token pipeline (exchange.go, token.go, clients.go);
//   - adminService: the admin API, introspection and the revocation feed
//     (admin.go, keyrevoke.go, feed.go);
//   - signing: the signing keys, their rotation, the JWKS and discovery documents
//     (keys.go, rotation.go, own.go).
//
// What they share (the attester, the policy in force, the revocation store, the
// signing keys, runtime bindings, clock, loggers, metrics, tracing) is core.
type Server struct {
	*core
	tokens *tokenService
	admin  *adminService
	mux    *http.ServeMux
	// handler is mux, wrapped in a server span per request when tracing is on;
	// public is handler given the request id (auditevent.go).
	handler http.Handler
	public  http.Handler
	// limits guard /token before any verification; adminLimits the other
	// endpoints that verify a credential; conns bound open connections.
	limits      *tokenLimits
	adminLimits *tokenLimits
	conns       *connLimiter
	// closers release what the parts started (verifier background work, the
	// audit file, tracing, the limits' sweeper); Close then closes the store.
	closers []func() error
}

// core are the parts the server's concerns share. New sets them; after that only
// the policy changes (SetPolicy, atomically).
type core struct {
	issuer   string
	attester Attester
	decider  atomic.Pointer[Decider]
	store    revocation.Store
	*signing
	// bindings are the runtime-change configurations by upstream name.
	bindings map[string]binding
	log      *slog.Logger
	auditLog *slog.Logger
	// audit is the audit path's writer (nil when AuditLogger was given);
	// clientIP names the client of a request in audit events.
	audit    *auditWriter
	clientIP func(*http.Request) netip.Addr
	now      func() time.Time
	metrics  *metrics
	// tracing exports spans (tracing.go); nil when off.
	tracing *tracing
	maxTTL  time.Duration
	// clients verifies private_key_jwt assertions (nil: no client registered);
	// resourceServers are the audiences each resource server may introspect.
	clients         *clientRegistry
	resourceServers map[string][]string
	// status is the status list concern; nil when off.
	status *statusLists
	// policyState is the live policy's status (PathPolicyStatus, gauges).
	policyState *policyState
}

// policy returns the current issuance policy.
func (c *core) policy() Decider { return *c.decider.Load() }

// New assembles a Server from its parts. It starts no listener (see Serve).
func New(c Config) (*Server, error) {
	switch {
	case c.Issuer == "":
		return nil, errors.New("issuer: Config.Issuer is required")
	case c.Attester == nil || c.Decider == nil || c.Store == nil || c.Keys == nil:
		return nil, errors.New("issuer: Config needs an Attester, a Decider, a Store and Keys")
	case c.DefaultTTL <= 0 || c.MaxTTL < c.DefaultTTL:
		return nil, errors.New("issuer: Config needs 0 < DefaultTTL <= MaxTTL")
	}
	return newServer(c)
}

// newServer is New without the checks of required parts (tests of one concern
// leave the others out).
func newServer(c Config) (*Server, error) {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.AuditLogger == nil {
		c.AuditLogger = c.Logger.With(slog.String("log", "audit"))
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	var clients *clientRegistry
	if len(c.Clients) > 0 {
		clients = &clientRegistry{byID: c.Clients}
	}
	met := newMetrics()
	met.registerStoreHealth(c.Store)
	met.registry.MustRegister(c.Collectors...)
	var tr *tracing
	if c.TracerProvider != nil {
		tr = &tracing{provider: c.TracerProvider, tracer: c.TracerProvider.Tracer(tracerName)}
	}
	cr := &core{
		issuer:   c.Issuer,
		attester: c.Attester,
		store:    instrumentStore(c.Store, met),
		bindings: map[string]binding{},
		log:      c.Logger,
		auditLog: slog.New(eventHandler{next: c.AuditLogger.Handler()}),
		now:      c.Now,
		metrics:  met,
		tracing:  tr,
		maxTTL:   c.MaxTTL,
		clients:  clients,
		// Cloned: the map is read without a lock.
		resourceServers: maps.Clone(c.ResourceServers),
	}
	if c.AuditSink != nil {
		cr.audit = newAuditWriter(c.AuditSink, !c.AuditContinue, met, c.Logger, c.Now)
		cr.auditLog = slog.New(eventHandler{next: newAuditHandler(cr.audit, nil)}).With(slog.String("log", "audit"))
	}
	cr.decider.Store(&c.Decider)
	cr.policyState = newPolicyState(met.registry)
	cr.policyState.setLive(c.Decider, c.Now())
	met.initPolicy(c.Decider)
	keys, err := newSigning(cr, c.Keys.ring, discoveryMeta{authMethods: clients.authMethods(c.ClientCertificates), mtls: c.ClientCertificates})
	if err != nil {
		return nil, err
	}
	cr.signing = keys
	if c.StatusLists != nil {
		sl, err := newStatusLists(cr, *c.StatusLists, c.Store)
		if err != nil {
			return nil, err
		}
		cr.status = sl
		c.Closers = append([]func() error{sl.close}, c.Closers...)
	}
	s := &Server{
		core:    cr,
		limits:  newTokenLimits(c.Limits, c.Now, met),
		closers: slices.Clone(c.Closers),
	}
	s.adminLimits = newAdminLimits(c.Limits, c.Now, met, s.limits.gate)
	if cr.status != nil {
		cr.status.limitIPs(c.Limits, c.Now, met, s.limits.clientAddr)
	}
	s.conns = newConnLimiter(c.Limits.MaxConnections, met)
	s.tokens = &tokenService{core: cr, limits: s.limits, defaultTTL: c.DefaultTTL, oneTime: map[string]time.Duration{}}
	s.admin = &adminService{core: cr, upstreamByIssuer: map[string]string{}}
	var stats []upstreamStats
	for _, u := range c.Upstreams {
		if len(u.BindingAttributes) > 0 {
			cr.bindings[u.Name] = binding{names: u.BindingAttributes, instance: u.InstanceAttributes}
			met.changesFired.WithLabelValues(u.Name)
		}
		if u.Issuer != "" {
			s.admin.upstreamByIssuer[u.Issuer] = u.Name
		}
		if u.OneTime {
			skew := u.ClockSkew
			if skew <= 0 {
				skew = time.Minute // the most any verifier allows
			}
			s.tokens.oneTime[u.Name] = skew
		}
		if u.KeyStats != nil {
			stats = append(stats, upstreamStats{name: u.Name, stats: u.KeyStats})
		}
	}
	s.closers = append(s.closers, func() error { s.limits.close(); return nil })
	if cr.audit != nil {
		// Drain the audit queue before the parts' closers close the sink.
		s.closers = append([]func() error{cr.audit.close}, s.closers...)
	}
	s.startRefusalAudit()
	s.routes()
	met.registerCollectors(keys, c.Now, stats)
	s.startTracing()
	s.public = withRequestID(s.handler)
	return s, nil
}

// SetPolicy swaps the issuance policy atomically (hot reload).
func (s *Server) SetPolicy(d Decider) {
	s.metrics.initPolicy(d)
	s.decider.Store(&d)
	s.policyState.setLive(d, s.now())
}

func (s *Server) routes() {
	mux := http.NewServeMux()
	m, t, a, al := s.metrics, s.tokens, s.admin, s.adminLimits
	mux.HandleFunc(PathToken, m.instrument("token", s.limits.wrap(t.handleToken)))
	// The live key ring: rotation without restart.
	mux.HandleFunc(PathJWKS, m.instrument("jwks", s.signing.jwksHandler))
	mux.HandleFunc(PathOpenID, m.instrument("discovery", s.signing.discoveryHandler))
	mux.HandleFunc(PathOAuthMeta, m.instrument("discovery", s.signing.discoveryHandler))
	mux.HandleFunc("POST "+PathIntrospect, m.instrument("introspect", al.wrap(a.handleIntrospect)))
	mux.HandleFunc("POST "+PathRevoke, m.instrument("revoke", al.wrap(a.handleRevoke)))
	mux.HandleFunc(PathIntrospect, postOnly)
	mux.HandleFunc(PathRevoke, postOnly)
	mux.HandleFunc("GET "+PathRevocations, m.instrument("feed", al.wrap(a.handleSnapshot)))
	mux.HandleFunc("GET "+PathRevocationFeed, m.instrument("feed", al.wrap(a.handleStream)))
	mux.HandleFunc("POST "+PathAdmin+"revocations", m.instrument("admin", al.wrap(a.handleCreateRevocation)))
	mux.HandleFunc("GET "+PathAdmin+"revocations", m.instrument("admin", al.wrap(a.handleListRevocations)))
	mux.HandleFunc("DELETE "+PathAdmin+"revocations/{id}", m.instrument("admin", al.wrap(a.handleLiftRevocation)))
	mux.HandleFunc("POST "+PathAdmin+"workloads/change", m.instrument("admin", al.wrap(a.handleWorkloadChange)))
	mux.HandleFunc("POST "+PathAdminKeyRevoke, m.instrument("admin", al.wrap(a.handleRevokeKey)))
	if s.status != nil {
		mux.HandleFunc("GET "+PathStatusLists+"{name}", m.instrument("statuslist", s.status.handleStatusList))
	}
	mux.HandleFunc("/healthz", s.handleHealthz)
	mux.HandleFunc("/readyz", s.handleReadyz)
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not found", http.StatusNotFound)
	})
	s.mux = mux
	s.handler = mux
}

// postOnly answers the other methods of a POST endpoint: 405 with Allow.
func postOnly(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Allow", http.MethodPost)
	writeError(w, &oauthError{Code: codeInvalidRequest, Description: "use POST", Status: http.StatusMethodNotAllowed})
}

// Handler is the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.public }

// ActiveKeyID is the kid that signs new tokens.
func (s *Server) ActiveKeyID() string { return s.currentRing().active.kid }

// Algorithm is the signing algorithm of the active key.
func (s *Server) Algorithm() jose.SignatureAlgorithm { return s.currentRing().active.alg }

func (s *Server) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

// handleReadyz fails when the revocation store cannot be reached, has lost its
// data or cannot confirm writes: a replica that cannot check or record
// revocation must not receive traffic.
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if s.auditRefuses() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("audit log cannot be written\n"))
		return
	}
	if err := s.store.Ping(ctx); err != nil {
		s.log.WarnContext(ctx, "not ready: revocation store", slog.String("error", err.Error()))
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(readyzReason(err) + "\n"))
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// Serve serves on l until ctx ends, then drains in-flight requests for up to
// drain. With tlsConfig nil it serves plain HTTP.
func (s *Server) Serve(ctx context.Context, l net.Listener, tlsConfig *tls.Config, drain time.Duration) error {
	srv := &http.Server{
		Handler:           withHSTS(s.public),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    16 << 10,
		TLSConfig:         tlsConfig,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		ConnContext: func(c context.Context, nc net.Conn) context.Context {
			ci := &connIdentity{}
			if tc, ok := nc.(*tls.Conn); ok {
				nc = tc.NetConn()
			}
			ci.raw, _ = nc.(syscall.Conn) // the accepted TCP connection
			return context.WithValue(c, connKey{}, ci)
		},
	}
	endStreamsOnShutdown(srv)
	s.conns.apply(srv)
	errc := make(chan error, 1)
	go func() {
		if tlsConfig != nil {
			errc <- srv.ServeTLS(l, "", "")
		} else {
			errc <- srv.Serve(l)
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Close releases the server's resources: verifiers' background work and the
// revocation store.
func (s *Server) Close() error {
	for _, c := range s.closers {
		_ = c()
	}
	return s.store.Close()
}
