package config

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// TracingConfig sends OpenTelemetry traces to an OTLP/HTTP collector: a server span
// per request and, under the /token span, one span per pipeline step. Tracing is off
// (and costs a nil check per step) unless OTLPEndpoint is set.
type TracingConfig struct {
	// OTLPEndpoint is the collector's OTLP/HTTP traces URL, e.g.
	// https://collector:4318/v1/traces (a URL without a path gets /v1/traces).
	// Empty (default) = tracing off.
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// SampleRatio is the share of traces recorded, 0..1 (default 0.1), decided
	// from the trace ID. A request carrying a W3C traceparent joins its caller's
	// trace; the caller's sampled flag is followed only with FollowCallerSampling
	// (otherwise any client could have every one of its requests recorded, at
	// about 50% more CPU each). A caller that did not sample is never recorded.
	SampleRatio *float64 `yaml:"sample_ratio"`
	// FollowCallerSampling records every request whose traceparent says sampled:
	// for callers inside the trust boundary (a mesh, a gateway that sets it).
	FollowCallerSampling bool `yaml:"follow_caller_sampling"`
	// ServiceName is the service.name resource attribute (default safeconduct).
	ServiceName string `yaml:"service_name"`
	// CAFile is a PEM bundle to verify an https collector with (default: system
	// roots).
	CAFile string `yaml:"ca_file"`
	// Insecure must be set to send spans to an http:// endpoint (unencrypted).
	Insecure bool `yaml:"insecure"`
	// Timeout bounds one export request (default 10s, at most 1m).
	Timeout Duration `yaml:"timeout"`
	// HeadersFile holds HTTP headers sent with every export, one "Name: value" per
	// line (blank lines and # comments skipped): collector credentials stay out of
	// the config, and are never logged.
	HeadersFile string `yaml:"headers_file"`
}

const (
	defaultSampleRatio    = 0.1
	defaultTracingTimeout = 10 * time.Second
	defaultServiceName    = "safeconduct"
	// defaultTracesPath is the OTLP/HTTP traces path, used when the endpoint has none.
	defaultTracesPath = "/v1/traces"
	// maxHeadersFile bounds headers_file.
	maxHeadersFile = 64 << 10
)

// Enabled reports whether spans are exported.
func (c *TracingConfig) Enabled() bool { return c.OTLPEndpoint != "" }

func (c *TracingConfig) validate(v *validator) {
	if !c.Enabled() {
		if c.SampleRatio != nil || c.FollowCallerSampling || c.ServiceName != "" || c.CAFile != "" || c.Insecure || c.Timeout != 0 || c.HeadersFile != "" {
			v.at("tracing.otlp_endpoint is required when other tracing keys are set (without it tracing is off)", "tracing")
		}
		return
	}
	u, err := url.Parse(c.OTLPEndpoint)
	switch {
	case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Opaque != "":
		v.at("tracing.otlp_endpoint must be an http(s) URL such as https://collector:4318/v1/traces", "tracing", "otlp_endpoint")
	case u.User != nil:
		v.at("tracing.otlp_endpoint must not carry credentials (put them in tracing.headers_file)", "tracing", "otlp_endpoint")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		v.at("tracing.otlp_endpoint must not have a query or fragment", "tracing", "otlp_endpoint")
	case u.Scheme == "http" && !c.Insecure:
		v.at("tracing.otlp_endpoint is plain http: set tracing.insecure: true to send spans unencrypted, or use https", "tracing", "otlp_endpoint")
	case u.Scheme == "http" && c.CAFile != "":
		v.at("tracing.ca_file applies only to an https otlp_endpoint", "tracing", "ca_file")
	case u.Scheme == "https" && c.Insecure:
		v.at("tracing.insecure: true applies only to an http:// otlp_endpoint", "tracing", "insecure")
	}
	if c.SampleRatio == nil {
		r := defaultSampleRatio
		c.SampleRatio = &r
	} else if r := *c.SampleRatio; math.IsNaN(r) || r < 0 || r > 1 {
		v.at("tracing.sample_ratio must be between 0 and 1", "tracing", "sample_ratio")
	}
	if c.ServiceName == "" {
		c.ServiceName = defaultServiceName
	} else if len(c.ServiceName) > 255 || strings.IndexFunc(c.ServiceName, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
		v.at("tracing.service_name must be at most 255 characters, without control characters", "tracing", "service_name")
	}
	if c.Timeout == 0 {
		c.Timeout = Duration(defaultTracingTimeout)
	} else if c.Timeout < 0 || c.Timeout > Duration(time.Minute) {
		v.at("tracing.timeout must be positive and at most 1m", "tracing", "timeout")
	}
}

