package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/internal/fetch"
	"github.com/safeconduct/safeconduct/internal/keycache"
)

// Key set timing: the JWKS is refreshed in the background once it is older than
// keysRefresh, and at most once per keysMinRefetch when a token names an unknown
// kid, so that forged tokens cannot make every verifier hammer the STS.
const (
	keysRefresh    = 5 * time.Minute
	keysMinRefetch = 10 * time.Second
	maxJWKS        = 1 << 20
	fetchTimeout   = 10 * time.Second
)

// errNoJWKS is wrapped by the errors of a jwksKeys without usable keys.
var errNoJWKS = errors.New("JWKS unavailable")

// jwksKeys is the KeySource of New without Config.Keys: the JWKS that discovery
// named, cached by internal/keycache. Unlike go-oidc's RemoteKeySet it rate-limits
// refetches: a known kid with a bad signature never causes a fetch, an unknown
// kid at most one per keysMinRefetch. Fetched keys never go stale: the STS's keys
// are used until a fetch replaces them.
type jwksKeys struct {
	url    string
	client *http.Client
	cache  *keycache.Cache[[]jose.JSONWebKey]
}

// newJWKSKeys returns the source of the JWKS at url, fetched over base's
// transport; ctx supplies values to its fetches, Stop of its cache ends them.
func newJWKSKeys(ctx context.Context, url string, base *http.Client, now func() time.Time) *jwksKeys {
	k := &jwksKeys{url: url, client: fetch.NewClient(fetch.Transport(base, fetchTimeout), fetchTimeout, maxJWKS)}
	k.cache = keycache.New(keycache.Config[[]jose.JSONWebKey]{
		Fetch:        k.fetch,
		Context:      ctx,
		Timeout:      fetchTimeout,
		Now:          now,
		MinInterval:  keysMinRefetch,
		RefreshAfter: func([]jose.JSONWebKey) time.Duration { return keysRefresh },
		Noun:         "JWKS",
		Unavailable:  errNoJWKS,
	})
	return k
}

// KeysForKeyID implements KeySource.
func (k *jwksKeys) KeysForKeyID(ctx context.Context, kid string) ([]jose.JSONWebKey, error) {
	cur, err := k.cache.Current(ctx)
	if err != nil {
		return nil, err
	}
	keys := keysWithID(cur.V, kid)
	if len(keys) == 0 {
		// The STS may have rotated: one refresh, shared and rate limited.
		next, err := k.cache.Refresh(ctx, cur)
		if err != nil {
			return nil, err
		}
		if next != nil && next != cur {
			keys = keysWithID(next.V, kid)
		}
	}
	if len(keys) == 0 {
		if err := k.cache.LastError(); err != nil {
			return nil, fmt.Errorf("no key %q (the last JWKS fetch failed: %v)", kid, err)
		}
	}
	return keys, nil
}

// fetch reads the JWKS with the bounded client of internal/fetch: 200 only (no
// redirects), at most 1 MiB, within fetchTimeout. Keys that do not parse, are not
// public asymmetric keys, or are not for signatures are skipped.
func (k *jwksKeys) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	body, err := fetch.Get(ctx, k.client, k.url, "application/json")
	if err != nil {
		return nil, fmt.Errorf("JWKS %s: %w", k.url, err)
	}
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	var keys []jose.JSONWebKey
	for _, raw := range doc.Keys {
		var key jose.JSONWebKey
		if json.Unmarshal(raw, &key) == nil && usableKey(&key) {
			keys = append(keys, key)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("JWKS: %s has no usable signing key", k.url)
	}
	return keys, nil
}
