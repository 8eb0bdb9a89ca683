package issuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"io"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// opaqueKey stands in for a KMS key: only Public and Sign, no private material.
type opaqueKey struct {
	k   *ecdsa.PrivateKey
	kid string
}

func (o opaqueKey) Public() crypto.PublicKey { return o.k.Public() }
func (o opaqueKey) Sign(r io.Reader, d []byte, opts crypto.SignerOpts) ([]byte, error) {
	return o.k.Sign(r, d, opts)
}
func (o opaqueKey) KeyID() string                      { return o.kid }
func (o opaqueKey) Algorithm() jose.SignatureAlgorithm { return jose.ES256 }

// TestOpaqueSignerMints: a Signer without private key material (the KMS seam)
// signs tokens that verify with its public key and carry its kid.
func TestOpaqueSignerMints(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sk := keyFromSigner(opaqueKey{k: k, kid: "kms-1"}, time.Now())
	js, err := sk.jose()
	if err != nil {
		t.Fatal(err)
	}
	obj, err := js.Sign([]byte(`{"sub":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parsed.Verify(k.Public()); err != nil {
		t.Fatalf("signature: %v", err)
	}
	if h := parsed.Signatures[0].Header; h.KeyID != "kms-1" || h.ExtraHeaders[jose.HeaderType] != TypeAccessTokenJWT {
		t.Fatalf("header %+v", h)
	}
}
