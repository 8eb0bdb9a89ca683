package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
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
		"no keys":        {"  - id: a\n", "needs jwks_file or jwks_uri"},
		"both keys":      {"  - {id: a, jwks_file: a.json, jwks_uri: \"https://a.example/jwks\"}\n", "mutually exclusive"},
		"http jwks":      {"  - {id: a, jwks_uri: \"http://a.example/jwks\"}\n", "must be an https URL"},
		"duplicate":      {"  - {id: a, jwks_file: a.json}\n  - {id: a, jwks_file: b.json}\n", `duplicate client id "a"`},
		"spiffe id":      {"  - {id: \"spiffe://td/x\", jwks_file: a.json}\n", "must not be a SPIFFE ID"},
		"space":          {"  - {id: \"a b\", jwks_file: a.json}\n", "no spaces"},
		"empty id":       {"  - {jwks_file: a.json}\n", "client id is required"},
		"bad algorithm":  {"  - {id: a, jwks_file: a.json, algorithms: [HS256]}\n", `algorithm "HS256" is not supported`},
		"unknown key":    {"  - {id: a, jwks_file: a.json, secret: x}\n", "secret"},
		"valid (no err)": {"  - {id: a, jwks_file: a.json, algorithms: [ES256]}\n", ""},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ParseConfig("sts.yaml", []byte(base+c.clients))
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
	cfg, err := ParseConfig("sts.yaml", []byte(goodConfig+"limits: {per_ip_rps: 200, burst: 400, max_in_flight: 512, "+
		"trusted_proxies: [10.0.0.0/8, \"2001:db8::1\"], per_workload_rps: 5, workload_burst: 10, per_client_rps: 50, client_burst: 60, shed_queue_delay: 100ms}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := LimitsConfig{PerIPRPS: 200, Burst: 400, MaxInFlight: 512, TrustedProxies: []string{"10.0.0.0/8", "2001:db8::1"},
		PerWorkloadRPS: 5, WorkloadBurst: 10, PerClientRPS: 50, ClientBurst: 60, ShedQueueDelay: Duration(100 * time.Millisecond)}
	if !reflect.DeepEqual(cfg.Limits, want) {
		t.Fatalf("limits %+v", cfg.Limits)
	}
	_, err = ParseConfig("sts.yaml", []byte(goodConfig+"limits: {per_ip_rps: -1, burst: -2, max_in_flight: -3, "+
		"per_workload_rps: -1, workload_burst: -1, per_client_rps: .nan, client_burst: -1, shed_queue_delay: 500us, trusted_proxies: [10.0.0.0/99, proxy.local]}\n"))
	if err == nil {
		t.Fatal("negative limits accepted")
	}
	for _, want := range []string{"per_ip_rps", "burst", "max_in_flight", "per_workload_rps", "workload_burst", "per_client_rps",
		"client_burst", "shed_queue_delay", `trusted_proxies[0]: "10.0.0.0/99"`, `trusted_proxies[1]: "proxy.local"`} {
		if !strings.Contains(err.Error(), "limits."+want) {
			t.Errorf("no problem for %s in %v", want, err)
		}
	}
}
