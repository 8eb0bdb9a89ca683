package issuer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/policy"
	"github.com/safeconduct/safeconduct/revocation"
)

// tracing is a running trace pipeline: SDK provider, batch exporter, W3C
// propagation. A Server without tracing has a nil *tracing.
type tracing struct {
	provider   *sdktrace.TracerProvider
	tracer     trace.Tracer
	propagator propagation.TraceContext
}

// tracerName is the instrumentation scope of every span.
const tracerName = "github.com/safeconduct/safeconduct/issuer"

// tracingCloseTimeout bounds the final flush when Close shuts tracing down.
const tracingCloseTimeout = 5 * time.Second

// startTracing wraps the handler in the server span when tracing is on; Close
// flushes.
func (s *Server) startTracing() {
	t := s.tracing
	if t == nil {
		return
	}
	s.handler = t.middleware(s.mux)
	s.closers = append(s.closers, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), tracingCloseTimeout)
		defer cancel()
		return t.provider.Shutdown(ctx)
	})
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

// step starts a step span under the request span in ctx.
func (t *tracing) step(ctx context.Context, name string) tracedStep {
	if t == nil || !trace.SpanFromContext(ctx).IsRecording() {
		return tracedStep{}
	}
	_, span := t.tracer.Start(ctx, name)
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

// exchange puts the exchange's result on the request's server span: outcome,
// error code, upstream, rule, jti and the subject token's SHA-256 (as the audit
// event has them).
func (t *tracing) exchange(ctx context.Context, ev *exchangeEvent) {
	if t == nil {
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
