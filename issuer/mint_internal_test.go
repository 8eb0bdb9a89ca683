package issuer

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/go-jose/go-jose/v4"
)

func testMinter(t testing.TB, alg jose.SignatureAlgorithm) *minter {
	t.Helper()
	ring, err := loadKeyRing(t.TempDir(), alg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	m, err := newMinter("https://sts.example", ring.active)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMintClaimsRoundTrip(t *testing.T) {
	m := testMinter(t, jose.ES256)
	now := time.Unix(1_800_000_000, 0)
	c := &claims{
		Subject:  "spiffe://example.org/ns/\"quoted\"/\\back\x01\u2028",
		Audience: []string{"https://a", "https://b"},
		IssuedAt: now, Expiry: now.Add(time.Minute),
		ID: "jti-1", ClientID: "client", Scopes: []string{"a", "b"}, Upstream: "up",
	}
	tok, err := m.mint(c)
	if err != nil {
		t.Fatal(err)
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

func BenchmarkMint(b *testing.B) {
	for _, alg := range []jose.SignatureAlgorithm{jose.ES256, jose.EdDSA, jose.RS256} {
		b.Run(string(alg), func(b *testing.B) {
			m := testMinter(b, alg)
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
