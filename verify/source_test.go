package verify

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/revocation"
)

// staticVerifier returns a Verifier over the static sources: no discovery, no
// JWKS and no feed, so no server at all (the issuer URL is never contacted).
func staticVerifier(t *testing.T, sts *fakeSTS, keys KeySource, revs RevocationSource) *Verifier {
	t.Helper()
	sts.srv.Close() // any request would fail: the sources must be honoured
	v, err := New(t.Context(), Config{
		Issuer:      sts.URL,
		Audience:    testAudience,
		Keys:        keys,
		Revocations: revs,
		RequireFeed: true, // satisfied by Revocations
		Now:         sts.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

func publicJWKS(keys ...signingKey) jose.JSONWebKeySet {
	var set jose.JSONWebKeySet
	for _, k := range keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.key.PublicKey, KeyID: k.kid, Algorithm: "ES256", Use: "sig"})
	}
	return set
}

func TestStaticSources(t *testing.T) {
	sts := newFakeSTS(t)
	now := sts.clock.Now()
	revs, err := StaticRevocations(
		revocation.Entry{ID: "r1", Kind: revocation.KindRevoke, Selector: "jti=revoked-jti", Created: now, Expires: now.Add(time.Hour)},
		revocation.Entry{ID: "r2", Kind: revocation.KindRevoke, Selector: "sub=spiffe://example.org/ns/payments/sa/old", Created: now, Expires: now.Add(time.Hour)},
		revocation.Entry{ID: "r3", Kind: revocation.KindRevoke, Selector: "jti=expired-entry", Created: now.Add(-2 * time.Hour), Expires: now.Add(-time.Hour)},
		revocation.Entry{ID: "r4", Kind: revocation.KindRevoke, Selector: "jti=lifted-entry", Created: now, Expires: now.Add(time.Hour), Lifted: true},
		revocation.Entry{ID: "b1", Kind: revocation.KindBlock, Selector: "sub=spiffe://example.org/ns/payments/sa/api", Created: now},
	)
	if err != nil {
		t.Fatal(err)
	}
	stranger := newSigningKey(t)
	v := staticVerifier(t, sts, StaticKeys(publicJWKS(sts.keys[0])), revs)

	for _, tc := range []struct {
		name  string
		token string
		want  error
	}{
		{"good", sts.mint(t), nil},
		{"unknown kid", signToken(t, stranger, "at+jwt", sts.claims()), ErrInvalid},
		{"known kid, another key", signToken(t, signingKey{key: stranger.key, kid: sts.keys[0].kid}, "at+jwt", sts.claims()), ErrInvalid},
		{"revoked by jti", sts.mint(t, func(c map[string]any) { c["jti"] = "revoked-jti" }), ErrRevoked},
		{"revoked by sub", sts.mint(t, func(c map[string]any) {
			c["sub"] = "spiffe://example.org/ns/payments/sa/old"
		}), ErrRevoked},
		{"expired entry", sts.mint(t, func(c map[string]any) { c["jti"] = "expired-entry" }), nil},
		{"lifted entry", sts.mint(t, func(c map[string]any) { c["jti"] = "lifted-entry" }), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := v.Verify(t.Context(), tc.token)
			wantErr(t, tc.name, err, tc.want)
			if tc.want == nil && tok.KeyID != sts.keys[0].kid {
				t.Errorf("KeyID %q, want %q", tok.KeyID, sts.keys[0].kid)
			}
			if errors.Is(err, ErrStale) {
				t.Errorf("static revocations are never stale: %v", err)
			}
		})
	}
	if st := v.Status(); st.Feed {
		t.Errorf("Status %+v with static revocations", st)
	}
	if err := v.WaitSynced(t.Context()); err != nil {
		t.Errorf("WaitSynced = %v", err)
	}
}

