package issuer

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// tracedServer is a server of the given tracer provider (nil: tracing off) with
// only what the tracing code touches.
func tracedServer(t *testing.T, tp *sdktrace.TracerProvider) *Server {
	t.Helper()
	ring, err := loadKeyRing(t.TempDir(), jose.ES256, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	s, err := newServer(Config{Issuer: "https://sts.example", Keys: &SigningKeys{ring: ring}, DefaultTTL: time.Minute, MaxTTL: time.Minute,
		TracerProvider: tp, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.ShutdownTracing(context.Background()) })
	return s
}

func TestTracingOffCostsNothing(t *testing.T) {
	s := tracedServer(t, nil)
	if mux, ok := s.Handler().(*http.ServeMux); !ok || mux != s.mux {
		t.Fatalf("handler is %T, want the bare mux", s.Handler())
	}
	if err := s.ShutdownTracing(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, ev := context.Background(), &exchangeEvent{outcome: "issued", jti: "j"}
	allocs := testing.AllocsPerRun(100, func() {
		st := s.traceStep(ctx, spanAttestSubject)
		st.attested(nil, nil)
		st = s.traceStep(ctx, spanPolicy)
		st.decided("rule", 0)
		st = s.traceStep(ctx, spanAdmit)
		st.admitted(nil)
		st = s.traceStep(ctx, spanMint)
		st.minted("jti", nil)
		s.traceExchange(ctx, ev)
	})
	if allocs != 0 {
		t.Fatalf("tracing off allocates %v per exchange", allocs)
	}
}

func TestTracingUnsampledStepsSkipped(t *testing.T) {
	s := tracedServer(t, sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample())))
	if s.Handler() == http.Handler(s.mux) {
		t.Fatal("tracing on but the handler is the bare mux")
	}
	ctx, span := s.tracing.tracer.Start(context.Background(), "unsampled")
	defer span.End()
	if span.IsRecording() {
		t.Fatal("a never-sampling provider sampled a root span")
	}
	if st := s.traceStep(ctx, spanMint); st.span != nil {
		t.Fatal("a step span under an unsampled request")
	}
}
