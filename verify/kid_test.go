package verify

import (
	"errors"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// TestRevokedByKeyID: after a rotation, a revoke by the old key's kid refuses every
// token that key signed, whatever its iat (one forged after the revoke too) and
// whether or not its header names the kid, while the new key's tokens are accepted.
func TestRevokedByKeyID(t *testing.T) {
	sts := newFakeSTS(t)
	old := sts.keys[0]
	before := sts.mint(t)
	sts.rotate(t) // the new key signs; the old one stays published
	current := sts.keys[0]
	v := sts.verifier(t)
	if tok, err := v.Verify(t.Context(), before); err != nil || tok.KeyID != old.kid {
		t.Fatalf("before the entry: Verify = %+v, %v; want accepted with KeyID %s", tok, err, old.kid)
	}

	_, cursor := sts.feed.create("revoke", "kid="+old.kid)
	waitCursor(t, v, cursor)
	sts.clock.Advance(2 * time.Second) // later tokens have iat after the entry's creation

	_, err := v.Verify(t.Context(), before)
	wantErr(t, "old key, minted before the revoke", err, ErrRevoked)
	if errors.Is(err, ErrInvalid) || errors.Is(err, ErrStale) {
		t.Errorf("revoked: err = %v, also invalid or stale", err)
	}
	forged := signToken(t, old, "at+jwt", sts.claims())
	_, err = v.Verify(t.Context(), forged)
	wantErr(t, "old key, iat after the revoke", err, ErrRevoked)

	// Without a kid header every published key is tried: the kid that counts is
	// the one of the key that verified.
	_, err = v.Verify(t.Context(), signWithoutKeyID(t, old, sts.claims()))
	wantErr(t, "old key, no kid header", err, ErrRevoked)

	fresh := sts.mint(t)
	tok, err := v.Verify(t.Context(), fresh)
	if err != nil || tok.KeyID != current.kid {
		t.Errorf("new key: Verify = %+v, %v; want accepted with KeyID %s", tok, err, current.kid)
	}
	if tok, err := v.Verify(t.Context(), signWithoutKeyID(t, current, sts.claims())); err != nil || tok.KeyID != current.kid {
		t.Errorf("new key, no kid header: Verify = %+v, %v; want accepted with KeyID %s", tok, err, current.kid)
	}
}

func signWithoutKeyID(t *testing.T, k signingKey, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k.key}, (&jose.SignerOptions{}).WithType("at+jwt"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
