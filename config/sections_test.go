package config

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/attest/spiffe"
)

func TestClientConfigValidation(t *testing.T) {
	base := `issuer: https://sts.example
listen: 127.0.0.1:8443
tls: {cert_file: a.crt, key_file: a.key}
signing: {algorithm: ES256, key_dir: keys}
upstreams:
  - {name: a, kind: oidc, issuer: "https://a.example", audiences: [sts], jwks_file: a.json}
policy_files: [p.yaml]
revocation: {backend: embedded, embedded: {path: r.db}}
clients:
`
	cases := map[string]struct{ clients, want string }{
		"no keys":                        {"  - id: a\n", "needs jwks_file or jwks_uri"},
		"both keys":                      {"  - {id: a, jwks_file: a.json, jwks_uri: \"https://a.example/jwks\"}\n", "mutually exclusive"},
		"http jwks":                      {"  - {id: a, jwks_uri: \"http://a.example/jwks\"}\n", "must be an https URL"},
		"duplicate":                      {"  - {id: a, jwks_file: a.json}\n  - {id: a, jwks_file: b.json}\n", `duplicate client id "a"`},
		"spiffe id with keys":            {"  - {id: \"spiffe://td/x\", jwks_file: a.json, introspect_audiences: [x]}\n", "authenticates with its X.509-SVID (mTLS): no jwks_file"},
		"spiffe id without audiences":    {"  - {id: \"spiffe://td/x\"}\n", "needs introspect_audiences"},
		"malformed spiffe id":            {"  - {id: \"spiffe://TD/x\", introspect_audiences: [x]}\n", "client id"},
		"empty audience":                 {"  - {id: a, jwks_file: a.json, introspect_audiences: [\"\"]}\n", "an audience must be 1 to"},
		"audience pattern":               {"  - {id: a, jwks_file: a.json, introspect_audiences: [\"https://*.example\"]}\n", "exact aud values, not patterns"},
		"duplicate audience":             {"  - {id: a, jwks_file: a.json, introspect_audiences: [x, x]}\n", `duplicate audience "x"`},
		"audience with control":          {"  - {id: a, jwks_file: a.json, introspect_audiences: [\"a\\x01\"]}\n", "printable"},
		"valid resource server (no err)": {"  - {id: a, jwks_file: a.json, introspect_audiences: [\"https://ledger.internal\"]}\n", ""},
		"mTLS resource server, no client certificates": {"  - {id: \"spiffe://td/ledger\", introspect_audiences: [\"https://ledger.internal\"]}\n", "set tls.client_certificates: request"},
		"space":          {"  - {id: \"a b\", jwks_file: a.json}\n", "no spaces"},
		"empty id":       {"  - {jwks_file: a.json}\n", "client id is required"},
		"bad algorithm":  {"  - {id: a, jwks_file: a.json, algorithms: [HS256]}\n", `algorithm "HS256" is not supported`},
		"unknown key":    {"  - {id: a, jwks_file: a.json, secret: x}\n", "secret"},
		"valid (no err)": {"  - {id: a, jwks_file: a.json, algorithms: [ES256]}\n", ""},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse("sts.yaml", []byte(base+c.clients))
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("error %v, want it to contain %q", err, c.want)
			}
		})
	}
}

