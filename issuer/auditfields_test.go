package issuer

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/internal/testproc"
	"github.com/safeconduct/safeconduct/policy"
)

// TestAuditEncodersAgree: an exchange event encoded by hand for the audit writer
// (sts serve) is the JSON object slog writes for an AuditLogger, field for field
// (but for its own time and event id), and matches the published schema.
func TestAuditEncodersAgree(t *testing.T) {
	wl := &attest.Workload{Upstream: "cluster-a", Issuer: "https://issuer.example", ID: "system:serviceaccount:payments:api"}
	odd := &attest.Workload{Upstream: "up\"stream", ID: "spiffe://corp/ns/\\back\x01\u2028<&>\xff", Issuer: ""}
	issued := exchangeEvent{
		outcome: "issued", rule: "payments-to-ledger", reason: "allowed by rule payments-to-ledger", workload: wl,
		audiences: []string{"https://ledger.internal", "urn:x"}, requestedAud: []string{"https://ledger.internal"},
		requestedResource: []string{"urn:x"}, requestedScopes: []string{"ledger.read", "ledger.write"},
		scopes: []string{"ledger.read"}, jti: "jti-1", expiry: time.Unix(1_800_000_000, 0),
		subjectTokenSHA: strings.Repeat("ab", 32), clientAddr: netip.MustParseAddr("192.0.2.7"),
		audited: []policy.AuditHit{{Rule: "r1", Would: "allow"}, {Rule: "r\"2", Would: "deny_rule"}},
	}
	delegated := issued
	delegated.actor = &attest.Workload{Upstream: "corp", ID: "spiffe://corp/ns/a/sa/b", Issuer: "spiffe://corp"}
	delegated.client, delegated.clientAuth = &attest.Workload{ID: "spiffe://corp/client"}, "tls_client_auth"
	delegated.clientAddr = netip.MustParseAddr("2001:db8::1")
	refused := exchangeEvent{
		outcome: "refused", code: codeInvalidRequest, reason: "subject_token: token expired", workload: odd,
		condition: &attest.ConditionError{Upstream: "cluster-a", Check: "condition"}, blockEntry: "sub=x",
	}
	unavailable := exchangeEvent{outcome: "refused", code: codeTemporarilyUnavailable, reason: "revocation store: down"}

	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5}, TraceFlags: trace.FlagsSampled})
	ctxs := map[string]context.Context{
		"no request": context.Background(),
		"request": context.WithValue(context.Background(), requestInfoKey{},
			&requestInfo{id: "req-1", userAgent: "curl/8 \"x\" \u00e9"}),
		"traced": trace.ContextWithSpanContext(context.WithValue(context.Background(), requestInfoKey{},
			&requestInfo{id: "req-2"}), sc),
	}
	for ctxName, ctx := range ctxs {
		for evName, ev := range map[string]exchangeEvent{"issued": issued, "delegated": delegated, "refused": refused, "unavailable": unavailable} {
			for _, durable := range []bool{false, true} {
				slowLine, fastLine := encodeBoth(t, ctx, &ev, durable)
				if ctxName != "no request" { // an exchange event always has its request's id
					checkAuditSchema(t, fastLine)
				}
				slow, fast := decodeEvent(t, slowLine), decodeEvent(t, fastLine)
				for _, m := range []map[string]any{slow, fast} {
					if _, err := time.Parse(time.RFC3339Nano, m["time"].(string)); err != nil {
						t.Errorf("%s/%s: time: %v", ctxName, evName, err)
					}
					if !uuidRE.MatchString(m["event_id"].(string)) {
						t.Errorf("%s/%s: event_id %v", ctxName, evName, m["event_id"])
					}
					delete(m, "time")
					delete(m, "event_id")
				}
				if !reflect.DeepEqual(slow, fast) {
					t.Errorf("%s/%s (durable %v):\nslog %s\nhand %s", ctxName, evName, durable, slowLine, fastLine)
				}
			}
		}
	}
}

// encodeBoth encodes ev through an AuditLogger (slog) and through the audit
// writer, as sts serve does, and returns both lines.
func encodeBoth(t *testing.T, ctx context.Context, ev *exchangeEvent, durable bool) (string, string) {
	t.Helper()
	var slow bytes.Buffer
	slowCore := &core{auditLog: slog.New(eventHandler{next: slog.New(slog.NewJSONHandler(&slow, nil)).With(slog.String("log", "audit")).Handler()})}
	if err := slowCore.auditEvent(ctx, ev.level(), "exchange", ev.fields, durable); err != nil {
		t.Fatal(err)
	}
	var fast testproc.Buffer
	w := newAuditWriter(&fast, true, newMetrics(), slog.New(slog.NewJSONHandler(io.Discard, nil)), time.Now)
	fastCore := &core{audit: w, auditLog: slog.New(eventHandler{next: newAuditHandler(w, nil)}).With(slog.String("log", "audit"))}
	if err := fastCore.auditEvent(ctx, ev.level(), "exchange", ev.fields, durable); err != nil {
		t.Fatal(err)
	}
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
	return slow.String(), fast.String()
}

func decodeEvent(t *testing.T, line string) map[string]any {
	t.Helper()
	if strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "\n") {
		t.Fatalf("not one line: %q", line)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("not JSON: %v: %q", err, line)
	}
	return m
}
