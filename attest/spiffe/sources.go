package spiffe

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/safeconduct/safeconduct/attest/internal/fetch"
)

// newCache returns an empty bundleCache with the settings common to every source.
func newCache(ctx context.Context, s *settings, what string) *bundleCache {
	base, cancel := context.WithCancel(context.WithoutCancel(ctx))
	return &bundleCache{
		what:    what,
		baseCtx: base,
		cancel:  cancel,
		timeout: DefaultFetchTimeout,
		now:     s.Now,
		log:     s.Logger.With("upstream", s.Name, "trust_domain", s.TrustDomain),
	}
}

// fileSource reads a bundle file: at New (which fails on a bad file), then again
// every FileCheckInterval while in use. A bad or missing file later on leaves the
// last good bundle in place (a local file never goes stale).
func fileSource(ctx context.Context, s *settings) (*bundleCache, error) {
	c := newCache(ctx, s, "bundle file "+s.BundleFile)
	c.minInterval = FileCheckInterval
	c.refreshAfter = func(*snapshot) time.Duration { return FileCheckInterval }
	c.fetch = func(context.Context) (*snapshot, error) {
		b, err := readBundleFile(s.td, s.BundleFile, s.maxBytes)
		if err != nil {
			return nil, err
		}
		return vetSPIFFEBundle(s.td, b)
	}
	snap, err := c.fetch(ctx)
	if err != nil {
		c.cancel()
		return nil, fmt.Errorf("spiffe upstream %q: bundle_file: %w", s.Name, err)
	}
	snap.fetched = s.Now()
	c.cur.Store(snap)
	return c, nil
}

// endpoint fetches a SPIFFE bundle endpoint (SPIFFE Federation §5) with the bounded
// client of package attest/internal/fetch (deadline, size cap, 200 only, no
// redirects). https_spiffe authenticates the server with go-spiffe's tlsconfig, as
// federation.FetchBundle does, against the bootstrap bundle and then the latest
// bundle fetched.
type endpoint struct {
	url      string
	td       spiffeid.TrustDomain
	client   *http.Client
	requests atomic.Uint64
}

func endpointSource(ctx context.Context, s *settings) (*bundleCache, *endpoint, error) {
	e := s.endpoint
	c := newCache(ctx, s, "bundle endpoint "+e.URL)
	c.timeout = e.FetchTimeout
	c.maxStale = e.MaxStale
	c.minInterval = MinRefreshInterval
	if e.RefreshInterval > 0 && e.RefreshInterval < c.minInterval {
		c.minInterval = e.RefreshInterval
	}
	c.refreshAfter = func(snap *snapshot) time.Duration {
		switch {
		case e.RefreshInterval > 0:
			return e.RefreshInterval
		case snap.refreshHint > 0:
			return min(max(snap.refreshHint, MinRefreshInterval), DefaultRefreshInterval)
		}
		return DefaultRefreshInterval
	}

	rt := fetch.Transport(s.HTTPClient, e.FetchTimeout)
	if e.Profile == ProfileSPIFFE {
		boot, err := readBundleFile(s.endpointID.TrustDomain(), e.BootstrapBundle, s.maxBytes)
		if err == nil && boot.X509Bundle().Empty() {
			err = fmt.Errorf("no X.509 authority")
		}
		if err != nil {
			c.cancel()
			return nil, nil, fmt.Errorf("spiffe upstream %q: bundle_endpoint.bootstrap_bundle: %w", s.Name, err)
		}
		auth := &endpointAuth{bootstrap: boot.X509Bundle()}
		if s.endpointID.MemberOf(s.td) {
			auth.latest = c
		}
		t, ok := rt.(*http.Transport)
		if ok {
			t = t.Clone()
		} else {
			t = fetch.DefaultTransport(e.FetchTimeout)
		}
		t.TLSClientConfig = tlsconfig.TLSClientConfig(auth, tlsconfig.AuthorizeID(s.endpointID))
		rt = t
	}
	ep := &endpoint{url: e.URL, td: s.td, client: fetch.NewClient(rt, e.FetchTimeout, e.MaxResponseBytes)}
	c.fetch = ep.fetch
	return c, ep, nil
}

func (e *endpoint) fetch(ctx context.Context) (*snapshot, error) {
	e.requests.Add(1)
	body, err := fetch.Get(ctx, e.client, e.url, "application/json")
	if err != nil {
		return nil, err
	}
	b, err := parseBundle(e.td, body)
	if err != nil {
		return nil, fmt.Errorf("bundle refused: %w", err)
	}
	snap, err := vetSPIFFEBundle(e.td, b)
	if err != nil {
		return nil, fmt.Errorf("bundle refused: %w", err)
	}
	return snap, nil
}

