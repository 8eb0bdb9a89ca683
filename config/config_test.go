package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const goodConfig = `issuer: https://127.0.0.1:8443
listen: 127.0.0.1:8443
tls: {cert_file: tls.crt, key_file: tls.key}
signing: {algorithm: ES256, key_dir: keys}
tokens: {default_ttl: 5m, max_ttl: 1h}
upstreams:
  - name: cluster-a
    kind: oidc
    issuer: https://issuer.example
    audiences: [sts]
    jwks_file: cluster-a-jwks.json
policy_files: [policy.yaml]
revocation:
  backend: embedded
  embedded: {path: data/revocation.db}
  redis: {addrs: ["127.0.0.1:6379"]}
`

func TestParseConfigContract(t *testing.T) {
	cfg, err := ParseConfig("/etc/sts/sts.yaml", []byte(goodConfig))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Tokens.DefaultTTL.D() != 5*time.Minute || cfg.Tokens.MaxTTL.D() != time.Hour {
		t.Fatalf("tokens %+v", cfg.Tokens)
	}
	if got := cfg.Path("keys"); got != "/etc/sts/keys" {
		t.Fatalf("relative path resolved to %s", got)
	}
	if got := cfg.Path("/abs/keys"); got != "/abs/keys" {
		t.Fatalf("absolute path changed to %s", got)
	}
	if cfg.Upstreams[0].JWKSFile != "cluster-a-jwks.json" || cfg.Revocation.Backend != "embedded" {
		t.Fatalf("parsed %+v", cfg)
	}
}

func TestParseConfigDefaults(t *testing.T) {
	c := strings.Replace(goodConfig, "tokens: {default_ttl: 5m, max_ttl: 1h}\n", "", 1)
	c = strings.Replace(c, "algorithm: ES256, ", "", 1)
	cfg, err := ParseConfig("sts.yaml", []byte(c))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Signing.Algorithm != "ES256" || cfg.Tokens.DefaultTTL.D() != 5*time.Minute || cfg.Tokens.MaxTTL.D() != time.Hour {
		t.Fatalf("defaults not applied: %+v %+v", cfg.Signing, cfg.Tokens)
	}
}

// TestParseConfigAllErrors: every problem is reported at once, each with its line.
func TestParseConfigAllErrors(t *testing.T) {
	bad := `issuer: http://127.0.0.1:8443
listen: nope
tls: {cert_file: tls.crt, key_file: tls.key}
signing: {algorithm: HS256, key_dir: keys}
tokens: {default_ttl: 5m, max_ttl: 1m}
upstreams:
  - name: cluster-a
    kind: oidc
    issuer: https://issuer.example
    audiences: []
    jwks_file: a.json
    jwks_uri: https://issuer.example/jwks
    colour: blue
  - name: cluster-a
    kind: oidc
    issuer: https://issuer.example
    audiences: [""]
  - name: c3
    kind: saml
    audiences: [a]
policy_files: [policy.yaml]
revocation:
  backend: etcd
`
	_, err := ParseConfig("sts.yaml", []byte(bad))
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("want *ConfigError, got %v", err)
	}
	want := []string{
		"sts.yaml:1: issuer must be https",
		"sts.yaml:2: listen must be host:port",
		"sts.yaml:4: signing.algorithm \"HS256\"",
		"sts.yaml:5: tokens.max_ttl must not be below",
		"sts.yaml:10: upstream audiences must name at least one",
		"sts.yaml:12: jwks_uri and jwks_file are exclusive",
		"sts.yaml:13: field colour not found",
		"sts.yaml:14: duplicate upstream name",
		"sts.yaml:16: issuer \"https://issuer.example\" is claimed by two upstreams",
		"sts.yaml:17: empty audience",
		"sts.yaml:19: upstream kind \"saml\"",
		"sts.yaml:23: revocation.backend \"etcd\"",
	}
	msg := err.Error()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("missing %q in:\n%s", w, msg)
		}
	}
	if len(ce.Problems) != len(want) {
		t.Errorf("%d problems, want %d:\n%s", len(ce.Problems), len(want), msg)
	}
}

