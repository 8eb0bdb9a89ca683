package hardening

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// The forging kit: tokens are assembled byte by byte, so that a case can send
// what no well-behaved JOSE library would produce (repeated member names, an alg
// that does not match the key that signed, `none`, unknown headers).

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// obj is a JSON object from name/value pairs in order; names may repeat. Each
// value is marshalled with encoding/json (a json.RawMessage goes in verbatim).
func obj(pairs ...any) string {
	if len(pairs)%2 != 0 {
		panic("obj: odd number of arguments")
	}
	var sb strings.Builder
	sb.WriteByte('{')
	for i := 0; i < len(pairs); i += 2 {
		if i > 0 {
			sb.WriteByte(',')
		}
		name, err := json.Marshal(pairs[i].(string))
		if err != nil {
			panic(err)
		}
		val, err := json.Marshal(pairs[i+1])
		if err != nil {
			panic(err)
		}
		sb.Write(name)
		sb.WriteByte(':')
		sb.Write(val)
	}
	sb.WriteByte('}')
	return sb.String()
}

// mustJSON marshals v.
func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// compact is the compact JWS of header and payload (raw JSON, or any bytes),
// signed with alg and key. alg names how to sign and need not be the header's.
func compact(t testing.TB, header, payload, alg string, key any) string {
	t.Helper()
	in := b64([]byte(header)) + "." + b64([]byte(payload))
	return in + "." + b64(rawSign(t, alg, key, []byte(in)))
}

// hashOf is the hash of a JWS algorithm name by its size suffix.
func hashOf(alg string) crypto.Hash {
	switch {
	case strings.HasSuffix(alg, "384"):
		return crypto.SHA384
	case strings.HasSuffix(alg, "512"):
		return crypto.SHA512
	}
	return crypto.SHA256
}

// rawSign signs in as alg says, with key: *ecdsa.PrivateKey (ES*, whatever its
// curve), *rsa.PrivateKey (RS*, PS*), ed25519.PrivateKey (EdDSA), []byte (HS*).
// "none" is an empty signature.
func rawSign(t testing.TB, alg string, key any, in []byte) []byte {
	t.Helper()
	if strings.EqualFold(alg, "none") {
		return nil
	}
	if alg == "EdDSA" {
		return ed25519.Sign(key.(ed25519.PrivateKey), in)
	}
	h := hashOf(alg)
	hh := h.New()
	hh.Write(in)
	digest := hh.Sum(nil)
	var (
		sig []byte
		err error
	)
	switch strings.ToUpper(alg[:2]) {
	case "HS":
		mac := hmac.New(h.New, key.([]byte))
		mac.Write(in)
		return mac.Sum(nil)
	case "RS":
		sig, err = rsa.SignPKCS1v15(rand.Reader, key.(*rsa.PrivateKey), h, digest)
	case "PS":
		sig, err = rsa.SignPSS(rand.Reader, key.(*rsa.PrivateKey), h, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	case "ES":
		k := key.(*ecdsa.PrivateKey)
		var r, s *big.Int
		r, s, err = ecdsa.Sign(rand.Reader, k, digest)
		if err == nil {
			size := (k.Curve.Params().BitSize + 7) / 8
			sig = make([]byte, 2*size)
			r.FillBytes(sig[:size])
			s.FillBytes(sig[size:])
		}
	default:
		t.Fatalf("rawSign: unknown alg %q", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// attacker is a party with keys of its own and no standing with any upstream.
type attacker struct {
	EC      *ecdsa.PrivateKey
	ECKid   string
	RSA     *rsa.PrivateKey
	Ed      ed25519.PrivateKey
	CertDER []byte // a self-signed certificate for EC
}

func newAttacker(t testing.TB) *attacker {
	t.Helper()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "attacker"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ec.PublicKey, ec)
	if err != nil {
		t.Fatal(err)
	}
	return &attacker{EC: ec, ECKid: thumbprint(t, &ec.PublicKey), RSA: rk, Ed: ed, CertDER: der}
}

// JWK is the attacker's public EC key as a JWK object.
func (a *attacker) JWK(t testing.TB) json.RawMessage {
	t.Helper()
	return publicJWK(t, &a.EC.PublicKey, a.ECKid)
}

// JWKS is the attacker's public key set.
func (a *attacker) JWKS(t testing.TB) []byte {
	t.Helper()
	return []byte(`{"keys":[` + string(a.JWK(t)) + `]}`)
}

// publicJWK is pub as a JWK with kid.
func publicJWK(t testing.TB, pub any, kid string) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKey{Key: pub, KeyID: kid, Use: "sig"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// jwkMember is one member ("x", "n") of pub as a JWK: key material to watch for.
func jwkMember(t testing.TB, pub any, name string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(publicJWK(t, pub, ""), &m); err != nil {
		t.Fatal(err)
	}
	s, _ := m[name].(string)
	return s
}

func thumbprint(t testing.TB, pub any) string {
	t.Helper()
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return b64(tp)
}

// randomKid is a fresh key ID no upstream has.
func randomKid(t testing.TB) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b64(b)
}
