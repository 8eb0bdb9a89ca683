package verify

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

func TestVerify(t *testing.T) {
	sts := newFakeSTS(t)
	v := sts.verifier(t)
	other := newSigningKey(t)

	cases := []struct {
		name string
		// token makes the token to verify.
		token func(t *testing.T) string
		want  error
	}{
		{"good", func(t *testing.T) string { return sts.mint(t) }, nil},
		{"typ application/at+jwt", func(t *testing.T) string {
			return signToken(t, sts.keys[0], "application/at+jwt", sts.claims())
		}, nil},
		{"two audiences", func(t *testing.T) string {
			return sts.mint(t, func(c map[string]any) { c["aud"] = []string{"https://other", testAudience} })
		}, nil},
		{"wrong audience", func(t *testing.T) string {
			return sts.mint(t, func(c map[string]any) { c["aud"] = "https://other.internal" })
		}, ErrInvalid},
		{"no audience", func(t *testing.T) string {
			return sts.mint(t, func(c map[string]any) { delete(c, "aud") })
		}, ErrInvalid},
		{"typ JWT (not an access token)", func(t *testing.T) string {
			return signToken(t, sts.keys[0], "JWT", sts.claims())
		}, ErrInvalid},
		{"no typ", func(t *testing.T) string {
			return signToken(t, sts.keys[0], "", sts.claims())
		}, ErrInvalid},
		{"expired", func(t *testing.T) string {
			return sts.mint(t, func(c map[string]any) {
				now := sts.clock.Now()
				c["iat"], c["nbf"], c["exp"] = now.Add(-10*time.Minute).Unix(), now.Add(-10*time.Minute).Unix(), now.Add(-time.Second).Unix()
			})
		}, ErrInvalid},
		{"expiring this second", func(t *testing.T) string {
			return sts.mint(t, func(c map[string]any) { c["exp"] = sts.clock.Now().Unix() })
		}, ErrInvalid},
		{"not yet valid", func(t *testing.T) string {
			return sts.mint(t, func(c map[string]any) { c["nbf"] = sts.clock.Now().Add(time.Minute).Unix() })
		}, ErrInvalid},
		{"issued in the future", func(t *testing.T) string {
			return sts.mint(t, func(c map[string]any) { c["iat"] = sts.clock.Now().Add(time.Minute).Unix() })
		}, ErrInvalid},
		{"another issuer", func(t *testing.T) string {
			return sts.mint(t, func(c map[string]any) { c["iss"] = "https://evil.example" })
		}, ErrInvalid},
		{"signed by another key under the same kid", func(t *testing.T) string {
			return signToken(t, signingKey{key: other.key, kid: sts.keys[0].kid}, "at+jwt", sts.claims())
		}, ErrInvalid},
		{"signed by an unknown key", func(t *testing.T) string {
			return signToken(t, other, "at+jwt", sts.claims())
		}, ErrInvalid},
		{"no jti", func(t *testing.T) string {
			return sts.mint(t, func(c map[string]any) { delete(c, "jti") })
		}, ErrInvalid},
		{"no client_id", func(t *testing.T) string {
			return sts.mint(t, func(c map[string]any) { delete(c, "client_id") })
		}, ErrInvalid},
		{"no iat", func(t *testing.T) string {
			return sts.mint(t, func(c map[string]any) { delete(c, "iat") })
		}, ErrInvalid},
		{"no exp", func(t *testing.T) string {
			return sts.mint(t, func(c map[string]any) { delete(c, "exp") })
		}, ErrInvalid},
		{"sub not a string", func(t *testing.T) string {
			return sts.mint(t, func(c map[string]any) { c["sub"] = 42 })
		}, ErrInvalid},
		{"attribute not a string", func(t *testing.T) string {
			return sts.mint(t, func(c map[string]any) { c["attributes"] = map[string]any{"n": 1} })
		}, ErrInvalid},
		{"garbage", func(*testing.T) string { return "not-a-token" }, ErrInvalid},
		{"alg none", func(t *testing.T) string {
			tok := sts.mint(t)
			return "eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0." + strings.Split(tok, ".")[1] + "."
		}, ErrInvalid},
		{"over 16 KiB", func(t *testing.T) string {
			return sts.mint(t, func(c map[string]any) { c["pad"] = strings.Repeat("x", 16<<10) })
		}, ErrInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(t.Context(), tc.token(t))
			wantErr(t, tc.name, err, tc.want)
			if errors.Is(err, ErrRevoked) || errors.Is(err, ErrStale) {
				t.Errorf("err = %v, also revoked or stale", err)
			}
		})
	}
}

