package config

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/confcheck"
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
	cfg, err := Parse("/etc/sts/sts.yaml", []byte(goodConfig))
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
	cfg, err := Parse("sts.yaml", []byte(c))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Signing.Algorithm != "ES256" || cfg.Tokens.DefaultTTL.D() != 5*time.Minute || cfg.Tokens.MaxTTL.D() != time.Hour {
		t.Fatalf("defaults not applied: %+v %+v", cfg.Signing, cfg.Tokens)
	}
	if cfg.MetricsListen != "" {
		t.Fatalf("metrics_listen defaults to %q, want unset (metrics not served)", cfg.MetricsListen)
	}
	if cfg.TLS.MinVersion != "1.2" {
		t.Fatalf("tls.min_version defaults to %q", cfg.TLS.MinVersion)
	}
	cfg, err = Parse("sts.yaml", []byte(strings.Replace(c, "key_file: tls.key}", "key_file: tls.key, min_version: 1.3}", 1)))
	if err != nil || cfg.TLS.MinVersion != "1.3" {
		t.Fatalf("tls.min_version 1.3: %v", err)
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
	_, err := Parse("sts.yaml", []byte(bad))
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("want *ConfigError, got %v", err)
	}
	want := []string{
		`sts.yaml:1: issuer: must be https (http only with tls.insecure_http: true)`,
		`sts.yaml:2: listen: must be host:port`,
		`sts.yaml:4: signing.algorithm: "HS256" is not one of ES256, EdDSA, RS256, PS256`,
		`sts.yaml:5: tokens.max_ttl: must not be below tokens.default_ttl`,
		`sts.yaml:10: upstreams[0].audiences: must name at least one expected audience (an empty expectation would accept any)`,
		`sts.yaml:12: upstreams[0].jwks_uri: jwks_uri and jwks_file are mutually exclusive`,
		`sts.yaml:13: upstreams[0].colour: unknown key (the keys here are name, kind, issuer, audiences, jwks_uri, jwks_file, algorithms, clock_skew, max_token_age, subjects, required_claims, condition, attribute_bounds, preset, attributes, binding_attributes, instance_attributes, one_time, trust_domain, bundle_file, bundle_endpoint, workload_api_socket, max_stale, path_templates)`,
		`sts.yaml:14: upstreams[1].name: duplicate upstream name "cluster-a"`,
		`sts.yaml:16: upstreams[1].issuer: "https://issuer.example" is claimed by two upstreams; a token must route to exactly one`,
		`sts.yaml:17: upstreams[1].audiences[0]: empty audience`,
		`sts.yaml:19: upstreams[2].kind: "saml" is not supported (want oidc or spiffe)`,
		`sts.yaml:23: revocation.backend: "etcd" is not embedded or redis`,
	}
	if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, want) || len(ce.Problems) != len(want) {
		t.Errorf("got:\n%s\nwant:\n%s", err, strings.Join(want, "\n"))
	}
}