// A revoke created after a token was issued does not revoke it; one created
// later than its iat does (the second-resolution rule of the feed).
func TestStaticRevocationsIssuedAt(t *testing.T) {
	sts := newFakeSTS(t)
	now := sts.clock.Now()
	revs, err := StaticRevocations(revocation.Entry{ID: "r", Kind: revocation.KindRevoke, Selector: "client_id=spiffe://example.org/ns/payments/sa/api", Created: now, Expires: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	v := staticVerifier(t, sts, StaticKeys(publicJWKS(sts.keys...)), revs)
	before := sts.mint(t)
	sts.clock.Advance(time.Second)
	after := sts.mint(t)
	if _, err := v.Verify(t.Context(), before); !errors.Is(err, ErrRevoked) {
		t.Errorf("token issued at the revoke: %v, want ErrRevoked", err)
	}
	if _, err := v.Verify(t.Context(), after); err != nil {
		t.Errorf("token issued after the revoke: %v", err)
	}
}

func TestStaticKeysFilters(t *testing.T) {
	k := newSigningKey(t)
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: k.key, KeyID: "private", Algorithm: "ES256"},                                   // private: dropped
		{Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: "hmac", Algorithm: "HS256"}, // symmetric: dropped
		{Key: &k.key.PublicKey, KeyID: "enc", Use: "enc"},                                    // not for signatures: dropped
		{Key: &k.key.PublicKey, KeyID: "sig", Use: "sig"},
	}}
	src := StaticKeys(set)
	all, err := src.KeysForKeyID(t.Context(), "")
	if err != nil || len(all) != 1 || all[0].KeyID != "sig" {
		t.Fatalf("KeysForKeyID(\"\") = %v, %v; want the one public signature key", all, err)
	}
	for _, kid := range []string{"private", "hmac", "enc", "unknown"} {
		if keys, err := src.KeysForKeyID(t.Context(), kid); err != nil || len(keys) != 0 {
			t.Errorf("KeysForKeyID(%q) = %v, %v", kid, keys, err)
		}
	}
}

func TestStaticRevocationsRefusesBadEntries(t *testing.T) {
	now := time.Now()
	for name, e := range map[string]revocation.Entry{
		"no id":          {Kind: revocation.KindRevoke, Selector: "jti=x", Created: now},
		"bad selector":   {ID: "a", Kind: revocation.KindRevoke, Selector: "nonsense", Created: now},
		"empty selector": {ID: "b", Kind: revocation.KindRevoke, Created: now},
	} {
		if _, err := StaticRevocations(e); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestSourceConfig(t *testing.T) {
	revs, _ := StaticRevocations()
	feed := func(context.Context) (string, error) { return "t", nil }
	_, err := New(t.Context(), Config{Issuer: "https://sts.example", Audience: "a", FeedToken: feed, Revocations: revs})
	if err == nil || !strings.Contains(err.Error(), "both FeedToken and Revocations") {
		t.Errorf("FeedToken and Revocations: %v", err)
	}
	_, err = New(t.Context(), Config{Issuer: "https://sts.example", Audience: "a", RequireFeed: true, Keys: StaticKeys(jose.JSONWebKeySet{})})
	if err == nil || !strings.Contains(err.Error(), "RequireFeed") {
		t.Errorf("RequireFeed without any revocation source: %v", err)
	}
}

// The discovery source keeps its rules behind the KeySource interface: an unknown
// kid is looked up with one fetch at most per interval, and a source error
// (nothing fetched) refuses the token.
func TestJWKSKeySource(t *testing.T) {
	sts := newFakeSTS(t)
	v := sts.verifier(t)
	src := KeySource(v.jwks)
	base := sts.jwksHits.Load()
	keys, err := src.KeysForKeyID(t.Context(), sts.keys[0].kid)
	if err != nil || len(keys) != 1 {
		t.Fatalf("known kid: %v, %v", keys, err)
	}
	if keys, err := src.KeysForKeyID(t.Context(), "unknown"); err != nil || len(keys) != 0 {
		t.Fatalf("unknown kid: %v, %v", keys, err)
	}
	if n := sts.jwksHits.Load() - base; n != 0 {
		t.Fatalf("%d fetches within the interval", n)
	}
	sts.clock.Advance(keysMinRefetch)
	sts.rotate(t)
	if keys, err := src.KeysForKeyID(t.Context(), sts.keys[0].kid); err != nil || len(keys) != 1 {
		t.Fatalf("rotated kid: %v, %v", keys, err)
	}
	if n := sts.jwksHits.Load() - base; n != 1 {
		t.Fatalf("%d fetches for a rotated kid, want 1", n)
	}
}

// The JWKS is fetched with the bounded client of internal/fetch: a document over
// 1 MiB or a redirect is refused, and New fails without keys.
func TestJWKSBounded(t *testing.T) {
	for _, tc := range []struct {
		name string
		jwks http.HandlerFunc
		want string
	}{
		{"over 1 MiB", func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte(`{"keys":[],"pad":"` + strings.Repeat("a", maxJWKS) + `"}`))
		}, "size limit"},
		{"redirect", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		}, "redirect"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mux := http.NewServeMux()
			srv := httptest.NewTLSServer(mux)
			defer srv.Close()
			mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
				writeTestJSON(w, http.StatusOK, map[string]any{"issuer": srv.URL, "jwks_uri": srv.URL + "/jwks"})
			})
			mux.HandleFunc("GET /jwks", tc.jwks)
			_, err := New(t.Context(), Config{Issuer: srv.URL, Audience: testAudience, HTTPClient: srv.Client()})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want an error about %s", err, tc.want)
			}
		})
	}
}
