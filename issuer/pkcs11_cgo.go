//go:build cgo

package issuer

import (
	"crypto"
	"crypto/elliptic"
	"errors"
	"fmt"

	"github.com/ThalesGroup/crypto11"
	"github.com/go-jose/go-jose/v4"
	"github.com/miekg/pkcs11"
)

// crypto11HSM is a token opened with github.com/ThalesGroup/crypto11 (which
// loads the PKCS#11 module with dlopen: it needs cgo).
type crypto11HSM struct{ ctx *crypto11.Context }

func openHSM(cfg PKCS11Config, pin string) (hsm, error) {
	ctx, err := crypto11.Configure(&crypto11.Config{Path: cfg.Module, TokenLabel: cfg.TokenLabel, Pin: pin})
	if err != nil {
		return nil, err
	}
	return &crypto11HSM{ctx: ctx}, nil
}

func (h *crypto11HSM) find(id, label []byte) (crypto.Signer, error) {
	found, err := h.ctx.FindKeyPairs(id, label)
	switch {
	case err != nil:
		return nil, err
	case len(found) == 0:
		return nil, nil
	case len(found) > 1:
		return nil, fmt.Errorf("%d key pairs have id %x and label %q: give each its own", len(found), id, label)
	}
	return found[0], nil
}

func (h *crypto11HSM) generate(alg jose.SignatureAlgorithm, rsaBits int, id, label []byte) (crypto.Signer, error) {
	pub, err := crypto11.NewAttributeSetWithIDAndLabel(id, label)
	if err != nil {
		return nil, err
	}
	priv := pub.Copy()
	// The private key signs only, is sensitive and cannot be extracted (the
	// crypto11 defaults, restated so that they cannot drift).
	priv.AddIfNotPresent([]*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
	})
	switch alg {
	case jose.ES256:
		return h.ctx.GenerateECDSAKeyPairWithAttributes(pub, priv, elliptic.P256())
	case jose.RS256, jose.PS256:
		pub.AddIfNotPresent([]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false)})
		return h.ctx.GenerateRSAKeyPairWithAttributes(pub, priv, rsaBits)
	}
	return nil, fmt.Errorf("unsupported algorithm %s", alg)
}

func (h *crypto11HSM) id(s crypto.Signer) ([]byte, error) {
	a, err := h.ctx.GetAttribute(s, crypto11.CkaId)
	if err != nil {
		return nil, err
	}
	if a == nil {
		return nil, errors.New("no CKA_ID")
	}
	return a.Value, nil
}

func (h *crypto11HSM) close() error { return h.ctx.Close() }
