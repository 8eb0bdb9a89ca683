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

	"github.com/safeconduct/safeconduct/internal/fetch"
	"github.com/safeconduct/safeconduct/internal/keycache"
)

// fileSource reads a bundle file: at New (which fails on a bad file), then again
// every FileCheckInterval while in use. A bad or missing file later on leaves the
// last good bundle in place (a local file never goes stale).
func fileSource(ctx context.Context, s *settings) (*bundleCache, error) {
	read := func(context.Context) (*snapshot, error) {
		b, err := readBundleFile(s.td, s.BundleFile, s.maxBytes)
		if err != nil {
			return nil, err
		}
		return vetSPIFFEBundle(s.td, b)
	}
	snap, err := read(ctx)
	if err != nil {
		return nil, fmt.Errorf("spiffe upstream %q: bundle_file: %w", s.Name, err)
	}
	cfg := cacheConfig(ctx, s, "bundle file "+s.BundleFile, read)
	cfg.MinInterval = FileCheckInterval
	cfg.RefreshAfter = func(*snapshot) time.Duration { return FileCheckInterval }
	c := keycache.New(cfg)
	c.Store(snap)
	return c, nil
}

// endpoint fetches a SPIFFE bundle endpoint (SPIFFE Federation §5) with the bounded
// client of package internal/fetch (deadline, size cap, 200 only, no
// redirects). https_spiffe authenticates the server with go-spiffe's tlsconfig, as
// federation.FetchBundle does, against the bootstrap bundle and then the latest
// bundle fetched.
type endpoint struct {
	url      string
	td       spiffeid.TrustDomain
	client   *http.Client
	requests atomic.Uint64

	stop context.CancelFunc // ends refreshLoop
	done chan struct{}      // closed when refreshLoop has returned
}

