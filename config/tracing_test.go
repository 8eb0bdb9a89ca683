package config

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/testotlp"
)

func TestTracingConfig(t *testing.T) {
	ok := func(check func(t *testing.T, c TracingConfig)) func(*testing.T, TracingConfig, error) {
		return func(t *testing.T, c TracingConfig, err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
			if check != nil {
				check(t, c)
			}
		}
	}
	fails := func(want string) func(*testing.T, TracingConfig, error) {
		return func(t *testing.T, _ TracingConfig, err error) {
			t.Helper()
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("got %v, want a problem containing %q", err, want)
			}
		}
	}
	cases := []struct {
		name    string
		section string
		check   func(*testing.T, TracingConfig, error)
	}{
		{"absent: off", "", ok(func(t *testing.T, c TracingConfig) {
			if c.Enabled() || c.SampleRatio != nil {
				t.Fatalf("tracing on by default: %+v", c)
			}
		})},
		{"defaults", "tracing: {otlp_endpoint: https://collector:4318/v1/traces}", ok(func(t *testing.T, c TracingConfig) {
			if !c.Enabled() || *c.SampleRatio != 0.1 || c.ServiceName != "safeconduct" || c.Timeout.D() != 10*time.Second {
				t.Fatalf("defaults %+v", c)
			}
		})},
		{"all keys", "tracing:\n  otlp_endpoint: https://collector:4318/v1/traces\n  sample_ratio: 0\n  service_name: sts-eu\n  ca_file: ca.pem\n  timeout: 3s\n  headers_file: otlp-headers\n",
			ok(func(t *testing.T, c TracingConfig) {
				if *c.SampleRatio != 0 || c.ServiceName != "sts-eu" || c.Timeout.D() != 3*time.Second || c.CAFile != "ca.pem" || c.HeadersFile != "otlp-headers" {
					t.Fatalf("parsed %+v", c)
				}
			})},
		{"no path gets the traces path", "tracing: {otlp_endpoint: \"https://collector:4318\"}", ok(func(t *testing.T, c TracingConfig) {
			if got := c.endpointURL(); got != "https://collector:4318/v1/traces" {
				t.Fatalf("endpoint %s", got)
			}
		})},
		{"http with insecure", "tracing: {otlp_endpoint: \"http://127.0.0.1:4318/v1/traces\", insecure: true}", ok(nil)},
		{"http without insecure", "tracing: {otlp_endpoint: \"http://collector:4318/v1/traces\"}", fails("set tracing.insecure: true")},
		{"https with insecure", "tracing: {otlp_endpoint: \"https://collector:4318/v1/traces\", insecure: true}", fails("tracing.insecure: true applies only")},
		{"ca_file with http", "tracing: {otlp_endpoint: \"http://collector:4318/v1/traces\", insecure: true, ca_file: ca.pem}", fails("tracing.ca_file: applies only")},
		{"no scheme", "tracing: {otlp_endpoint: \"collector:4318/v1/traces\"}", fails("tracing.otlp_endpoint: must be an http(s) URL")},
		{"grpc scheme", "tracing: {otlp_endpoint: \"grpc://collector:4317\"}", fails("tracing.otlp_endpoint: must be an http(s) URL")},
		{"not a URL", "tracing: {otlp_endpoint: \"https://[::1\"}", fails("tracing.otlp_endpoint: must be an http(s) URL")},
		{"no host", "tracing: {otlp_endpoint: \"https:///v1/traces\"}", fails("tracing.otlp_endpoint: must be an http(s) URL")},
		{"credentials in URL", "tracing: {otlp_endpoint: \"https://user:secret@collector/v1/traces\"}", fails("must not carry credentials")},
		{"query", "tracing: {otlp_endpoint: \"https://collector/v1/traces?x=1\"}", fails("query or fragment")},
		{"ratio above 1", "tracing: {otlp_endpoint: https://collector/v1/traces, sample_ratio: 1.5}", fails("tracing.sample_ratio: must be between 0 and 1")},
		{"ratio negative", "tracing: {otlp_endpoint: https://collector/v1/traces, sample_ratio: -0.1}", fails("tracing.sample_ratio: must be between 0 and 1")},
		{"ratio NaN", "tracing: {otlp_endpoint: https://collector/v1/traces, sample_ratio: .nan}", fails("tracing.sample_ratio: must be between 0 and 1")},
		{"timeout negative", "tracing: {otlp_endpoint: https://collector/v1/traces, timeout: -1s}", fails("tracing.timeout: must be positive")},
		{"timeout too long", "tracing: {otlp_endpoint: https://collector/v1/traces, timeout: 5m}", fails("tracing.timeout: must be positive")},
		{"service name control char", "tracing: {otlp_endpoint: https://collector/v1/traces, service_name: \"a\\nb\"}", fails("tracing.service_name")},
		{"keys without endpoint", "tracing: {sample_ratio: 0.5}", fails("tracing.otlp_endpoint is required")},
		{"unknown key", "tracing: {otlp_endpoint: https://collector/v1/traces, endpoint: x}", fails(`tracing.endpoint: unknown key (did you mean "otlp_endpoint"?)`)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			section := tc.section
			if section != "" && !strings.HasSuffix(section, "\n") {
				section += "\n"
			}
			cfg, err := Parse("sts.yaml", []byte(goodConfig+section))
			var c TracingConfig
			if cfg != nil {
				c = cfg.Tracing
			}
			tc.check(t, c, err)
		})
	}
	// The problem names the line of the offending key.
	_, err := Parse("sts.yaml", []byte(goodConfig+"tracing:\n  otlp_endpoint: https://collector/v1/traces\n  sample_ratio: 2\n"))
	if want := "sts.yaml:19: tracing.sample_ratio"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want %q", err, want)
	}
}