func TestParseConfigRejects(t *testing.T) {
	cases := map[string]struct{ from, to, want string }{
		"no tls":              {"tls: {cert_file: tls.crt, key_file: tls.key}\n", "", "tls.cert_file and tls.key_file are required"},
		"insecure with files": {"tls: {cert_file: tls.crt, key_file: tls.key}", "tls: {cert_file: tls.crt, key_file: tls.key, insecure_http: true}", "excludes"},
		"unknown top key":     {"listen:", "listn: x\nlisten:", `sts.yaml:2: listn: unknown key (did you mean "listen"?)`},
		"no upstreams":        {"upstreams:\n  - name: cluster-a\n    kind: oidc\n    issuer: https://issuer.example\n    audiences: [sts]\n    jwks_file: cluster-a-jwks.json\n", "", "at least one upstream"},
		"no policy":           {"policy_files: [policy.yaml]\n", "", "policy_files: must name"},
		"redis without addrs": {"  backend: embedded\n  embedded: {path: data/revocation.db}\n  redis: {addrs: [\"127.0.0.1:6379\"]}\n", "  backend: redis\n  redis: {addrs: []}\n", "revocation.redis.addrs must name"},
		"redis bad addr":      {"  backend: embedded\n  embedded: {path: data/revocation.db}\n  redis: {addrs: [\"127.0.0.1:6379\"]}\n", "  backend: redis\n  redis: {addrs: [nope]}\n", "is not host:port"},
		"identity is the db":  {"  embedded: {path: data/revocation.db}\n", "  embedded: {path: data/revocation.db}\n  identity_file: ./data/revocation.db\n", "revocation.identity_file: must not be the store's own file"},
		"skew too big":        {"jwks_file: cluster-a-jwks.json", "jwks_file: cluster-a-jwks.json\n    clock_skew: 5m", "clock_skew: 5m0s exceeds the maximum 1m0s"},
		"bad duration":        {"default_ttl: 5m", "default_ttl: soon", `sts.yaml:5: tokens.default_ttl: "soon" is not a duration (write e.g. 10m or 1h30m)`},
		"http jwks_uri":       {"jwks_file: cluster-a-jwks.json", "jwks_uri: http://issuer.example/jwks", "jwks_uri: \"http://issuer.example/jwks\" must be an https URL"},
		"bad upstream name":   {"name: cluster-a", "name: \"cluster a\"", "may hold only"},
		"trailing slash":      {"issuer: https://127.0.0.1:8443", "issuer: https://127.0.0.1:8443/", "trailing slash"},
		"bad alg":             {"jwks_file: cluster-a-jwks.json", "jwks_file: cluster-a-jwks.json\n    algorithms: [HS256]", "algorithm \"HS256\""},
		"not yaml":            {"listen: 127.0.0.1:8443", "listen: [", "sts.yaml"},
		"spiffe without td":   {"    kind: oidc\n    issuer: https://issuer.example\n", "    kind: spiffe\n", "trust_domain: is required"},
		"spiffe with jwks":    {"    kind: oidc\n    issuer: https://issuer.example\n", "    kind: spiffe\n    trust_domain: prod.example\n", "upstreams[0].jwks_file: does not apply"},
		"spiffe two sources":  {"    kind: oidc\n    issuer: https://issuer.example\n    audiences: [sts]\n    jwks_file: cluster-a-jwks.json\n", "    kind: spiffe\n    trust_domain: prod.example\n    audiences: [sts]\n    bundle_file: b.json\n    workload_api_socket: unix:///tmp/a.sock\n", "exactly one of"},
		"spiffe bad td":       {"    kind: oidc\n    issuer: https://issuer.example\n    audiences: [sts]\n    jwks_file: cluster-a-jwks.json\n", "    kind: spiffe\n    trust_domain: Prod.Example\n    audiences: [sts]\n    bundle_file: b.json\n", "not a valid SPIFFE trust domain"},
		"spiffe endpoint":     {"    kind: oidc\n    issuer: https://issuer.example\n    audiences: [sts]\n    jwks_file: cluster-a-jwks.json\n", "    kind: spiffe\n    trust_domain: prod.example\n    audiences: [sts]\n    bundle_endpoint: {url: https://b.example/bundle, profile: https_spiffe}\n", "endpoint_spiffe_id: must be"},
		"bad metrics_listen":  {"listen: 127.0.0.1:8443\n", "listen: 127.0.0.1:8443\nmetrics_listen: 9090\n", "sts.yaml:3: metrics_listen: must be host:port"},
		"metrics on listen":   {"listen: 127.0.0.1:8443\n", "listen: 127.0.0.1:8443\nmetrics_listen: 127.0.0.1:8443\n", "metrics_listen: must differ from listen"},
		"tls 1.1":             {"key_file: tls.key}", "key_file: tls.key, min_version: 1.1}", `sts.yaml:3: tls.min_version: "1.1" must be "1.2" or "1.3"`},
		"min_version on http": {"issuer: https://127.0.0.1:8443\nlisten: 127.0.0.1:8443\ntls: {cert_file: tls.crt, key_file: tls.key}", "issuer: http://127.0.0.1:8443\nlisten: 127.0.0.1:8443\ntls: {insecure_http: true, min_version: \"1.3\"}", "tls.min_version: does not apply with insecure_http"},
		"oidc with td":        {"    jwks_file: cluster-a-jwks.json\n", "    jwks_file: cluster-a-jwks.json\n    trust_domain: x\n", "applies to spiffe upstreams only"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := strings.Replace(goodConfig, tc.from, tc.to, 1)
			if c == goodConfig {
				t.Fatal("edit did not apply")
			}
			_, err := Parse("sts.yaml", []byte(c))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestLoadConfigTooLarge(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(p, []byte("#"+strings.Repeat("x", confcheck.MaxFileSize)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("got %v", err)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(goodConfig))
	f.Add([]byte("issuer: [\n"))
	f.Add([]byte("upstreams: [{name: a, audiences: []}]"))
	f.Add([]byte("lsiten: x\ntokens: {default_ttl: 5 minutes}\nupstreams: [{name: a, colour: b, bundle_endpoint: {refresh_interval: x}}]\n"))
	f.Add([]byte("a: &a [x, x]\nb: &b [*a, *a]\npolicy_files: *b\n<<: {listen: x}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("f.yaml", data)
		if err != nil {
			// Every problem is one line, in the file (at line 0 when the file is empty).
			var ce *ConfigError
			if !errors.As(err, &ce) || len(ce.Problems) == 0 {
				t.Fatalf("error %v (%T) is not a *ConfigError", err, err)
			}
			for _, p := range ce.Problems {
				if p.File != "f.yaml" || p.Line < 0 || p.Message == "" || strings.Contains(p.String(), "\n") {
					t.Fatalf("bad problem %q", p)
				}
			}
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

// TestParseConfigProblems: every problem of a file at once, each as
// "file:line: path: message", whether the key is unknown, the value cannot be
// decoded or it fails validation.
func TestParseConfigProblems(t *testing.T) {
	tests := []struct {
		name     string
		from, to string
		want     []string
	}{
		{
			name: "misspelt key",
			from: "listen:", to: "lsiten:",
			want: []string{
				`sts.yaml:1: listen: is required (host:port)`,
				`sts.yaml:2: lsiten: unknown key (did you mean "listen"?)`,
			},
		},
		{
			name: "bad duration, and the other problems too",
			from: "listen: 127.0.0.1:8443\ntls: {cert_file: tls.crt, key_file: tls.key}\nsigning: {algorithm: ES256, key_dir: keys}\ntokens: {default_ttl: 5m, max_ttl: 1h}\n",
			to:   "listen: nope\ntls: {cert_file: tls.crt, key_file: tls.key}\nsigning: {algoritm: ES256, key_dir: keys}\ntokens: {default_ttl: 5 minutes, max_ttl: 1h}\n",
			want: []string{
				`sts.yaml:2: listen: must be host:port`,
				`sts.yaml:4: signing.algoritm: unknown key (did you mean "algorithm"?)`,
				`sts.yaml:5: tokens.default_ttl: "5 minutes" is not a duration (write e.g. 10m or 1h30m)`,
			},
		},
		{
			name: "nested keys and values of the wrong type",
			from: "    jwks_file: cluster-a-jwks.json\n",
			to: "    jwks_file: cluster-a-jwks.json\n    colour: blue\n    clock_skew: [1s]\n    required_claims: {x.io/team: [a]}\n" +
				"  - name: spire\n    kind: spiffe\n    trust_domain: prod.example\n    audiences: [sts]\n" +
				"    bundle_endpoint: {url: https://b.example, profile: https_web, refresh_interval: soon, max_stale: -1m}\n",
			want: []string{
				`sts.yaml:12: upstreams[0].colour: unknown key (the keys here are name, kind, issuer, audiences, jwks_uri, jwks_file, algorithms, clock_skew, max_token_age, subjects, required_claims, condition, attribute_bounds, preset, attributes, binding_attributes, instance_attributes, one_time, trust_domain, bundle_file, bundle_endpoint, workload_api_socket, max_stale, path_templates)`,
				`sts.yaml:13: upstreams[0].clock_skew: must be a duration such as 5m or 90s`,
				`sts.yaml:14: upstreams[0].required_claims["x.io/team"]: must be a string`,
				`sts.yaml:19: upstreams[1].bundle_endpoint.refresh_interval: "soon" is not a duration (write e.g. 10m or 1h30m)`,
				`sts.yaml:19: upstreams[1].bundle_endpoint: bundle_endpoint durations must not be negative`,
			},
		},
		{
			// check-config type-checks upstream conditions in their declared
			// environment and knows the attributes each upstream maps.
			name: "upstream conditions and bounds",
			from: "    jwks_file: cluster-a-jwks.json\n",
			to: "    jwks_file: cluster-a-jwks.json\n    preset: kubernetes\n" +
				"    condition: attributes.namespce == 'dev' || claims.x\n" +
				"    attribute_bounds: {namespace: [dev, ''], repository: [a], sub: [x]}\n" +
				"    required_claims: {/kubernetes.io/namespace: dev, /a~2: x}\n" +
				"  - name: spire\n    kind: spiffe\n    trust_domain: prod.example\n    audiences: [sts]\n    bundle_file: b.json\n" +
				"    path_templates: ['/ns/{namespace}/sa/{service_account}']\n" +
				"    condition: attributes.namespace == 'prod' && attributes.region == 'eu'\n" +
				"    attribute_bounds: {service_account: [api]}\n",
			want: []string{
				`sts.yaml:13: upstreams[0].condition: reads attribute "namespce", which this upstream never maps (known: iss, namespace, node, node_uid, pod, pod_uid, service_account, service_account_uid, sub)`,
				`sts.yaml:14: upstreams[0].attribute_bounds.namespace[1]: empty pattern`,
				`sts.yaml:14: upstreams[0].attribute_bounds.repository: this upstream never maps attribute "repository" (known: iss, namespace, node, node_uid, pod, pod_uid, service_account, service_account_uid, sub)`,
				`sts.yaml:14: upstreams[0].attribute_bounds.sub: bound sub with the upstream's subjects or issuer instead`,
				`sts.yaml:15: upstreams[0].required_claims["/a~2"]: claim path "/a~2": '~' must be followed by 0 or 1 (RFC 6901)`,
				`sts.yaml:22: upstreams[1].condition: reads attribute "region", which this upstream never maps (known: iss, namespace, path, service_account, sub, trust_domain)`,
			},
		},
		{
			name: "wrong types are reported once",
			from: "listen: 127.0.0.1:8443\ntls: {cert_file: tls.crt, key_file: tls.key}\n",
			to:   "listen: [a]\ntls: true\n",
			want: []string{
				`sts.yaml:2: listen: must be a string`,
				`sts.yaml:3: tls: must be a mapping`,
			},
		},
		{
			name: "a value of the wrong kind is not complained about twice",
			from: "    jwks_file: cluster-a-jwks.json\n",
			to:   "    jwks_file: cluster-a-jwks.json\n  - name: spire\n    kind: spiffe\n    trust_domain: prod.example\n    audiences: [sts]\n    bundle_endpoint: 5\n",
			want: []string{`sts.yaml:16: upstreams[1].bundle_endpoint: must be a mapping`},
		},
		{
			name: "not a mapping",
			from: goodConfig, to: "- issuer\n",
			want: []string{`sts.yaml:1: the document must be a mapping of keys to values`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := strings.Replace(goodConfig, tt.from, tt.to, 1)
			if c == goodConfig {
				t.Fatal("edit did not apply")
			}
			_, err := Parse("sts.yaml", []byte(c))
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("want *ConfigError, got %v", err)
			}
			if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, tt.want) {
				t.Errorf("got:\n%s\nwant:\n%s", err, strings.Join(tt.want, "\n"))
			}
		})
	}
}

// TestSigningRSABits: signing.rsa_bits takes 2048, 3072 or 4096 with an RSA
// algorithm; anything else is refused at its line.
func TestSigningRSABits(t *testing.T) {
	for _, tc := range []struct {
		signing string
		bits    int
		want    string
	}{
		{"{algorithm: RS256, key_dir: keys}", 0, ""},
		{"{algorithm: RS256, key_dir: keys, rsa_bits: 2048}", 2048, ""},
		{"{algorithm: PS256, key_dir: keys, rsa_bits: 4096}", 4096, ""},
		{"{algorithm: RS256, key_dir: keys, rsa_bits: 1024}", 0, "sts.yaml:4: signing.rsa_bits: 1024 is not one of 2048, 3072, 4096"},
		{"{algorithm: RS256, key_dir: keys, rsa_bits: 3000}", 0, "is not one of 2048, 3072, 4096"},
		{"{algorithm: ES256, key_dir: keys, rsa_bits: 2048}", 0, "sts.yaml:4: signing.rsa_bits: applies to RS256 and PS256 only, not ES256"},
	} {
		cfg, err := Parse("sts.yaml", []byte(strings.Replace(goodConfig, "{algorithm: ES256, key_dir: keys}", tc.signing, 1)))
		if tc.want == "" {
			if err != nil || cfg.Signing.RSABits != tc.bits {
				t.Fatalf("%s: %v %+v", tc.signing, err, cfg)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: got %v, want %q", tc.signing, err, tc.want)
		}
	}
}

// TestCheckProblemsHaveLines: what the dry run finds beyond the schema (files
// that cannot be read) is reported, all of it, at the line and key path of the
// setting, in the style of the validation problems.
func TestCheckProblemsHaveLines(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sts.yaml")
	if err := os.WriteFile(path, []byte(goodConfig+"audit: {path: nodir/audit.jsonl}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte("rules: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	err = Check(context.Background(), cfg)
	if err == nil {
		t.Fatal("Check accepted missing files")
	}
	for _, want := range []string{
		path + ":7: upstreams[0]: upstream cluster-a: ",
		path + ":3: tls: open ",
		path + ":17: audit.path: ",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Check:\n%v\nlacks %q", err, want)
		}
	}
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the located errors do not wrap the cause: %v", err)
	}
}
