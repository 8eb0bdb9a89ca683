package testspiffe

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TrustDomain is one test trust domain: an X.509 CA and a JWT-SVID signing key.
type TrustDomain struct {
	Name   string
	CA     *x509.Certificate
	CAKey  *ecdsa.PrivateKey
	JWTKey *ecdsa.PrivateKey
	JWTKid string
}

// New makes a trust domain with fresh keys.
func New(t testing.TB, name string) *TrustDomain {
	t.Helper()
	td := &TrustDomain{Name: name, JWTKid: "jwt-" + name}
	var err error
	if td.CAKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	if td.JWTKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"test"}, CommonName: name + " CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: name}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, td.CAKey.Public(), td.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	if td.CA, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	return td
}

// Bundle is the trust domain's SPIFFE bundle document (JSON).
func (td *TrustDomain) Bundle(t testing.TB) []byte {
	t.Helper()
	b := spiffebundle.New(spiffeid.RequireTrustDomainFromString(td.Name))
	b.AddX509Authority(td.CA)
	if err := b.AddJWTAuthority(td.JWTKid, td.JWTKey.Public()); err != nil {
		t.Fatal(err)
	}
	b.SetRefreshHint(5 * time.Minute)
	out, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// SVID issues an X.509-SVID for id (one URI SAN, not a CA, digitalSignature).
func (td *TrustDomain) SVID(t testing.TB, id string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		URIs:         []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, td.CA, key.Public(), td.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// TLSCertificate is an X.509-SVID for id as a TLS client certificate.
func (td *TrustDomain) TLSCertificate(t testing.TB, id string) tls.Certificate {
	t.Helper()
	cert, key := td.SVID(t, id)
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

// JWTSVID signs a JWT-SVID for id and audience, shaped like SPIRE's: typ JWT, kid,
// sub, aud (array), exp (5 minutes), iat.
func (td *TrustDomain) JWTSVID(t testing.TB, id string, audience ...string) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: td.JWTKey, KeyID: td.JWTKid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok, err := jwt.Signed(s).Claims(map[string]any{
		"sub": id, "aud": audience, "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
	}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// PublicKey is the JWT authority's public key.
func (td *TrustDomain) PublicKey() crypto.PublicKey { return td.JWTKey.Public() }

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}