func TestVerifyTokenFields(t *testing.T) {
	sts := newFakeSTS(t)
	v := sts.verifier(t)
	act := map[string]any{"sub": "spiffe://example.org/ns/gw/sa/gateway", "iss": "https://idp"}
	raw := sts.mint(t, func(c map[string]any) {
		c["aud"] = []string{testAudience, "https://audit.internal"}
		c["act"] = act
		c["jti"] = "the-jti"
	})
	tok, err := v.Verify(t.Context(), raw)
	if err != nil {
		t.Fatal(err)
	}
	now := sts.clock.Now()
	if tok.Subject != "spiffe://example.org/ns/payments/sa/api" || tok.ClientID != tok.Subject || tok.Upstream != "corp" || tok.ID != "the-jti" {
		t.Errorf("token = %+v", tok)
	}
	if strings.Join(tok.Audience, " ") != testAudience+" https://audit.internal" {
		t.Errorf("Audience = %q", tok.Audience)
	}
	if !tok.HasScope("ledger.read") || !tok.HasScope("ledger.write") || tok.HasScope("ledger") || len(tok.Scopes) != 2 {
		t.Errorf("Scopes = %q", tok.Scopes)
	}
	if !tok.IssuedAt.Equal(now) || !tok.Expiry.Equal(now.Add(5*time.Minute)) {
		t.Errorf("IssuedAt %v Expiry %v, want %v and +5m", tok.IssuedAt, tok.Expiry, now)
	}
	if tok.Act["sub"] != act["sub"] || tok.Attributes["namespace"] != "payments" || tok.Claims["bnd"] != "bnd-fingerprint-1" {
		t.Errorf("Act %v Attributes %v Claims %v", tok.Act, tok.Attributes, tok.Claims)
	}
}

func TestLeeway(t *testing.T) {
	sts := newFakeSTS(t)
	v := sts.verifier(t, func(c *Config) { c.Leeway = 30 * time.Second })
	now := sts.clock.Now()
	for _, tc := range []struct {
		name string
		edit func(map[string]any)
		want error
	}{
		{"expired within leeway", func(c map[string]any) { c["exp"] = now.Add(-20 * time.Second).Unix() }, nil},
		{"expired beyond leeway", func(c map[string]any) { c["exp"] = now.Add(-31 * time.Second).Unix() }, ErrInvalid},
		{"nbf within leeway", func(c map[string]any) { c["nbf"] = now.Add(20 * time.Second).Unix() }, nil},
		{"nbf beyond leeway", func(c map[string]any) { c["nbf"] = now.Add(31 * time.Second).Unix() }, ErrInvalid},
		{"iat within leeway", func(c map[string]any) { c["iat"] = now.Add(20 * time.Second).Unix() }, nil},
		{"iat beyond leeway", func(c map[string]any) { c["iat"] = now.Add(31 * time.Second).Unix() }, ErrInvalid},
	} {
		_, err := v.Verify(t.Context(), sts.mint(t, tc.edit))
		wantErr(t, tc.name, err, tc.want)
	}
}

func TestConfig(t *testing.T) {
	sts := newFakeSTS(t)
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no audience", func(c *Config) { c.Audience = "" }, "missing Audience"},
		{"no issuer", func(c *Config) { c.Issuer = "" }, "missing Issuer"},
		{"http issuer", func(c *Config) { c.Issuer = "http://sts.example" }, "not https"},
		{"issuer with query", func(c *Config) { c.Issuer = sts.URL + "?x=1" }, "without query"},
		{"RequireFeed without FeedToken", func(c *Config) { c.FeedToken = nil }, "RequireFeed"},
		{"leeway over 60s", func(c *Config) { c.Leeway = 61 * time.Second }, "Leeway"},
		{"negative leeway", func(c *Config) { c.Leeway = -time.Second }, "Leeway"},
		{"MaxStale too short", func(c *Config) { c.MaxStale = 5 * time.Second }, "MaxStale"},
		{"issuer differs from discovery", func(c *Config) { c.Issuer = sts.URL + "/" }, "did not match"},
		{"issuer unreachable", func(c *Config) { c.Issuer = "https://127.0.0.1:1" }, "discovery"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := sts.config(t)
			tc.edit(&cfg)
			v, err := New(t.Context(), cfg)
			if err == nil {
				_ = v.Close()
				t.Fatalf("New succeeded, want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New = %v, want an error containing %q", err, tc.want)
			}
		})
	}

	t.Run("several problems at once", func(t *testing.T) {
		_, err := New(t.Context(), Config{Leeway: time.Hour})
		for _, want := range []string{"Issuer", "Audience", "Leeway"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("New = %v, want it to mention %s", err, want)
			}
		}
	})

	t.Run("discovery names another issuer", func(t *testing.T) {
		sts := newFakeSTS(t)
		sts.mu.Lock()
		sts.issuer = "https://evil.example"
		sts.mu.Unlock()
		_, err := New(t.Context(), sts.config(t))
		var mismatch *oidc.IssuerMismatchError
		if !errors.As(err, &mismatch) {
			t.Errorf("New = %v, want an oidc.IssuerMismatchError", err)
		}
	})
}

