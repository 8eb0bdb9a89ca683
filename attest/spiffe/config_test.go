package spiffe_test

import (
	"strings"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/attest/spiffe"
)

func TestConfigValidation(t *testing.T) {
	bundle := writeFile(t, "bundle.json", goodBundle(t, tdA))
	good := func() spiffe.Config {
		return spiffe.Config{Name: "a", TrustDomain: tdA, Audiences: []string{aud}, BundleFile: bundle}
	}
	endpoint := func(mod func(*spiffe.EndpointConfig)) func(*spiffe.Config) {
		return func(c *spiffe.Config) {
			c.BundleFile = ""
			c.BundleEndpoint = &spiffe.EndpointConfig{URL: "https://a.example/bundle", Profile: spiffe.ProfileWeb}
			mod(c.BundleEndpoint)
		}
	}
	tests := map[string]struct {
		mod  func(*spiffe.Config)
		want []string // substrings of the error, every one reported
	}{
		"no name":                {func(c *spiffe.Config) { c.Name = "" }, []string{"name is required"}},
		"no trust domain":        {func(c *spiffe.Config) { c.TrustDomain = "" }, []string{"trust_domain is required"}},
		"uppercase trust domain": {func(c *spiffe.Config) { c.TrustDomain = "A.example" }, []string{"not a canonical"}},
		"trust domain as an ID":  {func(c *spiffe.Config) { c.TrustDomain = "spiffe://a.example" }, []string{"not a canonical"}},
		"trust domain with port": {func(c *spiffe.Config) { c.TrustDomain = "a.example:443" }, []string{"not a canonical"}},
		"no audience":            {func(c *spiffe.Config) { c.Audiences = nil }, []string{"audience is required"}},
		"empty audience":         {func(c *spiffe.Config) { c.Audiences = []string{""} }, []string{"empty audience"}},
		"no source":              {func(c *spiffe.Config) { c.BundleFile = "" }, []string{"exactly one bundle source", "got 0"}},
		"two sources":            {func(c *spiffe.Config) { c.WorkloadAPISocket = "unix:///run/agent.sock" }, []string{"got 2"}},
		"bad socket":             {func(c *spiffe.Config) { c.BundleFile, c.WorkloadAPISocket = "", "/run/agent.sock" }, []string{"workload_api_socket"}},
		"max stale of a file":    {func(c *spiffe.Config) { c.WorkloadAPIMaxStale = time.Hour }, []string{"max_stale applies to workload_api_socket only"}},
		"negative max stale": {func(c *spiffe.Config) {
			c.BundleFile, c.WorkloadAPISocket, c.WorkloadAPIMaxStale = "", "unix:///run/agent.sock", -1
		},
			[]string{"max_stale must not be negative"}},
		"missing bundle file":    {func(c *spiffe.Config) { c.BundleFile = bundle + ".missing" }, []string{"bundle_file"}},
		"bundle file of no keys": {func(c *spiffe.Config) { c.BundleFile = writeFile(t, "empty.json", []byte(`{"keys":[]}`)) }, []string{"no authorities"}},
		"bundle file of another trust domain": {func(c *spiffe.Config) { c.BundleFile = writeFile(t, "b.json", goodBundle(t, tdB)) },
			[]string{`names trust domain "b.example"`}},
		"bad template": {func(c *spiffe.Config) { c.PathTemplates = []string{"/ns/{namespace}", "ns/{x}", "/a/{sub}"} },
			[]string{"path_templates[1]", "path_templates[2]", "reserved"}},
		"empty subject pattern": {func(c *spiffe.Config) { c.Subjects = []string{""} }, []string{"subjects[0]: empty pattern"}},
		"subject pattern of another trust domain": {func(c *spiffe.Config) { c.Subjects = []string{"spiffe://b.example/*"} },
			[]string{"can match no SPIFFE ID"}},
		"clock skew too large": {func(c *spiffe.Config) { c.ClockSkew = 2 * time.Minute }, []string{"clock_skew"}},
		"endpoint http": {endpoint(func(e *spiffe.EndpointConfig) { e.URL = "http://a.example/bundle" }),
			[]string{"must be an https URL"}},
		"endpoint no profile": {endpoint(func(e *spiffe.EndpointConfig) { e.Profile = "" }), []string{"profile is required"}},
		"endpoint bad profile": {endpoint(func(e *spiffe.EndpointConfig) { e.Profile = "https" }),
			[]string{"neither https_web nor https_spiffe"}},
		"web with SPIFFE ID": {endpoint(func(e *spiffe.EndpointConfig) { e.EndpointSPIFFEID = "spiffe://a.example/s" }),
			[]string{"apply to the https_spiffe profile only"}},
		"spiffe without ID or bootstrap": {endpoint(func(e *spiffe.EndpointConfig) { e.Profile = spiffe.ProfileSPIFFE }),
			[]string{"endpoint_spiffe_id is required", "bootstrap_bundle is required"}},
		"spiffe with a bad ID": {endpoint(func(e *spiffe.EndpointConfig) {
			e.Profile, e.EndpointSPIFFEID, e.BootstrapBundle = spiffe.ProfileSPIFFE, "spiffe://A.example/s", bundle
		}), []string{"not a valid SPIFFE ID"}},
		"spiffe with a missing bootstrap": {endpoint(func(e *spiffe.EndpointConfig) {
			e.Profile, e.EndpointSPIFFEID, e.BootstrapBundle = spiffe.ProfileSPIFFE, "spiffe://a.example/s", bundle+".missing"
		}), []string{"bootstrap_bundle"}},
		"negative durations": {endpoint(func(e *spiffe.EndpointConfig) { e.RefreshInterval, e.FetchTimeout = -1, -1 }),
			[]string{"refresh_interval must not be negative", "fetch_timeout must not be negative"}},
		"max stale within refresh": {endpoint(func(e *spiffe.EndpointConfig) { e.MaxStale = time.Minute }),
			[]string{"max_stale 1m0s must be longer than the refresh interval 5m0s"}},
		"max stale within a set refresh": {endpoint(func(e *spiffe.EndpointConfig) { e.RefreshInterval, e.MaxStale = time.Hour, time.Hour }),
			[]string{"must be longer"}},
		"negative size": {endpoint(func(e *spiffe.EndpointConfig) { e.MaxResponseBytes = -1 }), []string{"max_response_bytes"}},
		"everything at once": {func(c *spiffe.Config) {
			c.Name, c.TrustDomain, c.Audiences, c.BundleFile = "", "", nil, ""
		}, []string{"name is required", "trust_domain is required", "audience is required", "got 0"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := good()
			tt.mod(&cfg)
			v, err := spiffe.New(t.Context(), cfg)
			if err == nil {
				v.Close()
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q lacks %q", err, w)
				}
			}
		})
	}
	for name, mod := range map[string]func(*spiffe.Config){
		"file": func(*spiffe.Config) {},
		"templates, subjects": func(c *spiffe.Config) {
			c.PathTemplates, c.Subjects = []string{"/ns/{ns}/*"}, []string{"*", "spiffe://a.example/*"}
		},
		"web endpoint": endpoint(func(*spiffe.EndpointConfig) {}),
		"spiffe endpoint": endpoint(func(e *spiffe.EndpointConfig) {
			e.Profile, e.EndpointSPIFFEID, e.BootstrapBundle = spiffe.ProfileSPIFFE, "spiffe://a.example/s", bundle
		}),
		"workload API": func(c *spiffe.Config) { c.BundleFile, c.WorkloadAPISocket = "", "unix:///run/spire/agent.sock" },
	} {
		cfg := good()
		mod(&cfg)
		v, err := spiffe.New(t.Context(), cfg)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if v.TrustDomain().Name() != tdA || v.Issuer() != "spiffe://"+tdA || v.Name() != "a" {
			t.Fatalf("%s: %v %v", name, v.TrustDomain(), v.Issuer())
		}
		if err := v.Close(); err != nil {
			t.Fatalf("%s: close: %v", name, err)
		}
	}
}

func TestThumbprint(t *testing.T) {
	// RFC 8705 §3.1: base64url, unpadded, of SHA-256 over the DER certificate.
	c := testCAs()[tdA].svid(t, "spiffe://a.example/w")
	tp := spiffe.Thumbprint(c)
	if len(tp) != 43 || strings.ContainsAny(tp, "+/=") {
		t.Fatalf("thumbprint %q", tp)
	}
}
