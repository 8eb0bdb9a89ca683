package jwtcore

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
)

// RSA key sizes accepted by KeyTypeOf: at least 2048 bits, and at most 8192 to
// bound the cost of one verification.
const (
	MinRSABits = 2048
	MaxRSABits = 8192
)

// KeyType is the type of a public key, as far as algorithm fit is concerned.
type KeyType uint8

// Key types.
const (
	RSA KeyType = iota + 1
	P256
	P384
	P521
	Ed25519
)

// algorithms is the one table of the asymmetric JWS algorithms a token may be
// signed with and the key type each needs, in the order Algorithms lists them.
// `none` and the HMAC family are absent on purpose, in every spelling: lookups are
// exact, so "None" or "hs256" fail as well.
var algorithms = []struct {
	alg string
	key KeyType
}{
	{"RS256", RSA}, {"RS384", RSA}, {"RS512", RSA},
	{"ES256", P256}, {"ES384", P384}, {"ES512", P521},
	{"PS256", RSA}, {"PS384", RSA}, {"PS512", RSA},
	{"EdDSA", Ed25519},
}

// Algorithms returns the asymmetric JWS algorithms, a fresh slice.
func Algorithms() []string {
	out := make([]string, len(algorithms))
	for i, a := range algorithms {
		out[i] = a.alg
	}
	return out
}

// KeyTypeFor returns the key type alg needs; ok is false for an algorithm that is
// not one of Algorithms (exact, case-sensitive match).
func KeyTypeFor(alg string) (t KeyType, ok bool) {
	for _, a := range algorithms {
		if a.alg == alg {
			return a.key, true
		}
	}
	return 0, false
}

// Fits reports whether a key of type t may verify a signature made with alg.
func (t KeyType) Fits(alg string) bool {
	want, ok := KeyTypeFor(alg)
	return ok && t != 0 && want == t
}

// FitsJWK is Fits for a key published as a JWK whose `alg` member is jwkAlg (""
// when absent): a JWK that names an algorithm verifies that one only.
func (t KeyType) FitsJWK(jwkAlg, alg string) bool {
	return (jwkAlg == "" || jwkAlg == alg) && t.Fits(alg)
}

// String returns the key type's name.
func (t KeyType) String() string {
	switch t {
	case RSA:
		return "RSA"
	case P256:
		return "P-256"
	case P384:
		return "P-384"
	case P521:
		return "P-521"
	case Ed25519:
		return "Ed25519"
	}
	return fmt.Sprintf("KeyType(%d)", uint8(t))
}

// KeyTypeOf returns the type of a public key, refusing RSA keys outside
// [MinRSABits, MaxRSABits], curves other than P-256/384/521, and any other key
// (private keys included).
func KeyTypeOf(pub crypto.PublicKey) (KeyType, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < MinRSABits || bits > MaxRSABits {
			return 0, fmt.Errorf("RSA key of %d bits (allowed %d to %d)", bits, MinRSABits, MaxRSABits)
		}
		return RSA, nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return P256, nil
		case elliptic.P384():
			return P384, nil
		case elliptic.P521():
			return P521, nil
		}
		return 0, errors.New("unsupported curve")
	case ed25519.PublicKey:
		return Ed25519, nil
	}
	return 0, fmt.Errorf("unsupported key type %T", pub)
}
