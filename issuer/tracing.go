package issuer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/policy"
	"github.com/safeconduct/safeconduct/revocation"
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
	// tracingCloseTimeout bounds the final flush when Close shuts tracing down.
	tracingCloseTimeout = 5 * time.Second
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
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
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

// readHeadersFile reads "Name: value" lines. Errors name the line, never its
// content: the values are credentials.
func readHeadersFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tracing.headers_file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxHeadersFile+1))
	if err != nil {
		return nil, fmt.Errorf("tracing.headers_file: %w", err)
	}
	if len(data) > maxHeadersFile {
		return nil, errors.New("tracing.headers_file: larger than 64 KiB")
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
			return fmt.Errorf("tracing.headers_file: %s:%d: %s", path, n, why)
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
		return nil, fmt.Errorf("tracing.headers_file: %w", err)
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

// tracing is a running trace pipeline: SDK provider, batch exporter, W3C
// propagation. A Server without tracing has a nil *tracing.
type tracing struct {
	provider   *sdktrace.TracerProvider
	tracer     trace.Tracer
	propagator propagation.TraceContext
}

// tracerName is the instrumentation scope of every span.
const tracerName = "github.com/safeconduct/safeconduct/issuer"

// newTracing starts the exporter and provider for an enabled config. The exporter
// connects lazily: an unreachable collector does not stop the STS, it loses spans.
func newTracing(ctx context.Context, cfg *Config) (*tracing, error) {
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
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sampler(ratio, c.FollowCallerSampling)),
	)
	return &tracing{provider: tp, tracer: tp.Tracer(tracerName)}, nil
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

// startTracing wires tracing into s when the config enables it: the handler gains
// the server span, and Close flushes.
func (s *Server) startTracing(ctx context.Context, cfg *Config) error {
	if !cfg.Tracing.Enabled() {
		return nil
	}
	t, err := newTracing(ctx, cfg)
	if err != nil {
		return err
	}
	s.tracing = t
	s.handler = t.middleware(s.mux)
	s.closers = append(s.closers, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), tracingCloseTimeout)
		defer cancel()
		return t.provider.Shutdown(ctx)
	})
	return nil
}

// ShutdownTracing exports the spans not yet sent and stops the exporter, giving up
// when ctx ends; call it once Serve has returned. Without tracing it does nothing.
func (s *Server) ShutdownTracing(ctx context.Context) error {
	if s.tracing == nil {
		return nil
	}
	if err := s.tracing.provider.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	return nil
}

// untracedPath reports probes and scrapes: frequent, uninteresting, never traced.
func untracedPath(p string) bool { return p == "/healthz" || p == "/readyz" || p == "/metrics" }

// serverSpan are the start options of a request's span (a variable, so that
// starting a span does not allocate them).
var serverSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer)}

// middleware gives every request a server span, child of the caller's when a W3C
// traceparent came with it. The span carries the route pattern (never the raw path
// or query), the method and the status; never a client address or a credential.
func (t *tracing) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if untracedPath(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		method := spanMethod(r.Method)
		ctx := t.propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := t.tracer.Start(ctx, method, serverSpan...)
		if !span.IsRecording() {
			// Not sampled: nothing to record here or below (the steps check too).
			span.End()
			next.ServeHTTP(w, r)
			return
		}
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		span.SetAttributes(
			semconv.HTTPRequestMethodKey.String(method),
			semconv.URLScheme(scheme),
			semconv.NetworkProtocolVersion(protocolVersion(r)),
		)
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		r = r.WithContext(ctx)
		defer func() {
			p := recover()
			// The mux has set the pattern it matched on this request.
			if route := routeOf(r.Pattern); route != "" {
				span.SetName(method + " " + route)
				span.SetAttributes(semconv.HTTPRoute(route))
			}
			status := rec.status
			if p != nil {
				status = http.StatusInternalServerError
			}
			span.SetAttributes(semconv.HTTPResponseStatusCode(status))
			if status >= 500 {
				span.SetAttributes(semconv.ErrorTypeKey.String(strconv.Itoa(status)))
				span.SetStatus(codes.Error, "")
			}
			span.End()
			if p != nil {
				panic(p)
			}
		}()
		next.ServeHTTP(rec, r)
	})
}

// routeOf is the path of a ServeMux pattern ("POST /introspect" -> "/introspect");
// empty for no pattern and for the catch-all "/", which is no route.
func routeOf(pattern string) string {
	i := strings.IndexByte(pattern, '/')
	if i < 0 || pattern[i:] == "/" {
		return ""
	}
	return pattern[i:]
}