func endpointSource(ctx context.Context, s *settings) (*bundleCache, *endpoint, error) {
	e := s.endpoint
	rt := fetch.Transport(s.HTTPClient, e.FetchTimeout)
	var auth *endpointAuth
	if e.Profile == ProfileSPIFFE {
		boot, err := readBundleFile(s.endpointID.TrustDomain(), e.BootstrapBundle, s.maxBytes)
		if err == nil && boot.X509Bundle().Empty() {
			err = fmt.Errorf("no X.509 authority")
		}
		if err != nil {
			return nil, nil, fmt.Errorf("spiffe upstream %q: bundle_endpoint.bootstrap_bundle: %w", s.Name, err)
		}
		auth = &endpointAuth{bootstrap: boot.X509Bundle()}
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

	cfg := cacheConfig(ctx, s, "bundle endpoint "+e.URL, ep.fetch)
	cfg.Timeout = e.FetchTimeout
	cfg.MaxStale = e.MaxStale
	cfg.MinInterval = MinRefreshInterval
	if e.RefreshInterval > 0 && e.RefreshInterval < cfg.MinInterval {
		cfg.MinInterval = e.RefreshInterval
	}
	cfg.RefreshAfter = func(snap *snapshot) time.Duration {
		switch {
		case e.RefreshInterval > 0:
			return e.RefreshInterval
		case snap.refreshHint > 0:
			return min(max(snap.refreshHint, MinRefreshInterval), DefaultRefreshInterval)
		}
		return DefaultRefreshInterval
	}
	c := keycache.New(cfg)
	if auth != nil && s.endpointID.MemberOf(s.td) {
		auth.latest = c // set before the first fetch
	}
	loopCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	ep.stop, ep.done = stop, make(chan struct{})
	go ep.refreshLoop(loopCtx, c, func() time.Duration {
		if cur := c.Load(); cur != nil {
			return cfg.RefreshAfter(cur.V)
		}
		return cfg.RefreshAfter(&snapshot{})
	})
	return c, ep, nil
}

// refreshLoop fetches the bundle every refresh interval (measured from the end of
// the previous fetch) whether or not it is in use, so that after an idle spell the
// first token is checked against a bundle at most one interval old: the interval
// bounds how long an authority removed from the endpoint's bundle is honoured.
// Fetches stay the cache's (bounded, single flight, at most one per minimum
// interval). It returns once close is called.
func (e *endpoint) refreshLoop(ctx context.Context, c *bundleCache, interval func() time.Duration) {
	defer close(e.done)
	t := time.NewTimer(interval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_, _ = c.Refresh(ctx, nil) // failures are the cache's to log and keep
		t.Reset(interval())
	}
}

// close stops refreshLoop and waits for it.
func (e *endpoint) close() {
	e.stop()
	<-e.done
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
		if cur := a.latest.Load(); cur != nil && cur.V.x509 != nil && !cur.V.x509.Empty() && cur.V.x509.TrustDomain() == td {
			return cur.V.x509, nil
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
//
// Freshness: the agent pushes every change and keeps its streams open, so while
// both streams are connected and their last updates were accepted the bundle is
// current, however old. From the moment a stream breaks (or an update of it fails
// or is refused) its half may miss a change, such as an authority removed in
// SPIRE: the bundle stays usable for MaxStale after the earliest such moment, then
// verification fails closed until the agent is back.
type workloadSource struct {
	td     spiffeid.TrustDomain
	cache  *bundleCache
	what   string
	log    *slog.Logger
	now    func() time.Time
	client *workloadapi.Client
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu              sync.Mutex
	jwt             *jwtbundle.Bundle  // last good half; nil when not delivered
	x509            *x509bundle.Bundle // last good half; nil when not delivered
	jwtLag, x509Lag lag                // since when each half may be behind the agent's
}

// lag is since when, and why, a half of the bundle may be behind the agent's; the
// zero lag is current.
type lag struct {
	since  time.Time
	reason error
}

// behind notes that the half may be behind from now on (the earliest moment
// counts; the latest reason is kept).
func (l *lag) behind(now time.Time, reason error) {
	if l.since.IsZero() {
		l.since = now
	}
	l.reason = reason
}

func startWorkloadSource(ctx context.Context, s *settings, c *bundleCache, what string) (*workloadSource, error) {
	log := s.cacheLog()
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(s.WorkloadAPISocket), workloadapi.WithLogger(slogLogger{log}))
	if err != nil {
		return nil, fmt.Errorf("spiffe upstream %q: workload_api_socket: %w", s.Name, err)
	}
	w := &workloadSource{td: s.td, cache: c, what: what, log: log, now: s.Now, client: client}
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
	b, ok := set.Get(w.td) // nil when not delivered
	w.mu.Lock()
	defer w.mu.Unlock()
	if ok {
		if _, err := vet(w.td, b, nil); err != nil {
			w.refused(&w.jwtLag, fmt.Errorf("JWT bundle: %w", err))
			return
		}
	}
	w.jwt, w.jwtLag = b, lag{}
	w.publish()
}

// OnX509BundlesUpdate implements workloadapi.X509BundleWatcher.
func (w *workloadSource) OnX509BundlesUpdate(set *x509bundle.Set) {
	b, ok := set.Get(w.td) // nil when not delivered
	w.mu.Lock()
	defer w.mu.Unlock()
	if ok {
		if _, err := vet(w.td, nil, b); err != nil {
			w.refused(&w.x509Lag, fmt.Errorf("X.509 bundle: %w", err))
			return
		}
	}
	w.x509, w.x509Lag = b, lag{}
	w.publish()
}

// OnJWTBundlesWatchError implements workloadapi.JWTBundleWatcher: the stream
// broke (the client logs and reconnects) or an update could not be parsed.
func (w *workloadSource) OnJWTBundlesWatchError(err error) { w.watchError(&w.jwtLag, err) }

// OnX509BundlesWatchError implements workloadapi.X509BundleWatcher.
func (w *workloadSource) OnX509BundlesWatchError(err error) { w.watchError(&w.x509Lag, err) }

func (w *workloadSource) watchError(l *lag, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	l.behind(w.now(), fmt.Errorf("workload API: %w", err))
	w.noteLag()
}

// refused records a refused update of the half whose lag is l. Called with w.mu
// held.
func (w *workloadSource) refused(l *lag, err error) {
	w.cache.Set(nil, err)
	l.behind(w.now(), err)
	w.noteLag()
}

// noteLag tells the cache since when the bundle may be behind the agent's: the
// earlier of the halves' lags. Called with w.mu held.
func (w *workloadSource) noteLag() {
	l := w.jwtLag
	if l.since.IsZero() || (!w.x509Lag.since.IsZero() && w.x509Lag.since.Before(l.since)) {
		l = w.x509Lag
	}
	w.cache.Lagging(l.since, l.reason)
}

// publish installs the combination of the two halves. Called with w.mu held.
func (w *workloadSource) publish() {
	w.noteLag()
	if w.jwt == nil && w.x509 == nil {
		reason := fmt.Errorf("the Workload API delivers no bundle for trust domain %q", w.td)
		if w.cache.Drop(reason) {
			w.log.Warn("SPIFFE bundle withdrawn by its source", "source", w.what, "reason", reason)
		}
		return
	}
	w.cache.Set(vet(w.td, w.jwt, w.x509))
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
