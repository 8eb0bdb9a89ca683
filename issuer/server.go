package issuer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-jose/go-jose/v4"

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

// Options are the server's injectable dependencies; zero values are defaulted.
type Options struct {
	// Logger is the application log (default: slog.Default()).
	Logger *slog.Logger
	// AuditLogger receives one event per decision (default: Logger with
	// log=audit).
	AuditLogger *slog.Logger
	// Now is the clock (default: time.Now).
	Now func() time.Time
	// UpstreamClient supplies the transport for upstream discovery and JWKS fetches
	// (default: system roots, which honour SSL_CERT_FILE).
	UpstreamClient *http.Client
	// Limits are the token endpoint's rate and concurrency limits (New takes them
	// from the Config; zero = per-IP limit off, default concurrency bound).
	Limits LimitsConfig
}

// Server is the STS: the token endpoint, discovery, JWKS, health and metrics.
type Server struct {
	issuer     string
	attester   Attester
	decider    atomic.Pointer[Decider]
	store      revocation.Store
	ring       *keyRing
	minter     *minter
	defaultTTL time.Duration
	maxTTL     time.Duration

	discovery []byte
	log       *slog.Logger
	auditLog  *slog.Logger
	now       func() time.Time
	metrics   *metrics
	mux       *http.ServeMux
	// limits guard /token before any verification.
	limits *tokenLimits
	// closers release what New started besides the store (verifier background work).
	closers []func() error
	// tracing exports spans (tracing.go); nil when off. handler is mux, wrapped in
	// a server span per request when tracing is on.
	tracing *tracing
	handler http.Handler
	// bindings are the runtime-change configurations by upstream name;
	// upstreamByIssuer resolves iss= selector terms.
	bindings         map[string]binding
	upstreamByIssuer map[string]string
	// clients verifies private_key_jwt assertions (nil: no client registered);
	// oneTime holds the clock skew of each upstream marked one_time.
	clients *clientRegistry
	oneTime map[string]time.Duration
}

// deps are the parts a Server is assembled from (New builds them from a Config;
// tests may build them directly).
type deps struct {
	issuer           string
	attester         Attester
	decider          Decider
	store            revocation.Store
	ring             *keyRing
	defaultTTL       time.Duration
	maxTTL           time.Duration
	bindings         map[string]binding
	upstreamByIssuer map[string]string
	clients          *clientRegistry
	oneTime          map[string]time.Duration
	// upstreams read the upstream verifiers' key stats for metrics.
	upstreams []upstreamStats
}

func newServer(d deps, o Options) (*Server, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.AuditLogger == nil {
		o.AuditLogger = o.Logger.With(slog.String("log", "audit"))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	m, err := newMinter(d.issuer, d.ring.active)
	if err != nil {
		return nil, err
	}
	doc, err := discoveryDoc(d.issuer, d.ring, d.clients.authMethods())
	if err != nil {
		return nil, err
	}
	met := newMetrics()
	s := &Server{
		issuer:           d.issuer,
		attester:         d.attester,
		store:            instrumentStore(d.store, met),
		ring:             d.ring,
		minter:           m,
		defaultTTL:       d.defaultTTL,
		maxTTL:           d.maxTTL,
		discovery:        doc,
		log:              o.Logger,
		auditLog:         o.AuditLogger,
		now:              o.Now,
		metrics:          met,
		bindings:         d.bindings,
		upstreamByIssuer: d.upstreamByIssuer,
		clients:          d.clients,
		oneTime:          d.oneTime,
	}
	s.decider.Store(&d.decider)
	s.limits = newTokenLimits(o.Limits, o.Now, s.metrics)
	s.closers = append(s.closers, func() error { s.limits.close(); return nil })
	s.routes()
	met.registerCollectors(s, d.upstreams)
	return s, nil
}

// policy returns the current issuance policy.
func (s *Server) policy() Decider { return *s.decider.Load() }

// SetPolicy swaps the issuance policy atomically (hot reload).
func (s *Server) SetPolicy(d Decider) { s.decider.Store(&d) }

func (s *Server) routes() {
	mux := http.NewServeMux()
	m := s.metrics
	mux.HandleFunc(PathToken, m.instrument("token", s.limits.wrap(s.handleToken)))
	jwks, discovery := s.keyRingHandlers() // live key ring: rotation without restart
	mux.HandleFunc(PathJWKS, m.instrument("jwks", jwks))
	mux.HandleFunc(PathOpenID, m.instrument("discovery", discovery))
	mux.HandleFunc(PathOAuthMeta, m.instrument("discovery", discovery))
	mux.HandleFunc("POST "+PathIntrospect, m.instrument("introspect", s.handleIntrospect))
	mux.HandleFunc("GET "+PathRevocations, m.instrument("feed", s.handleSnapshot))
	mux.HandleFunc("GET "+PathRevocationFeed, m.instrument("feed", s.handleStream))
	mux.HandleFunc("POST "+PathAdmin+"revocations", m.instrument("admin", s.handleCreateRevocation))
	mux.HandleFunc("GET "+PathAdmin+"revocations", m.instrument("admin", s.handleListRevocations))
	mux.HandleFunc("DELETE "+PathAdmin+"revocations/{id}", m.instrument("admin", s.handleLiftRevocation))
	mux.HandleFunc("POST "+PathAdmin+"workloads/change", m.instrument("admin", s.handleWorkloadChange))
	mux.HandleFunc("POST "+PathAdminKeyRevoke, m.instrument("admin", s.handleRevokeKey))
	mux.HandleFunc("/healthz", s.handleHealthz)
	mux.HandleFunc("/readyz", s.handleReadyz)
	mux.Handle("/metrics", m.handler())
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not found", http.StatusNotFound)
	})
	s.mux = mux
	s.handler = mux
}

// Handler is the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// ActiveKeyID is the kid that signs new tokens.
func (s *Server) ActiveKeyID() string { return s.currentRing().active.kid }

// currentRing is the key ring in force now (the live one once the server is wired
// to key_dir, else the startup ring).
func (s *Server) currentRing() *keyRing {
	if s.ring.live != nil {
		return s.ring.live.current()
	}
	return s.ring
}

// Algorithm is the signing algorithm of the active key.
func (s *Server) Algorithm() jose.SignatureAlgorithm { return s.currentRing().active.alg }

func (s *Server) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

// handleReadyz fails when the revocation store cannot be reached: a replica that
// cannot check revocation must not receive traffic.
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := s.store.Ping(ctx); err != nil {
		s.log.WarnContext(ctx, "not ready: revocation store", slog.String("error", err.Error()))
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("revocation store unavailable\n"))
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// Serve serves on l until ctx ends, then drains in-flight requests for up to
// drain. With tlsConfig nil it serves plain HTTP.
func (s *Server) Serve(ctx context.Context, l net.Listener, tlsConfig *tls.Config, drain time.Duration) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       120 * time.Second,
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
