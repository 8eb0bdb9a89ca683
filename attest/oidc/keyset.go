package oidc

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/attest/internal/strictjson"
	"github.com/safeconduct/safeconduct/internal/jwtcore"
	"github.com/safeconduct/safeconduct/internal/keycache"
)

// maxKeys bounds the usable keys in one set. RSA sizes are jwtcore's.
const maxKeys = 100

// key is one parsed, vetted public key.
type key struct {
	kid  string
	alg  string // the JWK's `alg`, empty when it does not constrain one
	kind jwtcore.KeyType
	pub  crypto.PublicKey
}

// fits reports whether the key may verify a signature made with alg.
func (k *key) fits(alg string) bool {
	return k.kind.FitsJWK(k.alg, alg)
}

// snapshot is an immutable set of keys, swapped whole on refresh.
type snapshot struct {
	byKid map[string]*key
	keys  []*key
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
	kind, err := jwtcore.KeyTypeOf(jwk.Key)
	if err != nil {
		return nil, err
	}
	k := &key{kid: m.Kid, alg: m.Alg, kind: kind, pub: jwk.Key}
	if k.alg != "" && !k.fits(k.alg) {
		return nil, fmt.Errorf("alg %q does not fit the key", k.alg)
	}
	return k, nil
}

// keySet is an upstream's key cache: lock-free reads, fetches one at a time, at
// most one per RefreshMinInterval whatever triggers them, shared by every caller
// waiting for them (package internal/keycache).
type keySet = keycache.Cache[*snapshot]

// keySetConfig returns the settings of the Verifier's key cache but its Fetch.
// *uri names the document the last fetch read, for logs: it is set by Fetch,
// which the cache runs one at a time, before the cache reports on the fetch.
func (v *Verifier) keySetConfig(ctx context.Context, uri *string) keycache.Config[*snapshot] {
	s, log := v.s, v.log
	return keycache.Config[*snapshot]{
		Context:      ctx,
		Timeout:      s.FetchTimeout, // bounds one refresh (discovery and JWKS together)
		Now:          s.Now,
		MinInterval:  s.RefreshMinInterval,
		RefreshAfter: func(*snapshot) time.Duration { return s.CacheTTL },
		MaxStale:     s.MaxStale,
		Noun:         "keys",
		Unavailable:  attest.ErrUnavailable,
		OnFailure: func(err error) {
			log.Warn("upstream key fetch failed; keeping last good keys", slog.String("jwks_uri", *uri), slog.Any("error", err))
		},
		OnUpdate: func(old, cur *keycache.Value[*snapshot]) {
			if old == nil || !sameKids(old.V, cur.V) {
				log.Info("upstream keys updated", slog.String("jwks_uri", *uri), slog.Int("keys", len(cur.V.keys)))
			}
		},
	}
}

// key returns the key for a token's kid and alg: from the cache, or after one
// (rate limited, shared) refresh when the kid is unknown. Errors wrap
// attest.ErrInvalid (no such key) or attest.ErrUnavailable (no usable key set).
func (v *Verifier) key(ctx context.Context, kid, alg string) (*key, error) {
	cur, err := v.keys.Current(ctx)
	if err != nil {
		return nil, err
	}
	k, err := cur.V.find(kid, alg)
	if errors.Is(err, errNoKey) {
		// The upstream may have rotated: one refresh, shared and rate limited.
		next, err2 := v.keys.Refresh(ctx, cur)
		if err2 != nil {
			return nil, err2
		}
		if next != nil && next != cur {
			k, err = next.V.find(kid, alg)
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