func TestParseConfigRejects(t *testing.T) {
	cases := map[string]struct{ from, to, want string }{
		"no tls":              {"tls: {cert_file: tls.crt, key_file: tls.key}\n", "", "tls.cert_file and tls.key_file are required"},
		"insecure with files": {"tls: {cert_file: tls.crt, key_file: tls.key}", "tls: {cert_file: tls.crt, key_file: tls.key, insecure_http: true}", "excludes"},
		"unknown top key":     {"listen:", "listn: x\nlisten:", "field listn not found"},
		"no upstreams":        {"upstreams:\n  - name: cluster-a\n    kind: oidc\n    issuer: https://issuer.example\n    audiences: [sts]\n    jwks_file: cluster-a-jwks.json\n", "", "at least one upstream"},
		"no policy":           {"policy_files: [policy.yaml]\n", "", "policy_files must name"},
		"redis without addrs": {"  backend: embedded\n  embedded: {path: data/revocation.db}\n  redis: {addrs: [\"127.0.0.1:6379\"]}\n", "  backend: redis\n  redis: {addrs: []}\n", "revocation.redis.addrs must name"},
		"redis bad addr":      {"  backend: embedded\n  embedded: {path: data/revocation.db}\n  redis: {addrs: [\"127.0.0.1:6379\"]}\n", "  backend: redis\n  redis: {addrs: [nope]}\n", "is not host:port"},
		"skew too big":        {"jwks_file: cluster-a-jwks.json", "jwks_file: cluster-a-jwks.json\n    clock_skew: 5m", "clock_skew must be between"},
		"bad duration":        {"default_ttl: 5m", "default_ttl: soon", "want a duration"},
		"http jwks_uri":       {"jwks_file: cluster-a-jwks.json", "jwks_uri: http://issuer.example/jwks", "jwks_uri must be an https URL"},
		"bad upstream name":   {"name: cluster-a", "name: \"cluster a\"", "may hold only"},
		"trailing slash":      {"issuer: https://127.0.0.1:8443", "issuer: https://127.0.0.1:8443/", "trailing slash"},
		"bad alg":             {"jwks_file: cluster-a-jwks.json", "jwks_file: cluster-a-jwks.json\n    algorithms: [HS256]", "algorithm \"HS256\""},
		"not yaml":            {"listen: 127.0.0.1:8443", "listen: [", "sts.yaml"},
		"spiffe without td":   {"    kind: oidc\n    issuer: https://issuer.example\n", "    kind: spiffe\n", "trust_domain is required"},
		"spiffe with jwks":    {"    kind: oidc\n    issuer: https://issuer.example\n", "    kind: spiffe\n    trust_domain: prod.example\n", "jwks_file does not apply"},
		"spiffe two sources":  {"    kind: oidc\n    issuer: https://issuer.example\n    audiences: [sts]\n    jwks_file: cluster-a-jwks.json\n", "    kind: spiffe\n    trust_domain: prod.example\n    audiences: [sts]\n    bundle_file: b.json\n    workload_api_socket: unix:///tmp/a.sock\n", "exactly one of"},
		"spiffe bad td":       {"    kind: oidc\n    issuer: https://issuer.example\n    audiences: [sts]\n    jwks_file: cluster-a-jwks.json\n", "    kind: spiffe\n    trust_domain: Prod.Example\n    audiences: [sts]\n    bundle_file: b.json\n", "not a valid SPIFFE trust domain"},
		"spiffe endpoint":     {"    kind: oidc\n    issuer: https://issuer.example\n    audiences: [sts]\n    jwks_file: cluster-a-jwks.json\n", "    kind: spiffe\n    trust_domain: prod.example\n    audiences: [sts]\n    bundle_endpoint: {url: https://b.example/bundle, profile: https_spiffe}\n", "endpoint_spiffe_id must be"},
		"oidc with td":        {"    jwks_file: cluster-a-jwks.json\n", "    jwks_file: cluster-a-jwks.json\n    trust_domain: x\n", "applies to spiffe upstreams only"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := strings.Replace(goodConfig, tc.from, tc.to, 1)
			if c == goodConfig {
				t.Fatal("edit did not apply")
			}
			_, err := ParseConfig("sts.yaml", []byte(c))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestLoadConfigTooLarge(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(p, []byte("#"+strings.Repeat("x", maxConfigSize)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(p); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("got %v", err)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(goodConfig))
	f.Add([]byte("issuer: [\n"))
	f.Add([]byte("upstreams: [{name: a, audiences: []}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig("f.yaml", data)
		if err != nil {
			return
		}
		// Anything accepted must hold the invariants New relies on.
		if cfg.Issuer == "" || len(cfg.Upstreams) == 0 || len(cfg.PolicyFiles) == 0 {
			t.Fatalf("accepted incomplete config: %+v", cfg)
		}
		for _, u := range cfg.Upstreams {
			if len(u.Audiences) == 0 || u.Issuer == "" {
				t.Fatalf("accepted upstream without expectations: %+v", u)
			}
		}
	})
}
