package attest

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
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