func TestTracingHeadersFile(t *testing.T) {
	dir := t.TempDir()
	write := func(data string) string {
		p := filepath.Join(dir, "headers")
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	h, err := readHeadersFile(write("# collector credentials\n\nauthorization: Bearer s3cret-value \nX-Scope-OrgID:tenant-1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h["Authorization"] != "Bearer s3cret-value" || h["X-Scope-Orgid"] != "tenant-1" {
		t.Fatalf("headers %q", h)
	}
	for name, tc := range map[string]struct{ data, want string }{
		"no colon":     {"Authorization Bearer s3cret-value\n", ":1: want"},
		"bad name":     {"Bad Name: s3cret-value\n", ":1: want"},
		"control char": {"# c\nAuthorization: s3cret\x01-value\n", ":2: control character"},
		"reserved":     {"Content-Type: s3cret-value\n", "Content-Type is set by the exporter"},
		"duplicate":    {"X-A: s3cret-value\nx-a: s3cret-value\n", ":2: X-A appears twice"},
		"too large":    {strings.Repeat("#", maxHeadersFile+1), "larger than 64 KiB"},
		"empty name":   {": s3cret-value\n", ":1: want"},
		"empty file":   {"", ""},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := readHeadersFile(write(tc.data))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("the error shows the header value: %v", err)
			}
		})
	}
	if _, err := readHeadersFile(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing headers_file accepted")
	}
}

func TestTracingCheckConfig(t *testing.T) {
	dir := t.TempDir()
	cfg, err := Parse(filepath.Join(dir, "sts.yaml"), []byte(goodConfig+"tracing: {otlp_endpoint: https://collector/v1/traces, ca_file: ca.pem, headers_file: otlp-headers}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "tracing.ca_file") {
		t.Fatalf("missing ca_file: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Check(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "tracing.ca_file: no certificate found") {
		t.Fatalf("bad ca_file: %v", err)
	}
	rcv := testotlp.NewTLS(t)
	rcv.WriteCA(t, dir)
	cfg.Tracing.CAFile = "otlp-ca.pem"
	if err := Check(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "tracing.headers_file") {
		t.Fatalf("missing headers_file: %v", err)
	}
}
