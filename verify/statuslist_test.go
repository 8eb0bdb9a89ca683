package verify

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/revocation"
)

func TestStatusListTokenChecks(t *testing.T) {
	k, other := newSigningKey(t), newSigningKey(t)
	keys := StaticKeys(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.key.PublicKey, KeyID: k.kid, Algorithm: "ES256", Use: "sig"}}})
	const iss = "https://sts.example"
	uri := iss + "/statuslists/20-AAAAAAAAAAAAAAAAAAAAAA"
	now := time.Unix(1_800_000_000, 0)
	lst, _ := revocation.EncodeStatusList([]byte{0, 1, 0, 0, 0, 0, 0, 0}, 1)
	good := func() map[string]any {
		return map[string]any{"sub": uri, "iat": now.Unix(), "exp": now.Unix() + 60, "ttl": 30,
			"status_list": map[string]any{"bits": 1, "lst": lst}}
	}
	s := newStatusLists(Config{Issuer: iss, HTTPClient: http.DefaultClient, Now: func() time.Time { return now }}, keys)
	for _, tc := range []struct {
		name string
		tok  string
		ok   bool
	}{
		{"good", signToken(t, k, "statuslist+jwt", good()), true},
		{"typ at+jwt", signToken(t, k, "at+jwt", good()), false},
		{"typ application/statuslist+jwt", signToken(t, k, "application/statuslist+jwt", good()), false},
		{"no typ", signToken(t, k, "", good()), false},
		{"other key", signToken(t, other, "statuslist+jwt", good()), false},
		{"other sub", signToken(t, k, "statuslist+jwt", func() map[string]any { c := good(); c["sub"] = iss + "/statuslists/x"; return c }()), false},
		{"expired", signToken(t, k, "statuslist+jwt", func() map[string]any { c := good(); c["exp"] = now.Unix(); return c }()), false},
		{"no iat", signToken(t, k, "statuslist+jwt", func() map[string]any { c := good(); delete(c, "iat"); return c }()), false},
		{"ttl 0", signToken(t, k, "statuslist+jwt", func() map[string]any { c := good(); c["ttl"] = 0; return c }()), false},
		{"no status_list", signToken(t, k, "statuslist+jwt", func() map[string]any { c := good(); delete(c, "status_list"); return c }()), false},
		{"bits 3", signToken(t, k, "statuslist+jwt", func() map[string]any {
			c := good()
			c["status_list"] = map[string]any{"bits": 3, "lst": lst}
			return c
		}()), false},
	} {
		l, until, err := s.parse(context.Background(), tc.tok, uri, now)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v", tc.name, err)
			continue
		}
		if tc.ok {
			if st, _ := l.Status(1); st != 1 || !until.Equal(now.Add(30*time.Second)) {
				t.Errorf("%s: status %d, until %s", tc.name, st, until)
			}
		}
	}
}

func TestStatusListReferenceRefusals(t *testing.T) {
	s := newStatusLists(Config{Issuer: "https://sts.example", HTTPClient: http.DefaultClient, Now: time.Now}, StaticKeys(jose.JSONWebKeySet{}))
	for name, claims := range map[string]map[string]any{
		"no status":       {},
		"no status_list":  {"status": map[string]any{}},
		"negative idx":    {"status": map[string]any{"status_list": map[string]any{"idx": -1, "uri": "https://sts.example/statuslists/a"}}},
		"fractional idx":  {"status": map[string]any{"status_list": map[string]any{"idx": 1.5, "uri": "https://sts.example/statuslists/a"}}},
		"other host":      {"status": map[string]any{"status_list": map[string]any{"idx": float64(1), "uri": "https://evil.example/statuslists/a"}}},
		"other path":      {"status": map[string]any{"status_list": map[string]any{"idx": float64(1), "uri": "https://sts.example/jwks"}}},
		"host prefix":     {"status": map[string]any{"status_list": map[string]any{"idx": float64(1), "uri": "https://sts.example.evil/statuslists/a"}}},
		"name with slash": {"status": map[string]any{"status_list": map[string]any{"idx": float64(1), "uri": "https://sts.example/statuslists/a/../b"}}},
	} {
		if err := s.check(context.Background(), claims); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid (and no fetch)", name, err)
		}
	}
}

func TestStatusListsConfigExclusive(t *testing.T) {
	for _, cfg := range []Config{
		{Issuer: "https://sts.example", Audience: "a", StatusLists: true, FeedToken: func(context.Context) (string, error) { return "", nil }},
		{Issuer: "https://sts.example", Audience: "a", StatusLists: true, Revocations: &staticRevocations{index: revocation.NewIndex()}},
	} {
		if _, err := New(context.Background(), cfg); err == nil {
			t.Error("StatusLists with another revocation source accepted")
		}
	}
}
