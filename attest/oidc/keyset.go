package oidc

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/attest/internal/strictjson"
)

// Key set limits.
const (
	minRSABits = 2048
	maxRSABits = 8192 // bounds the cost of one verification
	maxKeys    = 100  // usable keys in one set
)

// keyKind is the type of a public key, as far as algorithm fit is concerned.
type keyKind uint8

const (
	kindRSA keyKind = iota + 1
	kindP256
	kindP384
	kindP521
	kindEd25519
)

// key is one parsed, vetted public key.
type key struct {
	kid  string
	alg  string // the JWK's `alg`, empty when it does not constrain one
	kind keyKind
	pub  crypto.PublicKey
}

// fits reports whether the key may verify a signature made with alg.
func (k *key) fits(alg string) bool {
	if k.alg != "" && k.alg != alg {
		return false
	}
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		return k.kind == kindRSA
	case "ES256":
		return k.kind == kindP256
	case "ES384":
		return k.kind == kindP384
	case "ES512":
		return k.kind == kindP521
	case "EdDSA":
		return k.kind == kindEd25519
	}
	return false
}

// snapshot is an immutable set of keys, swapped whole on refresh.
type snapshot struct {
	byKid   map[string]*key
	keys    []*key
	fetched time.Time // when it was fetched; zero for a static set
}

var (
	errNoKey        = errors.New("no key for the token's kid")
	errAmbiguousKey = errors.New("token has no kid and several keys fit its alg")
)

// find returns the key for a token with kid and alg. A token without kid is accepted
// only when exactly one key fits alg.
func (s *snapshot) find(kid, alg string) (*key, error) {
	if kid != "" {
		k := s.byKid[kid]
		if k == nil {
			return nil, errNoKey
		}
		return k, nil
	}
	var found *key
	for _, k := range s.keys {
		if k.fits(alg) {
			if found != nil {
				return nil, errAmbiguousKey
			}
			found = k
		}
	}
	if found == nil {
		return nil, errNoKey
	}
	return found, nil
}

// parseJWKS parses and vets a JWK Set. It refuses the whole set (so that the caller
// keeps its last good one) on duplicate JSON members or kids, private or symmetric
// key material, weak RSA, curves other than P-256/384/521 and Ed25519, keys whose
// `alg` does not fit them, several keys when one lacks a kid, or no usable key at
// all. Keys meant for encryption (`use: enc`, `key_ops` without verify, or a non
// signature `alg`) are skipped.
func parseJWKS(data []byte) (*snapshot, error) {
	if err := strictjson.CheckObject(data, 8); err != nil {
		return nil, err
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, err
	}
	rawKeys, ok := top["keys"]
	if !ok {
		return nil, errors.New(`no "keys" member`)
	}
	var keys []json.RawMessage
	if err := json.Unmarshal(rawKeys, &keys); err != nil {
		return nil, fmt.Errorf(`"keys": %w`, err)
	}
	s := &snapshot{byKid: make(map[string]*key)}
	noKid := false
	for i, raw := range keys {
		k, err := parseJWK(raw)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		if k == nil {
			continue // not a signature key
		}
		if k.kid == "" {
			noKid = true
		} else if _, dup := s.byKid[k.kid]; dup {
			return nil, fmt.Errorf("duplicate kid %.64q", k.kid)
		} else {
			s.byKid[k.kid] = k
		}
		s.keys = append(s.keys, k)
		if len(s.keys) > maxKeys {
			return nil, fmt.Errorf("more than %d keys", maxKeys)
		}
	}
	switch {
	case len(s.keys) == 0:
		return nil, errors.New("no usable signature key")
	case noKid && len(s.keys) > 1:
		return nil, errors.New("a key without kid in a set of several keys")
	}
	return s, nil
}

// jwkMembers are the members parseJWK looks at before go-jose does.
type jwkMembers struct {
	Kty    string   `json:"kty"`
	Kid    string   `json:"kid"`
	Use    string   `json:"use"`
	Alg    string   `json:"alg"`
	KeyOps []string `json:"key_ops"`
}

