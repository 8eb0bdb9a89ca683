package verify

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/internal/jwtcore"
	"github.com/safeconduct/safeconduct/revocation"
)

// KeySource is where a Verifier gets the issuer's signing keys, in the style of
// go-spiffe's jwtbundle.Source. New uses the JWKS named by the issuer's discovery
// document unless Config.Keys names another source, such as StaticKeys.
type KeySource interface {
	// KeysForKeyID returns the issuer's public signing keys with key ID kid, or
	// all of them when kid is empty. An empty result with a nil error means the
	// source has no such key; an error means it has no keys at hand at all. A
	// source that fetches may fetch once (rate limited) for an unknown kid; ctx
	// bounds that wait. Callers must not modify the keys returned.
	KeysForKeyID(ctx context.Context, kid string) ([]jose.JSONWebKey, error)
}

// RevocationSource is what a Verifier checks verified tokens against. New uses
// the STS's revocation feed when Config.FeedToken is set, unless
// Config.Revocations names another source, such as StaticRevocations.
type RevocationSource interface {
	// CheckRevocation returns an error wrapping ErrRevoked when an active revoke
	// entry invalidates a token with facts f (revocation.FactsFromClaims of its
	// verified claims, KeyID being the kid of the key that verified it) at now,
	// else an error wrapping ErrStale when the source cannot tell right now, else
	// nil. It must not block on the network: it is called for every token.
	CheckRevocation(f *revocation.Facts, now time.Time) error
}

var (
	_ KeySource        = (*staticKeys)(nil)
	_ KeySource        = (*jwksKeys)(nil)
	_ RevocationSource = (*staticRevocations)(nil)
	_ RevocationSource = (*feed)(nil)
)

// StaticKeys returns a KeySource that holds the keys of jwks, never refreshed: for
// tests, or an issuer whose keys are distributed out of band. Keys are filtered as
// a fetched JWKS is: only valid public asymmetric keys for signatures are kept.
func StaticKeys(jwks jose.JSONWebKeySet) KeySource {
	s := &staticKeys{}
	for _, k := range jwks.Keys {
		if usableKey(&k) {
			s.keys = append(s.keys, k)
		}
	}
	return s
}

type staticKeys struct{ keys []jose.JSONWebKey }

func (s *staticKeys) KeysForKeyID(_ context.Context, kid string) ([]jose.JSONWebKey, error) {
	return keysWithID(s.keys, kid), nil
}

// keysWithID returns the keys with key ID kid, or all keys when kid is empty.
func keysWithID(keys []jose.JSONWebKey, kid string) []jose.JSONWebKey {
	if kid == "" {
		return keys
	}
	var out []jose.JSONWebKey
	for _, k := range keys {
		if k.KeyID == kid {
			out = append(out, k)
		}
	}
	return out
}

// usableKey reports whether k is a valid public asymmetric key for signatures.
func usableKey(k *jose.JSONWebKey) bool {
	if !k.Valid() || !k.IsPublic() || (k.Use != "" && k.Use != "sig") {
		return false
	}
	_, symmetric := k.Key.([]byte)
	return !symmetric
}

// keyFits reports whether k may verify a signature made with alg: the JWK's `alg`,
// when set, is alg, and its key type is the one alg needs (jwtcore's table).
func keyFits(k *jose.JSONWebKey, alg string) bool {
	kt, err := jwtcore.KeyTypeOf(k.Key)
	return err == nil && kt.FitsJWK(k.Algorithm, alg)
}

// StaticRevocations returns a RevocationSource holding entries, never stale: for
// tests, or a verifier whose revocation data is distributed out of band. As with
// the feed, a token is revoked by an active revoke entry that invalidates it
// (revocation.Entry.Invalidates); blocks and lifted entries are ignored. It fails
// on an entry the feed would refuse (revocation.Index.Put).
func StaticRevocations(entries ...revocation.Entry) (RevocationSource, error) {
	s := &staticRevocations{index: revocation.NewIndex()}
	for _, e := range entries {
		if e.Kind != revocation.KindRevoke || e.Lifted {
			continue
		}
		if err := s.index.Put(e); err != nil {
			return nil, fmt.Errorf("verify: revocation entry %q: %w", e.ID, err)
		}
	}
	return s, nil
}

type staticRevocations struct{ index *revocation.Index }

func (s *staticRevocations) CheckRevocation(f *revocation.Facts, now time.Time) error {
	if e := s.index.Revoked(f, now); e != nil {
		return fmt.Errorf("%w: entry %s (%s)", ErrRevoked, e.ID, e.Selector)
	}
	return nil
}

// sourceKeySet makes a KeySource go-oidc's oidc.KeySet.
type sourceKeySet struct {
	src  KeySource
	algs []jose.SignatureAlgorithm
}

// verifiedKeyKey is the context key of a *string that VerifySignature sets to the
// kid of the key that verified the signature (Verify passes one through go-oidc):
// revocation by kid must apply to the key that actually verified, not to a kid
// header that another parser might read differently, or that is absent.
type verifiedKeyKey struct{}

// VerifySignature implements oidc.KeySet: exactly one signature, with one of algs,
// by a key of the source with the header's kid (any key without one) that fits the
// algorithm.
func (k sourceKeySet) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	jws, err := jose.ParseSignedCompact(raw, k.algs)
	if err != nil {
		return nil, fmt.Errorf("malformed JWS: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("not exactly one signature")
	}
	kid := jws.Signatures[0].Header.KeyID
	keys, err := k.src.KeysForKeyID(ctx, kid)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("no key %q in the issuer's JWKS", kid)
	}
	alg := jws.Signatures[0].Header.Algorithm
	for i := range keys {
		if !keyFits(&keys[i], alg) {
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
