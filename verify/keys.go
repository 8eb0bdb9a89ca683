package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
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

// keySet is the STS's JWKS for go-oidc's verifier (oidc.KeySet). Unlike go-oidc's
// RemoteKeySet it rate-limits refetches: a known kid with a bad signature never
// causes a fetch, an unknown kid at most one per keysMinRefetch.
type keySet struct {
	url    string
	client *http.Client
	algs   []jose.SignatureAlgorithm
	now    func() time.Time
	ctx    context.Context // the verifier's lifetime, for background refreshes
	wg     *sync.WaitGroup

	mu       sync.Mutex
	keys     []jose.JSONWebKey
	fetched  time.Time     // last fetch attempt
	inflight chan struct{} // closed when the running fetch ends
	lastErr  error
	closed   bool // no new background fetch (the verifier is closing)
}

// verifiedKeyKey is the context key of a *string that VerifySignature sets to the
// kid of the JWKS key that verified the signature (Verify passes one through
// go-oidc): revocation by kid must apply to the key that actually verified, not to
// a kid header that another parser might read differently, or that is absent.
type verifiedKeyKey struct{}

// VerifySignature implements oidc.KeySet.
func (k *keySet) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	jws, err := jose.ParseSignedCompact(raw, k.algs)
	if err != nil {
		return nil, fmt.Errorf("malformed JWS: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("not exactly one signature")
	}
	kid := jws.Signatures[0].Header.KeyID

	keys, stale, refetch := k.lookup(kid)
	if stale {
		k.refresh(false)
	}
	if len(keys) == 0 && refetch {
		if err := k.wait(ctx, k.refresh(true)); err != nil {
			return nil, err
		}
		keys, _, _ = k.lookup(kid)
	}
	if len(keys) == 0 {
		k.mu.Lock()
		lastErr := k.lastErr
		k.mu.Unlock()
		if lastErr != nil {
			return nil, fmt.Errorf("no key %q (the last JWKS fetch failed: %v)", kid, lastErr)
		}
		return nil, fmt.Errorf("no key %q in the issuer's JWKS", kid)
	}
	alg := jws.Signatures[0].Header.Algorithm
	for i := range keys {
		if keys[i].Algorithm != "" && keys[i].Algorithm != alg {
			continue
		}
		if payload, err := jws.Verify(&keys[i]); err == nil {
			if slot, ok := ctx.Value(verifiedKeyKey{}).(*string); ok {
				*slot = keys[i].KeyID
			}
			return payload, nil
		}
	}
	return nil, errors.New("signature does not verify")
}

// lookup returns the keys matching kid (all when kid is empty), whether the set is
// due for a background refresh, and whether a missing kid may be fetched now.
func (k *keySet) lookup(kid string) (keys []jose.JSONWebKey, stale, refetch bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, key := range k.keys {
		if kid == "" || key.KeyID == kid {
			keys = append(keys, key)
		}
	}
	age := k.now().Sub(k.fetched)
	return keys, age >= keysRefresh, age >= keysMinRefetch || k.fetched.IsZero()
}

// refresh starts a fetch unless one is running (or, for a non-forced refresh, one
// started within keysMinRefetch) and returns a channel closed when it ends.
func (k *keySet) refresh(force bool) <-chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.inflight != nil {
		return k.inflight
	}
	if k.closed || !force && !k.fetched.IsZero() && k.now().Sub(k.fetched) < keysMinRefetch {
		done := make(chan struct{})
		close(done)
		return done
	}
	done := make(chan struct{})
	k.inflight = done
	k.fetched = k.now()
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		keys, err := k.fetch(k.ctx)
		k.mu.Lock()
		if err == nil {
			k.keys = keys
		}
		k.lastErr = err
		k.inflight = nil
		k.mu.Unlock()
		close(done)
	}()
	return done
}

// close stops new fetches, so that the verifier's WaitGroup can be waited for.
func (k *keySet) close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closed = true
}

// current returns the cached keys, or the last fetch error when there are none.
func (k *keySet) current() ([]jose.JSONWebKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.keys) == 0 {
		if k.lastErr != nil {
			return nil, k.lastErr
		}
		return nil, errors.New("JWKS not fetched yet")
	}
	return k.keys, nil
}

func (k *keySet) wait(ctx context.Context, done <-chan struct{}) error {
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fetch reads the JWKS: 200 only, at most 1 MiB, within fetchTimeout. Keys that do
// not parse, are not public asymmetric keys, or are not for signatures are skipped.
func (k *keySet) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKS+1))
	if err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("JWKS: %s answered %s", k.url, resp.Status)
	}
	if len(body) > maxJWKS {
		return nil, fmt.Errorf("JWKS: %s is over 1 MiB", k.url)
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
		if json.Unmarshal(raw, &key) != nil || !key.Valid() || !key.IsPublic() {
			continue
		}
		if key.Use != "" && key.Use != "sig" {
			continue
		}
		if _, symmetric := key.Key.([]byte); symmetric {
			continue
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("JWKS: %s has no usable signing key", k.url)
	}
	return keys, nil
}
