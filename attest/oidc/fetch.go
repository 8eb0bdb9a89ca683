package oidc

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"

	"github.com/safeconduct/safeconduct/internal/fetch"
)

// Fetch policy: every discovery and JWKS request of a Verifier goes through a client
// of package internal/fetch: a deadline per request, body included
// (FetchTimeout; the keySet also bounds a whole refresh, discovery and JWKS together,
// by it); responses larger than MaxResponseBytes fail; only 200 is accepted and
// redirects are refused, so no upstream body ever reaches an error message and the
// origin of keys stays exactly what was configured. Content-Type is not required
// (many issuers serve JWKS as text/plain).
var errTooLarge = fetch.ErrTooLarge

// newFetchClient returns the client for discovery and JWKS requests. base supplies the
// transport when set; its other settings are ignored.
func newFetchClient(base *http.Client, timeout time.Duration, maxBytes int64) *http.Client {
	return fetch.NewClient(fetch.Transport(base, timeout), timeout, maxBytes)
}

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
	return fetch.Get(ctx, f.client, uri, "application/jwk-set+json, application/json")
}