// privateMembers are JWK members that carry secret material (RFC 7518 §6.2.2, §6.3.2,
// §6.4.1; `priv` of newer key types).
var privateMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv"}

// parseJWK parses one key; it returns nil, nil for a key that is not for signatures.
func parseJWK(raw json.RawMessage) (*key, error) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil {
		return nil, err
	}
	for _, name := range privateMembers {
		if _, ok := members[name]; ok {
			return nil, fmt.Errorf("private or symmetric member %q", name)
		}
	}
	var m jwkMembers
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	if m.Kty == "oct" {
		return nil, errors.New("symmetric key")
	}
	if (m.Use != "" && m.Use != "sig") ||
		(m.KeyOps != nil && !slices.Contains(m.KeyOps, "verify")) ||
		(m.Alg != "" && !attest.IsSignatureAlgorithm(m.Alg)) {
		return nil, nil
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(raw); err != nil {
		return nil, err
	}
	k := &key{kid: m.Kid, alg: m.Alg, pub: jwk.Key}
	switch pub := jwk.Key.(type) {
	case *rsa.PublicKey:
		if bits := pub.N.BitLen(); bits < minRSABits || bits > maxRSABits {
			return nil, fmt.Errorf("RSA key of %d bits (allowed %d to %d)", bits, minRSABits, maxRSABits)
		}
		k.kind = kindRSA
	case *ecdsa.PublicKey:
		switch pub.Curve {
		case elliptic.P256():
			k.kind = kindP256
		case elliptic.P384():
			k.kind = kindP384
		case elliptic.P521():
			k.kind = kindP521
		default:
			return nil, errors.New("unsupported curve")
		}
	case ed25519.PublicKey:
		k.kind = kindEd25519
	default:
		return nil, fmt.Errorf("unsupported key type %T", jwk.Key)
	}
	if k.alg != "" && !k.fits(k.alg) {
		return nil, fmt.Errorf("alg %q does not fit the key", k.alg)
	}
	return k, nil
}

// keySet caches an upstream's keys. Reads are lock-free (an atomic snapshot); fetches
// run one at a time, at most one per minInterval whatever triggers them, and are
// shared by every caller waiting for them.
type keySet struct {
	cur atomic.Pointer[snapshot]

	// fetch obtains a new set; nil for a static set (JWKSFile).
	fetch    func(ctx context.Context) (*snapshot, string, error)
	baseCtx  context.Context // values for fetches; never canceled
	timeout  time.Duration   // bounds one refresh (discovery and JWKS together)
	now      func() time.Time
	interval time.Duration // least time between fetch starts
	ttl      time.Duration // age that triggers a background refresh
	maxStale time.Duration // age after which the keys are unusable
	log      *slog.Logger

	mu          sync.Mutex
	inflight    chan struct{} // closed when the running fetch ends; nil if none
	lastAttempt time.Time     // start of the last fetch
	lastErr     error         // outcome of the last fetch
	updates     atomic.Uint64 // key sets accepted
	failures    atomic.Uint64 // fetches failed or refused
}

