package attest_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/attest/oidc"
)

// FuzzRouterAttest feeds arbitrary strings to a Router over a real OIDC Verifier (keys
// from a file: no network). It must never panic, every error must wrap a sentinel,
// and it must never attest a token whose signature does not verify under the
// upstream's key.
func FuzzRouterAttest(f *testing.F) {
	const issuer = "https://issuer.example"
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	set, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		f.Fatal(err)
	}
	path := filepath.Join(f.TempDir(), "jwks.json")
	if err := os.WriteFile(path, set, 0o600); err != nil {
		f.Fatal(err)
	}
	v, err := oidc.New(f.Context(), oidc.Config{
		Name: "fuzz", Issuer: issuer, Audiences: []string{"sts"}, JWKSFile: path,
		Now: func() time.Time { return now },
	})
	if err != nil {
		f.Fatal(err)
	}
	r, err := attest.NewRouter(map[string]attest.Verifier{issuer: v})
	if err != nil {
		f.Fatal(err)
	}

	enc := base64.RawURLEncoding.EncodeToString
	sign := func(header, payload string) string {
		input := enc([]byte(header)) + "." + enc([]byte(payload))
		h := sha256.Sum256([]byte(input))
		rr, s, err := ecdsa.Sign(rand.Reader, key, h[:])
		if err != nil {
			f.Fatal(err)
		}
		sig := append(rr.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
		return input + "." + enc(sig)
	}
	claims := `{"iss":"` + issuer + `","sub":"workload","aud":"sts","exp":1893456300,"iat":1893456000}`
	good := sign(`{"alg":"ES256","kid":"k1","typ":"JWT"}`, claims)
	if _, err := r.Attest(f.Context(), good, attest.TypeJWT); err != nil {
		f.Fatalf("good seed refused: %v", err)
	}
	for _, s := range []string{
		good,
		sign(`{"alg":"ES256"}`, claims),
		sign(`{"alg":"ES256","kid":"k1"}`, `{"iss":"`+issuer+`","iss":"x","sub":"w","aud":"sts","exp":1893456300}`),
		sign(`{"alg":"ES256","kid":"k1","crit":["b64"],"b64":false}`, claims),
		strings.Replace(good, ".", "..", 1),
		good[:len(good)-2],
		enc([]byte(`{"alg":"none"}`)) + "." + enc([]byte(claims)) + ".",
		enc([]byte(`{"alg":"HS256"}`)) + "." + enc([]byte(claims)) + ".c2ln",
		`{"payload":"e30","signatures":[]}`,
		"a.b.c.d.e", "", ".", "..",
	} {
		f.Add(s)
	}
	pub := key.Public()
	f.Fuzz(func(t *testing.T, raw string) {
		w, err := r.Attest(t.Context(), raw, attest.TypeJWT)
		if err != nil {
			for _, sentinel := range []error{attest.ErrMalformed, attest.ErrUnknownIssuer, attest.ErrInvalid, attest.ErrUnavailable} {
				if errors.Is(err, sentinel) {
					return
				}
			}
			t.Fatalf("error wraps no sentinel: %v", err)
		}
		jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.ES256})
		if err != nil {
			t.Fatalf("attested a token go-jose cannot parse: %v", err)
		}
		if _, err := jws.Verify(pub); err != nil {
			t.Fatalf("attested a token whose signature does not verify: %v", err)
		}
		if w.Issuer != issuer || w.Subject == "" {
			t.Fatalf("workload %+v", w)
		}
	})
}