// endpointAuth is the x509bundle.Source that authenticates an https_spiffe
// endpoint: the latest good bundle of the trust domain once there is one (when the
// endpoint belongs to the trust domain it serves), else the bootstrap bundle.
type endpointAuth struct {
	bootstrap *x509bundle.Bundle
	latest    *bundleCache // nil when the endpoint is of another trust domain
}

func (a *endpointAuth) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if a.latest != nil {
		if s := a.latest.cur.Load(); s != nil && s.x509 != nil && !s.x509.Empty() && s.x509.TrustDomain() == td {
			return s.x509, nil
		}
	}
	if td == a.bootstrap.TrustDomain() {
		return a.bootstrap, nil
	}
	return nil, fmt.Errorf("no bundle to authenticate trust domain %q", td)
}

// workloadSource follows the trust domain's bundle as the Workload API (a SPIRE
// agent) pushes it: its own trust domain's or a federated one's. Both streams
// (JWT bundles and X.509 bundles) are watched with go-spiffe's client, which
// reconnects with backoff; New does not wait for the agent. Each half is vetted on
// arrival (a refused update keeps the last good half). When the agent stops
// delivering the trust domain (federation removed), its bundle is dropped too:
// the agent, not this cache, is the authority on what the workload trusts.
type workloadSource struct {
	td     spiffeid.TrustDomain
	cache  *bundleCache
	client *workloadapi.Client
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	jwt  *jwtbundle.Bundle  // last good half; nil when not delivered
	x509 *x509bundle.Bundle // last good half; nil when not delivered
}

func startWorkloadSource(ctx context.Context, s *settings, c *bundleCache) (*workloadSource, error) {
	log := slogLogger{c.log}
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(s.WorkloadAPISocket), workloadapi.WithLogger(log))
	if err != nil {
		return nil, fmt.Errorf("spiffe upstream %q: workload_api_socket: %w", s.Name, err)
	}
	w := &workloadSource{td: s.td, cache: c, client: client}
	watchCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w.cancel = cancel
	w.wg.Add(2)
	go func() {
		defer w.wg.Done()
		_ = client.WatchJWTBundles(watchCtx, w) // returns when canceled
	}()
	go func() {
		defer w.wg.Done()
		_ = client.WatchX509Bundles(watchCtx, w)
	}()
	return w, nil
}

// OnJWTBundlesUpdate implements workloadapi.JWTBundleWatcher.
func (w *workloadSource) OnJWTBundlesUpdate(set *jwtbundle.Set) {
	b, ok := set.Get(w.td)
	w.mu.Lock()
	defer w.mu.Unlock()
	if ok {
		if _, err := vet(w.td, b, nil); err != nil {
			w.cache.set(nil, fmt.Errorf("JWT bundle: %w", err))
			return
		}
		w.jwt = b
	} else {
		w.jwt = nil
	}
	w.publish()
}

// OnX509BundlesUpdate implements workloadapi.X509BundleWatcher.
func (w *workloadSource) OnX509BundlesUpdate(set *x509bundle.Set) {
	b, ok := set.Get(w.td)
	w.mu.Lock()
	defer w.mu.Unlock()
	if ok {
		if _, err := vet(w.td, nil, b); err != nil {
			w.cache.set(nil, fmt.Errorf("X.509 bundle: %w", err))
			return
		}
		w.x509 = b
	} else {
		w.x509 = nil
	}
	w.publish()
}

// OnJWTBundlesWatchError implements workloadapi.JWTBundleWatcher; the client
// logs and retries.
func (w *workloadSource) OnJWTBundlesWatchError(err error) { w.cache.noteError(err) }

// OnX509BundlesWatchError implements workloadapi.X509BundleWatcher.
func (w *workloadSource) OnX509BundlesWatchError(err error) { w.cache.noteError(err) }

// publish installs the combination of the two halves. Called with w.mu held.
func (w *workloadSource) publish() {
	if w.jwt == nil && w.x509 == nil {
		w.cache.drop(fmt.Errorf("the Workload API delivers no bundle for trust domain %q", w.td))
		return
	}
	w.cache.set(vet(w.td, w.jwt, w.x509))
}

func (w *workloadSource) close() error {
	w.cancel()
	w.wg.Wait()
	return w.client.Close()
}

// slogLogger adapts slog to go-spiffe's logger. The Workload API client logs every
// failed watch, retried with backoff, at error level: that is a warning here.
type slogLogger struct{ l *slog.Logger }

func (l slogLogger) Debugf(format string, args ...any) { l.l.Debug(fmt.Sprintf(format, args...)) }
func (l slogLogger) Infof(format string, args ...any)  { l.l.Info(fmt.Sprintf(format, args...)) }
func (l slogLogger) Warnf(format string, args ...any)  { l.l.Warn(fmt.Sprintf(format, args...)) }
func (l slogLogger) Errorf(format string, args ...any) { l.l.Warn(fmt.Sprintf(format, args...)) }