func TestWithoutFeed(t *testing.T) {
	sts := newFakeSTS(t)
	v := sts.verifier(t, func(c *Config) { c.FeedToken, c.RequireFeed = nil, false })
	raw := sts.mint(t, func(c map[string]any) { c["jti"] = "revoked-but-unchecked" })
	sts.feed.create("revoke", "jti=revoked-but-unchecked")
	sts.clock.Advance(time.Minute) // and nothing goes stale
	if _, err := v.Verify(t.Context(), raw); err != nil {
		t.Errorf("Verify without feed = %v, want nil (revocation not checked)", err)
	}
	if st := v.Status(); st.Feed || st.Stale {
		t.Errorf("Status = %+v, want Feed false", st)
	}
	if snaps, _ := sts.feed.counts(); snaps != 0 {
		t.Errorf("%d snapshots taken without a feed", snaps)
	}
	if err := v.WaitSynced(t.Context()); err != nil {
		t.Errorf("WaitSynced without feed = %v", err)
	}
}

func TestKeys(t *testing.T) {
	t.Run("rotation: an unknown kid refetches the JWKS", func(t *testing.T) {
		sts := newFakeSTS(t)
		v := sts.verifier(t)
		sts.clock.Advance(keysMinRefetch)
		sts.feed.heartbeat() // keep the copy fresh at the new time
		waitFor(t, "heartbeat", func() bool { return v.Status().LastContact.Equal(sts.clock.Now()) })
		sts.rotate(t)
		if _, err := v.Verify(t.Context(), sts.mint(t)); err != nil {
			t.Fatalf("Verify with the new key = %v", err)
		}
	})

	t.Run("unknown kids are fetched at most once per interval", func(t *testing.T) {
		sts := newFakeSTS(t)
		v := sts.verifier(t)
		base := sts.jwksHits.Load()
		stranger := newSigningKey(t)
		for range 20 {
			if _, err := v.Verify(t.Context(), signToken(t, stranger, "at+jwt", sts.claims())); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Verify = %v, want ErrInvalid", err)
			}
		}
		if n := sts.jwksHits.Load() - base; n != 0 {
			t.Errorf("%d JWKS fetches right after start, want 0", n)
		}
		sts.clock.Advance(keysMinRefetch)
		for range 20 {
			_, _ = v.Verify(t.Context(), signToken(t, stranger, "at+jwt", sts.claims()))
		}
		if n := sts.jwksHits.Load() - base; n != 1 {
			t.Errorf("%d JWKS fetches for 20 unknown kids, want 1", n)
		}
	})

	t.Run("a bad signature under a known kid fetches nothing", func(t *testing.T) {
		sts := newFakeSTS(t)
		v := sts.verifier(t)
		sts.clock.Advance(keysMinRefetch)
		base := sts.jwksHits.Load()
		forged := signingKey{key: newSigningKey(t).key, kid: sts.keys[0].kid}
		for range 10 {
			_, _ = v.Verify(t.Context(), signToken(t, forged, "at+jwt", sts.claims()))
		}
		if n := sts.jwksHits.Load() - base; n != 0 {
			t.Errorf("%d JWKS fetches for forged signatures, want 0", n)
		}
	})
}

func TestCloseIsIdempotent(t *testing.T) {
	sts := newFakeSTS(t)
	v := sts.verifier(t)
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	// After Close the copy ages and Verify fails closed.
	sts.clock.Advance(DefaultMaxStale + time.Second)
	if _, err := v.Verify(context.Background(), sts.mint(t)); !errors.Is(err, ErrStale) {
		t.Errorf("Verify after Close and MaxStale = %v, want ErrStale", err)
	}
}

func TestLimitedBody(t *testing.T) {
	for _, tc := range []struct {
		size int
		want error
	}{{1<<10 - 1, nil}, {1 << 10, nil}, {1<<10 + 1, errBodyTooLarge}, {0, nil}} {
		b := &limitedBody{rc: io.NopCloser(strings.NewReader(strings.Repeat("x", tc.size))), left: 1 << 10}
		got, err := io.ReadAll(b)
		if !errors.Is(err, tc.want) || (tc.want == nil && len(got) != tc.size) {
			t.Errorf("%d bytes: read %d, err %v; want err %v", tc.size, len(got), err, tc.want)
		}
	}
}
