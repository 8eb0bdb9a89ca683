package attest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeVerifier attests every token it is handed for its issuer, counting calls: the
// Router's own checks must refuse before it is reached.
type fakeVerifier struct {
	issuer string
	calls  atomic.Int64
}

func (f *fakeVerifier) Verify(_ context.Context, _, _ string) (*Workload, error) {
	f.calls.Add(1)
	return &Workload{Issuer: f.issuer, Subject: "s"}, nil
}

func enc(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// compact builds a compact JWS from header and payload JSON with a dummy signature.
func compact(header, payload string) string {
	return enc(header) + "." + enc(payload) + "." + enc("not a signature")
}

const goodPayload = `{"iss":"https://good.example","sub":"s","aud":"a","exp":4102444800}`

func TestRouterAttest(t *testing.T) {
	tests := []struct {
		name      string
		token     func() string
		tokenType string // default TypeJWT
		want      error  // nil: routed to the good verifier
	}{
		{"routed", func() string { return compact(`{"alg":"ES256","kid":"k"}`, goodPayload) }, "", nil},
		{"typ JWT", func() string { return compact(`{"alg":"ES256","typ":"JWT"}`, goodPayload) }, "", nil},
		{"typ application/jwt", func() string { return compact(`{"alg":"RS256","typ":"application/jwt"}`, goodPayload) }, TypeIDToken, nil},
		{"typ jwt lowercase", func() string { return compact(`{"alg":"PS256","typ":"jwt"}`, goodPayload) }, TypeAccessToken, nil},
		{"typ at+jwt as access token", func() string { return compact(`{"alg":"ES256","typ":"at+jwt"}`, goodPayload) }, TypeAccessToken, nil},
		{"typ at+jwt as jwt", func() string { return compact(`{"alg":"ES256","typ":"application/at+JWT"}`, goodPayload) }, TypeJWT, nil},
		{"typ at+jwt as id token", func() string { return compact(`{"alg":"ES256","typ":"at+jwt"}`, goodPayload) }, TypeIDToken, ErrMalformed},
		{"typ logout+jwt", func() string { return compact(`{"alg":"ES256","typ":"logout+jwt"}`, goodPayload) }, TypeJWT, ErrMalformed},
		{"typ secevent+jwt", func() string { return compact(`{"alg":"ES256","typ":"secevent+jwt"}`, goodPayload) }, TypeAccessToken, ErrMalformed},
		{"typ not a string", func() string { return compact(`{"alg":"ES256","typ":1}`, goodPayload) }, "", ErrMalformed},
		{"unsupported token type", func() string { return compact(`{"alg":"ES256"}`, goodPayload) }, "urn:ietf:params:oauth:token-type:saml2", ErrUnsupportedType},
		{"empty token type", func() string { return compact(`{"alg":"ES256"}`, goodPayload) }, "-", ErrUnsupportedType},
		{"unknown issuer", func() string { return compact(`{"alg":"ES256"}`, `{"iss":"https://evil.example"}`) }, "", ErrUnknownIssuer},
		{"iss missing", func() string { return compact(`{"alg":"ES256"}`, `{"sub":"s"}`) }, "", ErrMalformed},
		{"iss not a string", func() string { return compact(`{"alg":"ES256"}`, `{"iss":["https://good.example"]}`) }, "", ErrMalformed},
		{"duplicate iss", func() string {
			return compact(`{"alg":"ES256"}`, `{"iss":"https://good.example","iss":"https://evil.example"}`)
		}, "", ErrMalformed},
		{"duplicate iss reversed", func() string {
			return compact(`{"alg":"ES256"}`, `{"iss":"https://evil.example","iss":"https://good.example"}`)
		}, "", ErrMalformed},
		{"duplicate nested claim", func() string {
			return compact(`{"alg":"ES256"}`, `{"iss":"https://good.example","act":{"sub":"a","sub":"b"}}`)
		}, "", ErrMalformed},
		{"duplicate header member", func() string { return compact(`{"alg":"ES256","alg":"none"}`, goodPayload) }, "", ErrMalformed},
		{"payload not an object", func() string { return compact(`{"alg":"ES256"}`, `["iss"]`) }, "", ErrMalformed},
		{"payload not json", func() string { return compact(`{"alg":"ES256"}`, `iss=x`) }, "", ErrMalformed},
		{"header not json", func() string { return compact(`alg`, goodPayload) }, "", ErrMalformed},
		{"alg missing", func() string { return compact(`{"kid":"k"}`, goodPayload) }, "", ErrMalformed},
		{"alg none", func() string { return compact(`{"alg":"none"}`, goodPayload) }, "", ErrMalformed},
		{"alg None", func() string { return compact(`{"alg":"None"}`, goodPayload) }, "", ErrMalformed},
		{"alg NONE", func() string { return compact(`{"alg":"NONE"}`, goodPayload) }, "", ErrMalformed},
		{"alg nOnE", func() string { return compact(`{"alg":"nOnE"}`, goodPayload) }, "", ErrMalformed},
		{"alg HS256", func() string { return compact(`{"alg":"HS256"}`, goodPayload) }, "", ErrMalformed},
		{"alg HS512", func() string { return compact(`{"alg":"HS512"}`, goodPayload) }, "", ErrMalformed},
		{"alg lowercase es256", func() string { return compact(`{"alg":"es256"}`, goodPayload) }, "", ErrMalformed},
		{"alg not a string", func() string { return compact(`{"alg":["ES256"]}`, goodPayload) }, "", ErrMalformed},
		{"crit", func() string { return compact(`{"alg":"ES256","crit":["exp"],"exp":1}`, goodPayload) }, "", ErrMalformed},
		{"crit empty", func() string { return compact(`{"alg":"ES256","crit":[]}`, goodPayload) }, "", ErrMalformed},
		{"b64 false", func() string { return compact(`{"alg":"ES256","b64":false,"crit":["b64"]}`, goodPayload) }, "", ErrMalformed},
		{"b64 alone", func() string { return compact(`{"alg":"ES256","b64":true}`, goodPayload) }, "", ErrMalformed},
		{"cty JWT", func() string { return compact(`{"alg":"ES256","cty":"JWT"}`, goodPayload) }, "", ErrMalformed},
		{"cty application/jwt", func() string { return compact(`{"alg":"ES256","cty":"application/jwt"}`, goodPayload) }, "", ErrMalformed},
		{"zip", func() string { return compact(`{"alg":"ES256","zip":"DEF"}`, goodPayload) }, "", ErrMalformed},
		{"enc", func() string { return compact(`{"alg":"ES256","enc":"A128GCM"}`, goodPayload) }, "", ErrMalformed},
		{"kid not a string", func() string { return compact(`{"alg":"ES256","kid":7}`, goodPayload) }, "", ErrMalformed},
		{"jku ignored", func() string { return compact(`{"alg":"ES256","jku":"https://attacker.example/jwks"}`, goodPayload) }, "", nil},
		{"oversized", func() string {
			return compact(`{"alg":"ES256"}`, `{"iss":"https://good.example","x":"`+strings.Repeat("a", MaxTokenSize)+`"}`)
		}, "", ErrMalformed},
		{"oversized garbage", func() string { return strings.Repeat(".", MaxTokenSize+1) }, "", ErrMalformed},
		{"many dots", func() string { return compact(`{"alg":"ES256"}`, goodPayload) + strings.Repeat(".", 1000) }, "", ErrMalformed},
		{"one dot", func() string { return enc(`{"alg":"ES256"}`) + "." + enc(goodPayload) }, "", ErrMalformed},
		{"JWE compact", func() string {
			return enc(`{"alg":"RSA-OAEP","enc":"A256GCM"}`) + ".a.b.c.d"
		}, "", ErrMalformed},
		{"JSON serialization", func() string {
			return `{"payload":"` + enc(goodPayload) + `","protected":"` + enc(`{"alg":"ES256"}`) + `","signature":"c2ln"}`
		}, "", ErrMalformed},
		{"empty signature", func() string { return enc(`{"alg":"ES256"}`) + "." + enc(goodPayload) + "." }, "", ErrMalformed},
		{"empty payload", func() string { return enc(`{"alg":"ES256"}`) + "..c2ln" }, "", ErrMalformed},
		{"empty", func() string { return "" }, "", ErrMalformed},
		{"whitespace", func() string { return " " + compact(`{"alg":"ES256"}`, goodPayload) }, "", ErrMalformed},
		{"padding", func() string { return compact(`{"alg":"ES256"}`, goodPayload) + "=" }, "", ErrMalformed},
		{"standard base64", func() string {
			return base64.RawStdEncoding.EncodeToString([]byte(`{"alg":"ES256","kid":"??>"}`)) + "." + enc(goodPayload) + ".c2ln"
		}, "", ErrMalformed},
		{"invalid utf8 payload", func() string { return compact(`{"alg":"ES256"}`, "{\"iss\":\"https://good.example\xff\"}") }, "", ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			good := &fakeVerifier{issuer: "https://good.example"}
			other := &fakeVerifier{issuer: "https://other.example"}
			r, err := NewRouter(map[string]Verifier{good.issuer: good, other.issuer: other})
			if err != nil {
				t.Fatal(err)
			}
			typ := tt.tokenType
			switch typ {
			case "":
				typ = TypeJWT
			case "-":
				typ = ""
			}
			w, err := r.Attest(context.Background(), tt.token(), typ)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if w.Issuer != good.issuer || good.calls.Load() != 1 {
					t.Fatalf("not routed to the good verifier: %+v, calls %d", w, good.calls.Load())
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			if n := good.calls.Load() + other.calls.Load(); n != 0 {
				t.Fatalf("verifiers called %d times for a refused token", n)
			}
		})
	}
}

// misroutingVerifier attests another issuer than the one it is configured for.
type misroutingVerifier struct{}

func (misroutingVerifier) Verify(context.Context, string, string) (*Workload, error) {
	return &Workload{Issuer: "https://other.example"}, nil
}

type nilVerifier struct{}

func (nilVerifier) Verify(context.Context, string, string) (*Workload, error) { return nil, nil }

func TestRouterHoldsVerifierToRoutedIssuer(t *testing.T) {
	for name, v := range map[string]Verifier{"misrouting": misroutingVerifier{}, "nil workload": nilVerifier{}} {
		t.Run(name, func(t *testing.T) {
			r, err := NewRouter(map[string]Verifier{"https://good.example": v})
			if err != nil {
				t.Fatal(err)
			}
			_, err = r.Attest(context.Background(), compact(`{"alg":"ES256"}`, goodPayload), TypeJWT)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
		})
	}
}

func TestNewRouter(t *testing.T) {
	v := &fakeVerifier{}
	for name, m := range map[string]map[string]Verifier{
		"empty":        {},
		"nil":          nil,
		"empty issuer": {"": v},
		"nil verifier": {"https://a.example": nil},
	} {
		if _, err := NewRouter(m); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	r, err := NewRouter(map[string]Verifier{"https://b.example": v, "https://a.example": v})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.Issuers(), ","); got != "https://a.example,https://b.example" {
		t.Fatalf("Issuers() = %s", got)
	}
}

func TestSignatureAlgorithms(t *testing.T) {
	algs := SignatureAlgorithms()
	algs[0] = "none" // a copy: must not change the package's list
	if IsSignatureAlgorithm("none") || !IsSignatureAlgorithm("RS256") {
		t.Fatal("SignatureAlgorithms returned the package's own slice")
	}
	for _, bad := range []string{"", "none", "HS256", "HS384", "HS512", "rs256", "ES256K", "RSA-OAEP"} {
		if IsSignatureAlgorithm(bad) {
			t.Errorf("%q allowed", bad)
		}
	}
}

func TestParseHeaderInsecure(t *testing.T) {
	h, err := ParseHeaderInsecure(compact(`{"alg":"EdDSA","kid":"k1","typ":"JWT","x5c":["bm90IGEgY2VydA"],"jwk":{"kty":"OKP"}}`, goodPayload), TypeIDToken)
	if err != nil {
		t.Fatal(err)
	}
	if h != (Header{Alg: "EdDSA", Kid: "k1", Typ: "JWT"}) {
		t.Fatalf("got %+v", h)
	}
	// The size cap comes first: a huge token with a bad type is refused for its size.
	if _, err := ParseHeaderInsecure(strings.Repeat("a", MaxTokenSize+1), "bad"); !errors.Is(err, ErrMalformed) {
		t.Fatalf("got %v", err)
	}
}

func BenchmarkRouterPrechecks(b *testing.B) {
	tok := compact(`{"alg":"ES256","kid":"k","typ":"JWT"}`,
		`{"iss":"https://good.example","sub":"system:serviceaccount:ns:sa","aud":["a"],"exp":4102444800,"iat":1,"nbf":1,`+
			`"kubernetes.io":{"namespace":"ns","pod":{"name":"p","uid":"u"},"serviceaccount":{"name":"sa","uid":"u"}}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseHeaderInsecure(tok, TypeJWT); err != nil {
			b.Fatal(err)
		}
		if _, err := peekUnverified(tok); err != nil {
			b.Fatal(err)
		}
	}
}

// tdVerifier attests every JWT-SVID and X.509-SVID it is handed for its trust
// domain, echoing the presented SPIFFE ID, counting calls. issuer and subject,
// when set, override what it attests (a misbehaving verifier).
type tdVerifier struct {
	td              string
	issuer, subject string
	calls           atomic.Int64
}

func (f *tdVerifier) Verify(_ context.Context, raw, tokenType string) (*Workload, error) {
	f.calls.Add(1)
	p, err := ParseInsecure(raw, tokenType)
	if err != nil {
		return nil, err
	}
	sub, _ := p.Claims["sub"].(string)
	return f.workload(sub), nil
}

func (f *tdVerifier) VerifyX509(_ context.Context, chain []*x509.Certificate) (*Workload, error) {
	f.calls.Add(1)
	return f.workload(chain[0].URIs[0].String()), nil
}

func (f *tdVerifier) workload(sub string) *Workload {
	w := &Workload{Issuer: "spiffe://" + f.td, Subject: sub}
	if f.issuer != "" {
		w.Issuer = f.issuer
	}
	if f.subject != "" {
		w.Subject = f.subject
	}
	return w
}

// jwtOnly routes JWT-SVIDs but verifies no X.509-SVIDs.
type jwtOnly struct{ fakeVerifier }

func TestRouterTrustDomains(t *testing.T) {
	const idA = "spiffe://a.example/ns/prod/w"
	tests := []struct {
		name    string
		payload string
		want    error  // nil: attested
		routed  string // "oidc" or "a": the verifier that must have attested
	}{
		{"no iss, SPIFFE sub", `{"sub":"` + idA + `"}`, nil, "a"},
		{"unclaimed iss, SPIFFE sub", `{"iss":"https://spire.a.example","sub":"` + idA + `"}`, nil, "a"},
		{"OIDC issuer wins over a SPIFFE sub", `{"iss":"https://good.example","sub":"` + idA + `"}`, nil, "oidc"},
		{"second trust domain", `{"sub":"spiffe://b.example/w"}`, nil, "b"},
		{"unknown trust domain", `{"sub":"spiffe://c.example/w"}`, ErrUnknownIssuer, ""},
		{"unclaimed iss, unknown trust domain", `{"iss":"https://x.example","sub":"spiffe://c.example/w"}`, ErrUnknownIssuer, ""},
		{"unclaimed iss, plain sub", `{"iss":"https://x.example","sub":"w"}`, ErrUnknownIssuer, ""},
		{"no iss, plain sub", `{"sub":"system:serviceaccount:prod:api"}`, ErrMalformed, ""},
		{"no iss, no sub", `{"aud":"x"}`, ErrMalformed, ""},
		{"no iss, sub not a string", `{"sub":["` + idA + `"]}`, ErrMalformed, ""},
		{"empty iss", `{"iss":"","sub":"` + idA + `"}`, ErrMalformed, ""},
		{"iss not a string", `{"iss":1,"sub":"` + idA + `"}`, ErrMalformed, ""},
		{"uppercase trust domain", `{"sub":"spiffe://A.example/w"}`, ErrMalformed, ""},
		{"port", `{"sub":"spiffe://a.example:8443/w"}`, ErrMalformed, ""},
		{"userinfo", `{"sub":"spiffe://u@a.example/w"}`, ErrMalformed, ""},
		{"query", `{"sub":"spiffe://a.example/w?x"}`, ErrMalformed, ""},
		{"dot segment", `{"sub":"spiffe://a.example/./w"}`, ErrMalformed, ""},
		{"empty segment", `{"sub":"spiffe://a.example//w"}`, ErrMalformed, ""},
		{"trailing slash", `{"sub":"spiffe://a.example/w/"}`, ErrMalformed, ""},
		{"percent-encoding", `{"sub":"spiffe://a.example/w%41"}`, ErrMalformed, ""},
		{"uppercase scheme", `{"sub":"SPIFFE://a.example/w"}`, ErrMalformed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			oidc := &fakeVerifier{issuer: "https://good.example"}
			a, b := &tdVerifier{td: "a.example"}, &tdVerifier{td: "b.example"}
			r, err := NewRouterRoutes(Routes{
				ByIssuer:      map[string]Verifier{oidc.issuer: oidc},
				ByTrustDomain: map[string]Verifier{"a.example": a, "b.example": b},
			})
			if err != nil {
				t.Fatal(err)
			}
			w, err := r.Attest(context.Background(), compact(`{"alg":"ES256","kid":"k"}`, tt.payload), TypeJWT)
			calls := map[string]int64{"oidc": oidc.calls.Load(), "a": a.calls.Load(), "b": b.calls.Load()}
			if tt.want != nil {
				if !errors.Is(err, tt.want) {
					t.Fatalf("error %v, want %v", err, tt.want)
				}
				if calls["oidc"]+calls["a"]+calls["b"] != 0 {
					t.Fatalf("verifiers called for a refused token: %v", calls)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if calls[tt.routed] != 1 || calls["oidc"]+calls["a"]+calls["b"] != 1 {
				t.Fatalf("routed %v, want %s", calls, tt.routed)
			}
			if tt.routed != "oidc" && w.Issuer != "spiffe://"+tt.routed+".example" {
				t.Fatalf("workload %+v", w)
			}
		})
	}
}

// A trust domain's verifier is held to the route: its trust domain as issuer, the
// routed SPIFFE ID as subject.
func TestRouterHoldsVerifierToTrustDomain(t *testing.T) {
	const idA = "spiffe://a.example/w"
	leaf := uriCert(t, idA)
	for name, v := range map[string]*tdVerifier{
		"other trust domain": {td: "a.example", issuer: "spiffe://b.example"},
		"other subject":      {td: "a.example", subject: "spiffe://a.example/admin"},
		"OIDC issuer":        {td: "a.example", issuer: "https://good.example"},
	} {
		t.Run(name, func(t *testing.T) {
			r, err := NewRouterRoutes(Routes{ByTrustDomain: map[string]Verifier{"a.example": v}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.Attest(context.Background(), compact(`{"alg":"ES256"}`, `{"sub":"`+idA+`"}`), TypeJWT); !errors.Is(err, ErrInvalid) {
				t.Fatalf("JWT: got %v, want ErrInvalid", err)
			}
			if _, err := r.AttestX509(context.Background(), []*x509.Certificate{leaf}); !errors.Is(err, ErrInvalid) {
				t.Fatalf("X.509: got %v, want ErrInvalid", err)
			}
		})
	}
	r, err := NewRouterRoutes(Routes{ByTrustDomain: map[string]Verifier{"a.example": nilVerifier{}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Attest(context.Background(), compact(`{"alg":"ES256"}`, `{"sub":"`+idA+`"}`), TypeJWT); !errors.Is(err, ErrInvalid) {
		t.Fatalf("nil workload: got %v", err)
	}
}

// uriCert is a self-signed certificate with the URI SANs (routing never verifies it).
func uriCert(t *testing.T, uris ...string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotAfter: time.Now().Add(time.Hour)}
	for _, u := range uris {
		p, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, p)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRouterAttestX509(t *testing.T) {
	tests := []struct {
		name   string
		chain  func(t *testing.T) []*x509.Certificate
		want   error
		routed string
	}{
		{"trust domain a", func(t *testing.T) []*x509.Certificate { return []*x509.Certificate{uriCert(t, "spiffe://a.example/w")} }, nil, "a"},
		{"trust domain b", func(t *testing.T) []*x509.Certificate { return []*x509.Certificate{uriCert(t, "spiffe://b.example/w")} }, nil, "b"},
		{"unknown trust domain", func(t *testing.T) []*x509.Certificate { return []*x509.Certificate{uriCert(t, "spiffe://c.example/w")} }, ErrUnknownIssuer, ""},
		{"JWT-only verifier", func(t *testing.T) []*x509.Certificate { return []*x509.Certificate{uriCert(t, "spiffe://j.example/w")} }, ErrUnknownIssuer, ""},
		{"OIDC issuer is no trust domain", func(t *testing.T) []*x509.Certificate {
			return []*x509.Certificate{uriCert(t, "spiffe://good.example/w")}
		}, ErrUnknownIssuer, ""},
		{"no chain", func(*testing.T) []*x509.Certificate { return nil }, ErrMalformed, ""},
		{"nil leaf", func(*testing.T) []*x509.Certificate { return []*x509.Certificate{nil} }, ErrMalformed, ""},
		{"no URI SAN", func(t *testing.T) []*x509.Certificate { return []*x509.Certificate{uriCert(t)} }, ErrMalformed, ""},
		{"two URI SANs", func(t *testing.T) []*x509.Certificate {
			return []*x509.Certificate{uriCert(t, "spiffe://a.example/w", "spiffe://b.example/w")}
		}, ErrMalformed, ""},
		{"malformed SPIFFE ID", func(t *testing.T) []*x509.Certificate { return []*x509.Certificate{uriCert(t, "spiffe://A.example/w")} }, ErrMalformed, ""},
		{"not SPIFFE", func(t *testing.T) []*x509.Certificate { return []*x509.Certificate{uriCert(t, "https://a.example/w")} }, ErrMalformed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := &tdVerifier{td: "a.example"}, &tdVerifier{td: "b.example"}
			j := &jwtOnly{}
			r, err := NewRouterRoutes(Routes{
				ByIssuer:      map[string]Verifier{"https://good.example": &fakeVerifier{issuer: "https://good.example"}},
				ByTrustDomain: map[string]Verifier{"a.example": a, "b.example": b, "j.example": j},
			})
			if err != nil {
				t.Fatal(err)
			}
			w, err := r.AttestX509(context.Background(), tt.chain(t))
			calls := map[string]int64{"a": a.calls.Load(), "b": b.calls.Load(), "j": j.calls.Load()}
			if tt.want != nil {
				if !errors.Is(err, tt.want) {
					t.Fatalf("error %v, want %v", err, tt.want)
				}
				if calls["a"]+calls["b"]+calls["j"] != 0 {
					t.Fatalf("verifiers called: %v", calls)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if calls[tt.routed] != 1 || w.Issuer != "spiffe://"+tt.routed+".example" {
				t.Fatalf("routed %v, workload %+v", calls, w)
			}
		})
	}
}

func TestNewRouterRoutes(t *testing.T) {
	v := &fakeVerifier{}
	for name, routes := range map[string]Routes{
		"empty":                {},
		"empty maps":           {ByIssuer: map[string]Verifier{}, ByTrustDomain: map[string]Verifier{}},
		"uppercase td":         {ByTrustDomain: map[string]Verifier{"Prod.example": v}},
		"td as SPIFFE ID":      {ByTrustDomain: map[string]Verifier{"spiffe://prod.example": v}},
		"td with port":         {ByTrustDomain: map[string]Verifier{"prod.example:443": v}},
		"td with path":         {ByTrustDomain: map[string]Verifier{"prod.example/x": v}},
		"empty td":             {ByTrustDomain: map[string]Verifier{"": v}},
		"nil td verifier":      {ByTrustDomain: map[string]Verifier{"prod.example": nil}},
		"nil issuer verifier":  {ByIssuer: map[string]Verifier{"https://a.example": nil}, ByTrustDomain: map[string]Verifier{"prod.example": v}},
		"empty issuer with td": {ByIssuer: map[string]Verifier{"": v}, ByTrustDomain: map[string]Verifier{"prod.example": v}},
	} {
		if _, err := NewRouterRoutes(routes); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// Every problem is reported.
	_, err := NewRouterRoutes(Routes{ByIssuer: map[string]Verifier{"": v}, ByTrustDomain: map[string]Verifier{"Bad": v, "ok.example": nil}})
	if err == nil || strings.Count(err.Error(), "\n") != 2 {
		t.Fatalf("want three problems, got %v", err)
	}
	r, err := NewRouterRoutes(Routes{ByTrustDomain: map[string]Verifier{"b.example": v, "a.example": v}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.TrustDomains(), ","); got != "a.example,b.example" || len(r.Issuers()) != 0 {
		t.Fatalf("TrustDomains() = %s, Issuers() = %v", got, r.Issuers())
	}
}

// TestHeaderCache: a header passed once is remembered for its token type only; a
// refused header is refused every time; the cache stays within its bounds.
func TestHeaderCache(t *testing.T) {
	at := compact(`{"alg":"ES256","kid":"cache-test","typ":"at+jwt"}`, goodPayload)
	for range 2 {
		if h, err := ParseHeaderInsecure(at, TypeAccessToken); err != nil || h != (Header{Alg: "ES256", Kid: "cache-test", Typ: "at+jwt"}) {
			t.Fatalf("access token: %+v, %v", h, err)
		}
		// The same header presented as an ID token is refused, cached or not.
		if _, err := ParseHeaderInsecure(at, TypeIDToken); !errors.Is(err, ErrMalformed) {
			t.Fatalf("at+jwt as an ID token: %v", err)
		}
	}
	bad := compact(`{"alg":"ES256","alg":"none"}`, goodPayload)
	for range 2 {
		if _, err := ParseHeaderInsecure(bad, TypeJWT); !errors.Is(err, ErrMalformed) {
			t.Fatalf("duplicate alg: %v", err)
		}
	}
	for i := range 2 * maxCachedHeaders {
		tok := compact(fmt.Sprintf(`{"alg":"ES256","kid":"k%d"}`, i), goodPayload)
		if h, err := ParseHeaderInsecure(tok, TypeJWT); err != nil || h.Kid != fmt.Sprintf("k%d", i) {
			t.Fatalf("kid k%d: %+v, %v", i, h, err)
		}
	}
	long := compact(`{"alg":"ES256","kid":"`+strings.Repeat("x", maxCachedHeaderLen)+`"}`, goodPayload)
	if _, err := ParseHeaderInsecure(long, TypeJWT); err != nil {
		t.Fatal(err)
	}
	headers.mu.RLock()
	n := len(headers.m)
	for k := range headers.m {
		if len(k.seg) > maxCachedHeaderLen {
			t.Errorf("a %d-byte header was cached", len(k.seg))
		}
		if strings.Contains(k.seg, ".") {
			t.Errorf("cached key %q holds more than the header", k.seg)
		}
	}
	headers.mu.RUnlock()
	if n > maxCachedHeaders {
		t.Errorf("%d headers cached, more than %d", n, maxCachedHeaders)
	}
}
