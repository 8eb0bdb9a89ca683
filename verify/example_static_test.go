package verify_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/safeconduct/safeconduct/revocation"
	"github.com/safeconduct/safeconduct/verify"
)

// A Verifier over static sources: the issuer's keys as a JWKS and a fixed set of
// revocations, as a downstream's tests (or an air-gapped deployment) can pass
// them. Nothing is fetched: there is no discovery, no JWKS request and no feed.
func Example_staticSources() {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jwks := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "sts-1", Algorithm: "ES256", Use: "sig"}}}
	revs, err := verify.StaticRevocations(revocation.Entry{
		ID: "e1", Kind: revocation.KindRevoke, Selector: "jti=stolen",
		Created: now, Expires: now.Add(time.Hour),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	v, err := verify.New(context.Background(), verify.Config{
		Issuer:      "https://sts.example",
		Audience:    "https://ledger.internal",
		Keys:        verify.StaticKeys(jwks),
		Revocations: revs,
		RequireFeed: true,
		Now:         func() time.Time { return now },
		Logger:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer v.Close()

	// mint signs an access token as the STS would, with the key of kid.
	mint := func(kid, jti string) string {
		signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
			(&jose.SignerOptions{}).WithType("at+jwt"))
		raw, _ := jwt.Signed(signer).Claims(map[string]any{
			"iss": "https://sts.example", "aud": "https://ledger.internal",
			"sub": "spiffe://example.org/ns/payments/sa/api", "client_id": "spiffe://example.org/ns/payments/sa/api",
			"jti": jti, "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		}).Serialize()
		return raw
	}

	tok, err := v.Verify(context.Background(), mint("sts-1", "fine"))
	fmt.Println("accepted:", err == nil, tok.Subject, "key", tok.KeyID)
	_, err = v.Verify(context.Background(), mint("sts-1", "stolen"))
	fmt.Println("revoked:", errors.Is(err, verify.ErrRevoked))
	_, err = v.Verify(context.Background(), mint("unknown-kid", "fine"))
	fmt.Println("unknown kid refused:", errors.Is(err, verify.ErrInvalid))
	// Output:
	// accepted: true spiffe://example.org/ns/payments/sa/api key sts-1
	// revoked: true
	// unknown kid refused: true
}
