package issuer

import (
	"cmp"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/go-jose/go-jose/v4"
)

func testMinter(t testing.TB, alg jose.SignatureAlgorithm) *minter {
	t.Helper()
	ring, err := loadKeyRing(t.TempDir(), alg, time.Now(), defaultKeyOptions)
	if err != nil {
		t.Fatal(err)
	}
	m, err := newMinter("https://sts.example", ring.active)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestMintClaimsRoundTrip: the hand-marshalled payload is valid JSON that decodes to
// exactly the claims given, whatever the strings hold.
func TestMintClaimsRoundTrip(t *testing.T) {
	m := testMinter(t, jose.ES256)
	now := time.Unix(1_800_000_000, 0)
	c := &claims{
		Subject:  "spiffe://example.org/ns/\"quoted\"/\\back\x01\u2028",
		Audience: []string{"https://a", "https://b"},
		IssuedAt: now, Expiry: now.Add(time.Minute),
		ID: "jti-1", ClientID: "client", Scopes: []string{"a", "b"}, Upstream: "up",
	}
	tok, kid, err := m.mintKID(c)
	if err != nil {
		t.Fatal(err)
	}
	if kid != m.key.kid {
		t.Fatalf("mintKID reports kid %q, want %q", kid, m.key.kid)
	}
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	payload, err := jws.Verify(m.key.signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(payload, &got); err != nil {
		t.Fatalf("payload is not JSON: %v: %s", err, payload)
	}
	want := map[string]any{
		"iss": "https://sts.example", "sub": c.Subject, "aud": []any{"https://a", "https://b"},
		"exp": float64(1_800_000_060), "iat": float64(1_800_000_000), "nbf": float64(1_800_000_000),
		"jti": "jti-1", "client_id": "client", "scope": "a b", "upstream": "up",
	}
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(want)
	if string(gb) != string(wb) {
		t.Fatalf("claims\n got %s\nwant %s", gb, wb)
	}
	if h := jws.Signatures[0].Header; h.KeyID != m.key.kid || h.ExtraHeaders["typ"] != "at+jwt" {
		t.Fatalf("header %+v", h)
	}
}

// FuzzAppendJSONString: the hand-written escaper agrees with encoding/json on what
// the string decodes to.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", "\"\\", "\x00\x1f", "\u2028\u2029", "\xff\xfe", "é漢字"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := appendJSONString(nil, s)
		var back string
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("invalid JSON %q for %q: %v", out, s, err)
		}
		want := strings.ToValidUTF8(s, "\uFFFD")
		if !utf8.ValidString(s) {
			// encoding/json replaces each invalid byte; compare with it.
			ref, _ := json.Marshal(s)
			_ = json.Unmarshal(ref, &want)
		}
		if back != want {
			t.Fatalf("round trip %q -> %q, want %q", s, back, want)
		}
	})
}

// BenchmarkMint is the signing cost of one token per algorithm and RSA key size
// (the README's table of what each algorithm costs per exchange).
func BenchmarkMint(b *testing.B) {
	cases := []struct {
		name string
		alg  jose.SignatureAlgorithm
		bits int
	}{
		{"ES256", jose.ES256, 0}, {"EdDSA", jose.EdDSA, 0},
		{"RS256-2048", jose.RS256, 2048}, {"RS256-3072", jose.RS256, 3072}, {"RS256-4096", jose.RS256, 4096},
		{"PS256-2048", jose.PS256, 2048}, {"PS256-3072", jose.PS256, 3072},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			ring, err := loadKeyRing(b.TempDir(), tc.alg, time.Now(), keyOptions{rsaBits: cmp.Or(tc.bits, DefaultRSABits)})
			if err != nil {
				b.Fatal(err)
			}
			m, err := newMinter("https://sts.example", ring.active)
			if err != nil {
				b.Fatal(err)
			}
			now := time.Now()
			c := &claims{Subject: "system:serviceaccount:payments:api", Audience: []string{"https://ledger.internal"},
				IssuedAt: now, Expiry: now.Add(5 * time.Minute), ClientID: "system:serviceaccount:payments:api",
				Scopes: []string{"ledger.read"}, Upstream: "cluster-a"}
			b.ReportAllocs()
			for b.Loop() {
				c.ID = newTokenID()
				if _, err := m.mint(c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkExchange is the in-process hot path of one exchange: form parse, attest
// (ES256 or RS256 upstream token, cached keys), policy, revocation admit (embedded
// store), mint (ES256), response. HTTP and TLS are not included; see the README for
// the loopback load run.
func BenchmarkExchange(b *testing.B) {
	for _, up := range []string{"ES256", "RS256", "ES256-statuslists-off"} {
		b.Run("upstream-"+up, func(b *testing.B) {
			var ts *testSTS
			if strings.HasSuffix(up, "-statuslists-off") {
				ts = startSTSForBench(b, "status_lists: {enabled: false}\n")
			} else {
				ts = startSTSForBench(b, "")
			}
			claims := ts.a.Claims(payments)
			claims["exp"] = time.Now().Add(time.Hour).Unix()
			var subject string
			if strings.HasPrefix(up, "RS256") {
				subject = ts.a.SignRS256(b, claims)
			} else {
				subject = ts.a.Sign(b, claims)
			}
			body := ts.form(subject).Encode()
			h := ts.srv.Handler()
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != 200 {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
		})
	}
}

// startSTSForBench starts a server whose audit events go, as in sts serve,
// through the audit writer (on_failure fail_closed: the issued event is written
// before the response), here to io.Discard.
func startSTSForBench(b *testing.B, extra string) *testSTS {
	ts := startSTS(b, stsOptions{extra: extra})
	ts.srv.audit = newAuditWriter(io.Discard, true, ts.srv.metrics, slog.New(slog.DiscardHandler), time.Now)
	ts.srv.auditLog = slog.New(newAuditHandler(ts.srv.audit, nil)).With(slog.String("log", "audit"))
	b.Cleanup(func() { _ = ts.srv.audit.close() })
	return ts
}