// spanMethod is the method as semantic conventions want it: a known method, else
// _OTHER (a client must not mint span names).
func spanMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodHead,
		http.MethodOptions, http.MethodPatch, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "_OTHER"
}

func protocolVersion(r *http.Request) string {
	switch {
	case r.ProtoMajor == 2:
		return "2"
	case r.ProtoMajor == 1 && r.ProtoMinor == 0:
		return "1.0"
	default:
		return "1.1"
	}
}

// Span names of the /token pipeline steps.
const (
	spanAttestSubject = "attest subject"
	spanAttestActor   = "attest actor"
	spanPolicy        = "policy"
	spanAdmit         = "revocation admit"
	spanMint          = "mint"
)

// Span attribute keys of our own. Values are names, codes, the jti and hashes:
// never a token.
const (
	attrUpstream        = attribute.Key("safeconduct.upstream")
	attrRule            = attribute.Key("safeconduct.rule")
	attrOutcome         = attribute.Key("safeconduct.outcome")
	attrError           = attribute.Key("safeconduct.error")
	attrJTI             = attribute.Key("safeconduct.jti")
	attrSubjectTokenSHA = attribute.Key("safeconduct.subject_token.sha256")
)

// tracedStep is one step of the /token pipeline as a child span of the request's.
// The zero value (tracing off, or the request not sampled) does nothing: its
// methods check for a nil span before building any attribute, so the hot path
// pays a nil check and allocates nothing.
type tracedStep struct{ span trace.Span }

// traceStep starts a step span under the request span in ctx.
func (s *Server) traceStep(ctx context.Context, name string) tracedStep {
	if s.tracing == nil || !trace.SpanFromContext(ctx).IsRecording() {
		return tracedStep{}
	}
	_, span := s.tracing.tracer.Start(ctx, name)
	return tracedStep{span}
}

// fail marks the step failed with an outcome and the OAuth error code it leads to.
func (t tracedStep) fail(outcome, code string) {
	t.span.SetAttributes(attrOutcome.String(outcome), attrError.String(code))
	t.span.SetStatus(codes.Error, code)
}

// attested ends an attest step: the upstream that vouched, or why not.
func (t tracedStep) attested(wl *attest.Workload, err error) {
	if t.span == nil {
		return
	}
	switch {
	case errors.Is(err, attest.ErrUnavailable):
		t.fail("unavailable", codeTemporarilyUnavailable)
	case err != nil || wl == nil:
		t.fail("rejected", codeInvalidRequest)
	default:
		t.span.SetAttributes(attrOutcome.String("ok"), attrUpstream.String(wl.Upstream))
	}
	t.span.End()
}

// decided ends the policy step with the deciding rule and the outcome. A refusal
// is a decision, not an error: the status stays unset.
func (t tracedStep) decided(rule string, outcome policy.Outcome) {
	if t.span == nil {
		return
	}
	t.span.SetAttributes(attrOutcome.String(outcome.String()))
	if rule != "" {
		t.span.SetAttributes(attrRule.String(rule))
	}
	t.span.End()
}

// admitted ends the revocation step.
func (t tracedStep) admitted(err error) {
	if t.span == nil {
		return
	}
	switch {
	case errors.Is(err, revocation.ErrBlocked):
		t.fail("blocked", codeInvalidRequest)
	case err != nil:
		t.fail("unavailable", codeTemporarilyUnavailable)
	default:
		t.span.SetAttributes(attrOutcome.String("admitted"))
	}
	t.span.End()
}

// minted ends the mint step with the new token's jti.
func (t tracedStep) minted(jti string, err error) {
	if t.span == nil {
		return
	}
	if err != nil {
		t.fail("error", codeTemporarilyUnavailable)
	} else {
		t.span.SetAttributes(attrOutcome.String("issued"), attrJTI.String(jti))
	}
	t.span.End()
}

// traceExchange puts the exchange's result on the request's server span: outcome,
// error code, upstream, rule, jti and the subject token's SHA-256 (as the audit
// event has them).
func (s *Server) traceExchange(ctx context.Context, ev *exchangeEvent) {
	if s.tracing == nil {
		return
	}
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(attrOutcome.String(ev.outcome))
	if ev.code != "" {
		span.SetAttributes(attrError.String(ev.code))
	}
	if ev.workload != nil {
		span.SetAttributes(attrUpstream.String(ev.workload.Upstream))
	}
	if ev.rule != "" {
		span.SetAttributes(attrRule.String(ev.rule))
	}
	if ev.jti != "" {
		span.SetAttributes(attrJTI.String(ev.jti))
	}
	if ev.subjectTokenSHA != "" {
		span.SetAttributes(attrSubjectTokenSHA.String(ev.subjectTokenSHA))
	}
}