// key returns the key for a token's kid and alg: from the cache, or after one
// (rate limited, shared) refresh when the kid is unknown. Errors wrap
// attest.ErrInvalid (no such key) or attest.ErrUnavailable (no usable key set).
func (ks *keySet) key(ctx context.Context, kid, alg string) (*key, error) {
	s, err := ks.current(ctx)
	if err != nil {
		return nil, err
	}
	k, err := s.find(kid, alg)
	if errors.Is(err, errNoKey) && ks.fetch != nil {
		// The upstream may have rotated: one refresh, shared and rate limited.
		if err := ks.refreshAndWait(ctx); err != nil {
			return nil, err
		}
		if s2 := ks.cur.Load(); s2 != s {
			k, err = s2.find(kid, alg)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w (kid %.64q, alg %s)", attest.ErrInvalid, err, kid, alg)
	}
	if !k.fits(alg) {
		return nil, fmt.Errorf("%w: alg %s does not fit key %.64q", attest.ErrInvalid, alg, kid)
	}
	return k, nil
}

// current returns a usable snapshot: fresh, or stale within maxStale (a background
// refresh is started), or freshly fetched.
func (ks *keySet) current(ctx context.Context) (*snapshot, error) {
	s := ks.cur.Load()
	if ks.fetch == nil {
		return s, nil
	}
	if s != nil {
		age := ks.now().Sub(s.fetched)
		if age < ks.ttl {
			return s, nil
		}
		if age < ks.maxStale {
			ks.start()
			return s, nil
		}
	}
	// No usable keys: first use, or stale beyond the bound. Fetch (rate limited).
	if err := ks.refreshAndWait(ctx); err != nil {
		return nil, err
	}
	if s = ks.cur.Load(); s != nil && ks.now().Sub(s.fetched) < ks.maxStale {
		return s, nil
	}
	ks.mu.Lock()
	lastErr := ks.lastErr
	ks.mu.Unlock()
	if lastErr == nil {
		lastErr = errors.New("no key set fetched yet")
	}
	if s != nil {
		return nil, fmt.Errorf("%w: keys older than %v and refresh failing: %w", attest.ErrUnavailable, ks.maxStale, lastErr)
	}
	return nil, fmt.Errorf("%w: %w", attest.ErrUnavailable, lastErr)
}

// refreshAndWait starts a fetch if allowed and waits for the running one, if any.
func (ks *keySet) refreshAndWait(ctx context.Context) error {
	done := ks.start()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: waiting for keys: %w", attest.ErrUnavailable, ctx.Err())
	}
}

// start starts a fetch unless one is running or the last started less than interval
// ago. It returns the channel of the running fetch, nil when there is none.
func (ks *keySet) start() <-chan struct{} {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.inflight != nil {
		return ks.inflight
	}
	now := ks.now()
	if !ks.lastAttempt.IsZero() && now.Sub(ks.lastAttempt) < ks.interval {
		return nil
	}
	ks.lastAttempt = now
	done := make(chan struct{})
	ks.inflight = done
	// The fetch runs on its own so that no caller's cancellation aborts it for the
	// others; it is bounded by FetchTimeout.
	go ks.run(done)
	return done
}

func (ks *keySet) run(done chan struct{}) {
	ctx, cancel := context.WithTimeout(ks.baseCtx, ks.timeout)
	s, uri, err := ks.fetch(ctx)
	cancel()
	ks.mu.Lock()
	defer close(done)
	defer ks.mu.Unlock()
	ks.inflight = nil
	if err != nil {
		err = shorten(err) // upstream-controlled text (a discovered issuer) stays small
	}
	ks.lastErr = err
	if err != nil {
		ks.failures.Add(1)
		ks.log.Warn("upstream key fetch failed; keeping last good keys", slog.String("jwks_uri", uri), slog.Any("error", err))
		return
	}
	s.fetched = ks.now()
	old := ks.cur.Swap(s)
	ks.updates.Add(1)
	if old == nil || !sameKids(old, s) {
		ks.log.Info("upstream keys updated", slog.String("jwks_uri", uri), slog.Int("keys", len(s.keys)))
	}
}

func sameKids(a, b *snapshot) bool {
	if len(a.keys) != len(b.keys) {
		return false
	}
	for kid := range a.byKid {
		if b.byKid[kid] == nil {
			return false
		}
	}
	return true
}

// maxErrorText bounds the detail of a fetch error kept for logs and errors.
const maxErrorText = 512

func shorten(err error) error {
	msg := err.Error()
	if len(msg) <= maxErrorText {
		return err
	}
	return errors.New(strings.ToValidUTF8(msg[:maxErrorText], "") + "...")
}
