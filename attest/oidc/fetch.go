package oidc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
)

// Fetch policy. Every discovery and JWKS request of a Verifier goes through a client
// built by newFetchClient:
//   - a deadline per request, body included (FetchTimeout; the keySet also bounds
//     a whole refresh, discovery and JWKS together, by it);
//   - responses larger than MaxResponseBytes fail (reading stops one byte past it);
//   - only 200 is accepted: any other status, redirects included, fails before the
//     body is read, so no upstream body ever reaches an error message. Redirects are
//     refused rather than followed: a discovery document or key set that moved must
//     be reconfigured, which keeps the origin of keys exactly what was configured;
//   - Content-Type is not required (many issuers serve JWKS as text/plain).
var (
	errRedirect = errors.New("redirects are not followed")
	errTooLarge = errors.New("response exceeds the size limit")
)

// newFetchClient returns the client for discovery and JWKS requests. base supplies the
// transport when set; its other settings are ignored.
func newFetchClient(base *http.Client, timeout time.Duration, maxBytes int64) *http.Client {
	var rt http.RoundTripper
	if base != nil && base.Transport != nil {
		rt = base.Transport
	} else if base != nil {
		rt = http.DefaultTransport
	} else {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		t.ResponseHeaderTimeout = timeout
		t.MaxResponseHeaderBytes = 64 << 10
		rt = t
	}
	return &http.Client{
		Transport: &boundedTransport{base: rt, max: maxBytes},
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return errRedirect
		},
	}
}

// boundedTransport refuses non-200 responses and caps response bodies.
type boundedTransport struct {
	base http.RoundTripper
	max  int64
}

func (t *boundedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		if resp.StatusCode >= 300 && resp.StatusCode < 400 {
			return nil, fmt.Errorf("status %d: %w", resp.StatusCode, errRedirect)
		}
		return nil, fmt.Errorf("unexpected status %d", resp.StatusCode)
	}
	if resp.ContentLength > t.max {
		resp.Body.Close()
		return nil, fmt.Errorf("%w (%d > %d bytes)", errTooLarge, resp.ContentLength, t.max)
	}
	resp.Body = &cappedBody{rc: resp.Body, left: t.max}
	return resp, nil
}

// cappedBody fails the read that would take the body past its cap.
type cappedBody struct {
	rc   io.ReadCloser
	left int64 // bytes still allowed; -1 once the cap was exceeded
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, errTooLarge
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1] // one byte past the cap is enough to know
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return 0, errTooLarge
	}
	return n, err
}

func (b *cappedBody) Close() error { return b.rc.Close() }

// fetcher obtains an upstream's JWKS document: from a fixed jwks_uri, or from the
// jwks_uri found by discovery. Calls are serialized by the keySet (one fetch at a
// time), so discovered needs no lock.
type fetcher struct {
	client  *http.Client
	issuer  string
	jwksURI string             // configured; empty for discovery
	check   func(string) error // vets a discovered jwks_uri

	discovered string // jwks_uri from the last successful discovery

	requests atomic.Uint64
}

// jwks returns the raw key set document.
func (f *fetcher) jwks(ctx context.Context) ([]byte, string, error) {
	uri := f.jwksURI
	if uri == "" {
		if f.discovered == "" {
			d, err := f.discover(ctx)
			if err != nil {
				return nil, "", fmt.Errorf("discovery: %w", err)
			}
			f.discovered = d
		}
		uri = f.discovered
	}
	body, err := f.get(ctx, uri)
	if err != nil {
		// Discover again next time: the document may have moved.
		f.discovered = ""
		return nil, uri, fmt.Errorf("jwks %s: %w", uri, err)
	}
	return body, uri, nil
}

// discover runs OIDC discovery with go-oidc, which refuses a document whose `issuer`
// differs from the configured one, and returns the vetted jwks_uri.
func (f *fetcher) discover(ctx context.Context) (string, error) {
	f.requests.Add(1)
	p, err := gooidc.NewProvider(gooidc.ClientContext(ctx, f.client), f.issuer)
	if err != nil {
		return "", err
	}
	var meta struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := p.Claims(&meta); err != nil {
		return "", err
	}
	if meta.JWKSURI == "" {
		return "", errors.New("no jwks_uri in discovery document")
	}
	if err := f.check(meta.JWKSURI); err != nil {
		return "", fmt.Errorf("discovered jwks_uri: %w", err)
	}
	return meta.JWKSURI, nil
}

// get fetches uri with the bounded client.
func (f *fetcher) get(ctx context.Context, uri string) ([]byte, error) {
	f.requests.Add(1)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}