// check reads the files tracing needs (ca_file, headers_file), for `sts
// check-config`; nil when tracing is off.
func (c *TracingConfig) check(cfg *Config) error {
	if !c.Enabled() {
		return nil
	}
	_, err := c.exporterOptions(cfg)
	return err
}

// endpointURL is the export URL: OTLPEndpoint, with the OTLP traces path when it
// has none.
func (c *TracingConfig) endpointURL() string {
	u, err := url.Parse(c.OTLPEndpoint)
	if err != nil || (u.Path != "" && u.Path != "/") {
		return c.OTLPEndpoint
	}
	u.Path = defaultTracesPath
	return u.String()
}

// exporterOptions turns a validated config into exporter options, reading
// ca_file and headers_file.
func (c *TracingConfig) exporterOptions(cfg *Config) ([]otlptracehttp.Option, error) {
	opts := []otlptracehttp.Option{
		otlptracehttp.WithEndpointURL(c.endpointURL()),
		otlptracehttp.WithTimeout(c.Timeout.D()),
	}
	if c.Insecure {
		opts = append(opts, otlptracehttp.WithInsecure())
	} else {
		tc := clientTLS()
		if c.CAFile != "" {
			pem, err := os.ReadFile(cfg.Path(c.CAFile))
			if err != nil {
				return nil, fmt.Errorf("tracing.ca_file: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, errors.New("tracing.ca_file: no certificate found")
			}
		}
		opts = append(opts, otlptracehttp.WithTLSClientConfig(tc))
	}
	if c.HeadersFile != "" {
		h, err := readHeadersFile(cfg.Path(c.HeadersFile))
		if err != nil {
			return nil, err
		}
		opts = append(opts, otlptracehttp.WithHeaders(h))
	}
	return opts, nil
}

// reservedHeaders are set by the exporter; a headers_file must not override them.
var reservedHeaders = []string{"Content-Type", "Content-Length", "Content-Encoding", "Transfer-Encoding", "Host", "Connection"}

// readHeadersFile reads tracing.headers_file.
func readHeadersFile(path string) (map[string]string, error) {
	return readHeaders(path, "tracing.headers_file")
}

// readHeaders reads "Name: value" lines of the file of setting key. Errors name
// the line, never its content: the values are credentials.
func readHeaders(path, key string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxHeadersFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	if len(data) > maxHeadersFile {
		return nil, fmt.Errorf("%s: larger than 64 KiB", key)
	}
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxHeadersFile)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		bad := func(why string) error {
			return fmt.Errorf("%s: %s:%d: %s", key, path, n, why)
		}
		name, value, ok := strings.Cut(line, ":")
		switch {
		case !ok || !validHeaderName(name):
			return nil, bad(`want "Name: value" with a valid header name`)
		case strings.ContainsFunc(value, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }):
			return nil, bad("control character in the value")
		}
		name = http.CanonicalHeaderKey(name)
		for _, r := range reservedHeaders {
			if name == r {
				return nil, bad(name + " is set by the exporter")
			}
		}
		if _, dup := out[name]; dup {
			return nil, bad(name + " appears twice")
		}
		out[name] = strings.TrimSpace(value)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return out, nil
}

// validHeaderName reports whether s is an RFC 9110 field name (a token).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// newTracerProvider starts the exporter and provider for an enabled config. The
// exporter connects lazily: an unreachable collector does not stop the STS, it
// loses spans.
func newTracerProvider(ctx context.Context, cfg *Config) (*sdktrace.TracerProvider, error) {
	c := &cfg.Tracing
	opts, err := c.exporterOptions(cfg)
	if err != nil {
		return nil, err
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(c.ServiceName)))
	if err != nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	ratio := defaultSampleRatio
	if c.SampleRatio != nil {
		ratio = *c.SampleRatio
	}
	return sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sampler(ratio, c.FollowCallerSampling)),
	), nil
}

// sampler samples new traces at ratio by trace ID; a remote parent's sampled
// flag is followed only when followCaller, else the ratio decides for it too.
func sampler(ratio float64, followCaller bool) sdktrace.Sampler {
	byRatio := sdktrace.TraceIDRatioBased(ratio)
	if followCaller {
		return sdktrace.ParentBased(byRatio)
	}
	return sdktrace.ParentBased(byRatio, sdktrace.WithRemoteParentSampled(byRatio))
}
