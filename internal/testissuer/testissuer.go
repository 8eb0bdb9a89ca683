package testissuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Issuer is one upstream issuer.
type Issuer struct {
	URL    string
	EC     *ecdsa.PrivateKey
	ECKid  string
	RSA    *rsa.PrivateKey
	RSAKid string

	srv  *httptest.Server
	hits atomic.Int64
}

// New makes an issuer with fresh keys and the given identifier; it serves nothing.
func New(t testing.TB, url string) *Issuer {
	t.Helper()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return &Issuer{URL: url, EC: ec, ECKid: kid(&ec.PublicKey), RSA: rk, RSAKid: kid(&rk.PublicKey)}
}

// Serve makes an issuer whose identifier is its own https://127.0.0.1:PORT address,
// serving /.well-known/openid-configuration and /jwks. It is closed at test end.
func Serve(t testing.TB) *Issuer {
	t.Helper()
	i := New(t, "")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		i.hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                i.URL,
			"jwks_uri":                              i.URL + "/jwks",
			"response_types_supported":              []string{"id_token"},
			"subject_types_supported":               []string{"public"},
			"id_token_signing_alg_values_supported": []string{"ES256", "RS256"},
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) {
		i.hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(i.JWKS())
	})
	i.srv = httptest.NewTLSServer(mux)
	i.URL = i.srv.URL
	t.Cleanup(i.srv.Close)
	return i
}

// Client trusts the served issuer's certificate.
func (i *Issuer) Client() *http.Client { return i.srv.Client() }

// WriteCA writes the served issuer's certificate as PEM into dir and returns the
// path (for SSL_CERT_FILE of a child process).
func (i *Issuer) WriteCA(t testing.TB, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "upstream-ca.pem")
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: i.srv.Certificate().Raw})
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Hits counts discovery and JWKS requests served.
func (i *Issuer) Hits() int64 { return i.hits.Load() }

// JWKS is the public key set (both keys).
func (i *Issuer) JWKS() []byte {
	out, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: &i.EC.PublicKey, KeyID: i.ECKid, Algorithm: "ES256", Use: "sig"},
		{Key: &i.RSA.PublicKey, KeyID: i.RSAKid, Algorithm: "RS256", Use: "sig"},
	}})
	if err != nil {
		panic(err)
	}
	return out
}

// Claims is a valid claim set for sub: audience "sts", ten minutes of life.
func (i *Issuer) Claims(sub string) map[string]any {
	now := time.Now()
	return map[string]any{
		"iss": i.URL,
		"sub": sub,
		"aud": []string{"sts"},
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(10 * time.Minute).Unix(),
		"jti": base64.RawURLEncoding.EncodeToString(kidBytes()),
	}
}

// Sign signs claims with the ES256 key (typ JWT, kid set).
func (i *Issuer) Sign(t testing.TB, claims map[string]any) string {
	t.Helper()
	return sign(t, jose.ES256, jose.JSONWebKey{Key: i.EC, KeyID: i.ECKid}, claims)
}

// SignRS256 signs claims with the RS256 key.
func (i *Issuer) SignRS256(t testing.TB, claims map[string]any) string {
	t.Helper()
	return sign(t, jose.RS256, jose.JSONWebKey{Key: i.RSA, KeyID: i.RSAKid}, claims)
}

// Token is Sign(Claims(sub)) after edits.
func (i *Issuer) Token(t testing.TB, sub string, edits ...func(map[string]any)) string {
	t.Helper()
	c := i.Claims(sub)
	for _, e := range edits {
		e(c)
	}
	return i.Sign(t, c)
}

func sign(t testing.TB, alg jose.SignatureAlgorithm, key jose.JSONWebKey, claims map[string]any) string {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func kid(pub crypto.PublicKey) string {
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(tp)
}

func kidBytes() []byte {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return b
}

// PublicPEM is a public key as PKIX PEM (for key-confusion tests).
func PublicPEM(pub crypto.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}
