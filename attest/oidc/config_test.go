package oidc_test

import (
	"strings"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/attest/oidc"
)

func TestNewValidatesConfig(t *testing.T) {
	base := func() oidc.Config {
		return oidc.Config{Name: "k8s", Issuer: "https://issuer.example", Audiences: []string{"sts"}}
	}
	tests := []struct {
		name string
		mod  func(c *oidc.Config)
		want string // substring of the error; "" for success
	}{
		{"discovery", func(c *oidc.Config) {}, ""},
		{"fixed jwks_uri", func(c *oidc.Config) { c.JWKSURI = "https://keys.example/jwks" }, ""},
		{"non-URL issuer with jwks_uri", func(c *oidc.Config) { c.Issuer = "kubernetes"; c.JWKSURI = "https://k/jwks" }, "absolute http(s) URL"},
		{"http issuer with jwks_uri", func(c *oidc.Config) { c.Issuer = "http://issuer.example"; c.JWKSURI = "https://k/jwks" }, ""},
		{"http issuer for discovery", func(c *oidc.Config) { c.Issuer = "http://issuer.example" }, "https"},
		{"loopback http refused by default", func(c *oidc.Config) { c.Issuer = "http://127.0.0.1:8080" }, "https"},
		{"loopback http allowed", func(c *oidc.Config) { c.Issuer = "http://localhost:8080"; c.InsecureAllowLoopbackHTTP = true }, ""},
		{"non-loopback http never", func(c *oidc.Config) { c.JWKSURI = "http://keys.example/jwks"; c.InsecureAllowLoopbackHTTP = true }, "https"},
		{"jwks_uri with userinfo", func(c *oidc.Config) { c.JWKSURI = "https://u:p@keys.example/jwks" }, "userinfo"},
		{"no name", func(c *oidc.Config) { c.Name = "" }, "name"},
		{"no issuer", func(c *oidc.Config) { c.Issuer = "" }, "issuer: is required"},
		{"no audience", func(c *oidc.Config) { c.Audiences = nil }, "audience"},
		{"empty audience", func(c *oidc.Config) { c.Audiences = []string{"sts", ""} }, "empty audience"},
		{"both key sources", func(c *oidc.Config) { c.JWKSURI = "https://k/jwks"; c.JWKSFile = "/k.json" }, "mutually exclusive"},
		{"alg none", func(c *oidc.Config) { c.Algorithms = []string{"none"} }, "not allowed"},
		{"alg HS256", func(c *oidc.Config) { c.Algorithms = []string{"RS256", "HS256"} }, "not allowed"},
		{"skew too large", func(c *oidc.Config) { c.ClockSkew = 2 * time.Minute }, "exceeds"},
		{"negative skew", func(c *oidc.Config) { c.ClockSkew = -time.Second }, "negative"},
		{"negative max age", func(c *oidc.Config) { c.MaxTokenAge = -time.Second }, "negative"},
		{"max stale below ttl", func(c *oidc.Config) { c.CacheTTL = time.Hour; c.MaxStale = time.Minute }, "shorter"},
		{"negative size", func(c *oidc.Config) { c.MaxResponseBytes = -1 }, "negative"},
		{"subjects", func(c *oidc.Config) { c.Subjects = []string{"system:serviceaccount:prod:*", "*"} }, ""},
		{"empty subject pattern", func(c *oidc.Config) { c.Subjects = []string{"system:serviceaccount:prod:*", ""} }, "empty subject pattern"},
		{"required claims", func(c *oidc.Config) { c.RequiredClaims = map[string]string{"repository_owner": "my-org"} }, ""},
		{"required claim without name", func(c *oidc.Config) { c.RequiredClaims = map[string]string{"": "x"} }, "empty name"},
		{"required claim without pattern", func(c *oidc.Config) { c.RequiredClaims = map[string]string{"repository_owner": ""} }, `"repository_owner" has an empty pattern`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.mod(&c)
			v, err := oidc.New(t.Context(), c)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if v.Name() != c.Name || v.Issuer() != c.Issuer {
					t.Fatalf("Name/Issuer = %q/%q", v.Name(), v.Issuer())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one saying %q", err, tt.want)
			}
		})
	}
}

func TestNewReportsEveryError(t *testing.T) {
	_, err := oidc.New(t.Context(), oidc.Config{
		Algorithms: []string{"none"}, ClockSkew: time.Hour,
		Subjects: []string{""}, RequiredClaims: map[string]string{"a": ""},
	})
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"name", "issuer", "audience", "none", "clock_skew", "subject pattern", `"a"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}