func TestLimitsConfig(t *testing.T) {
	cfg, err := Parse("sts.yaml", []byte(goodConfig+"limits: {per_ip_rps: 200, burst: 400, max_in_flight: 512, "+
		"trusted_proxies: [10.0.0.0/8, \"2001:db8::1\"], per_workload_rps: 5, workload_burst: 10, per_client_rps: 50, client_burst: 60, shed_queue_delay: 100ms, "+
		"max_connections: 1000, admin_per_ip_rps: 7, admin_burst: 9, admin_max_in_flight: 12}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := LimitsConfig{PerIPRPS: 200, Burst: 400, MaxInFlight: 512, TrustedProxies: []string{"10.0.0.0/8", "2001:db8::1"},
		PerWorkloadRPS: 5, WorkloadBurst: 10, PerClientRPS: 50, ClientBurst: 60, ShedQueueDelay: Duration(100 * time.Millisecond),
		MaxConnections: 1000, AdminPerIPRPS: 7, AdminBurst: 9, AdminMaxInFlight: 12}
	if !reflect.DeepEqual(cfg.Limits, want) {
		t.Fatalf("limits %+v", cfg.Limits)
	}
	_, err = Parse("sts.yaml", []byte(goodConfig+"limits: {per_ip_rps: -1, burst: -2, max_in_flight: -3, "+
		"per_workload_rps: -1, workload_burst: -1, per_client_rps: .nan, client_burst: -1, shed_queue_delay: 500us, trusted_proxies: [10.0.0.0/99, proxy.local], "+
		"max_connections: -1, admin_per_ip_rps: .inf, admin_burst: -1, admin_max_in_flight: -1}\n"))
	if err == nil {
		t.Fatal("negative limits accepted")
	}
	for _, want := range []string{"per_ip_rps", "burst", "max_in_flight", "per_workload_rps", "workload_burst", "per_client_rps",
		"client_burst", "shed_queue_delay", "max_connections", "admin_per_ip_rps", "admin_burst", "admin_max_in_flight", `trusted_proxies[0]: "10.0.0.0/99"`, `trusted_proxies[1]: "proxy.local"`} {
		if !strings.Contains(err.Error(), "limits."+want) {
			t.Errorf("no problem for %s in %v", want, err)
		}
	}
}

// TestOIDCRulesFromAttest: an oidc upstream's own rules are attest/oidc's
// (Config.Check), reported here with the key path and line of the offending value.
func TestOIDCRulesFromAttest(t *testing.T) {
	bad := strings.Replace(goodConfig, "    jwks_file: cluster-a-jwks.json\n",
		"    jwks_file: cluster-a-jwks.json\n    algorithms: [ES256, HS256]\n    subjects: [\"ns:*\", \" \"]\n    required_claims: {team: \"\"}\n    max_token_age: -1m\n", 1)
	_, err := Parse("sts.yaml", []byte(bad))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`sts.yaml:12: upstreams[0].algorithms[1]: algorithm "HS256" not allowed`,
		`sts.yaml:13: upstreams[0].subjects[1]: empty subject pattern`,
		`sts.yaml:14: upstreams[0].required_claims.team: required claim "team" has an empty pattern`,
		`sts.yaml:15: upstreams[0].max_token_age: must not be negative`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("no %q in\n%v", want, err)
		}
	}
	// The same rules refuse the same values when the verifier is built directly.
	var cfg Config
	cfg.Upstreams = []UpstreamConfig{{Name: "a", Kind: "oidc", Issuer: "https://i.example", Audiences: []string{"sts"}, JWKSFile: "k.json", Algorithms: []string{"HS256"}}}
	if ps := cfg.Upstreams[0].oidcConfig().Check(); len(ps) != 1 || ps[0].PathString() != "algorithms[0]" {
		t.Fatalf("attest/oidc problems %+v", ps)
	}
}

// TestSPIFFEMaxTokenAge: max_token_age applies to JWT-SVIDs and reaches the verifier.
func TestSPIFFEMaxTokenAge(t *testing.T) {
	yaml, sc := withSPIFFEUpstream(t, "bundle_file: prod-bundle.json\n    max_token_age: 10m")
	if sc.MaxTokenAge != 10*time.Minute {
		t.Fatalf("spiffe MaxTokenAge %v", sc.MaxTokenAge)
	}
	_, err := Parse("sts.yaml", []byte(strings.Replace(yaml, "max_token_age: 10m", "max_token_age: -1s", 1)))
	if err == nil || !strings.Contains(err.Error(), "upstreams[1].max_token_age: must not be negative") {
		t.Fatalf("negative max_token_age: %v", err)
	}
}

// TestSPIFFEWorkloadAPIMaxStale: max_stale bounds a Workload API bundle's staleness
// and applies to workload_api_socket only.
func TestSPIFFEWorkloadAPIMaxStale(t *testing.T) {
	yaml, sc := withSPIFFEUpstream(t, "workload_api_socket: unix:///run/spire/agent.sock\n    max_stale: 15m")
	if sc.WorkloadAPIMaxStale != 15*time.Minute {
		t.Fatalf("spiffe WorkloadAPIMaxStale %v", sc.WorkloadAPIMaxStale)
	}
	for _, c := range []struct{ from, to, want string }{
		{"max_stale: 15m", "max_stale: -1s", "upstreams[1].max_stale: must not be negative"},
		{"workload_api_socket: unix:///run/spire/agent.sock", "bundle_file: prod-bundle.json", "upstreams[1].max_stale: applies to workload_api_socket only"},
	} {
		_, err := Parse("sts.yaml", []byte(strings.Replace(yaml, c.from, c.to, 1)))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s: %v", c.to, err)
		}
	}
}

// withSPIFFEUpstream returns goodConfig with a spiffe upstream "prod" of trust
// domain prod.example whose other keys are lines (indented as keys of the
// upstream after the first), and that upstream's spiffe.Config.
func withSPIFFEUpstream(t *testing.T, lines string) (string, spiffe.Config) {
	t.Helper()
	yaml := strings.Replace(goodConfig, "policy_files:", `  - name: prod
    kind: spiffe
    trust_domain: prod.example
    audiences: [sts]
    `+lines+`
policy_files:`, 1)
	cfg, err := Parse("/etc/sts/sts.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return yaml, spiffeConfig(cfg, cfg.Upstreams[1], Options{})
}
