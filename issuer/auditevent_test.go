package issuer

import (
	"encoding/hex"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/safeconduct/safeconduct/internal/auditschema"
	"github.com/safeconduct/safeconduct/internal/testotlp"
)

// checkAuditSchema fails t for every audit line of text that does not match
// docs/audit-event.schema.json.
func checkAuditSchema(t testing.TB, text string) {
	t.Helper()
	_, errs := auditschema.ValidateLines(text)
	for _, err := range errs {
		t.Errorf("audit event does not match %s: %v", auditschema.SchemaPath, err)
	}
}

// auditEvents are the audit events of ts so far, decoded.
func auditEvents(t *testing.T, ts *testSTS) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(ts.audit.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("audit line is not JSON: %q", line)
		}
		out = append(out, m)
	}
	return out
}

// lastEvent is the last audit event of kind event.
func lastEvent(t *testing.T, ts *testSTS, event string) map[string]any {
	t.Helper()
	evs := auditEvents(t, ts)
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i]["event"] == event {
			return evs[i]
		}
	}
	t.Fatalf("no %s event in:\n%s", event, ts.audit.String())
	return nil
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// TestAuditEnvelopeRequestID: a valid X-Request-Id is honoured, echoed and
// recorded; an invalid one (too long, a space, a quote, non-ASCII) is replaced
// by a generated UUID; every event has its own event id and the schema version.
func TestAuditEnvelopeRequestID(t *testing.T) {
	ts := startSTS(t, stsOptions{})
	tok := ts.a.Token(t, payments)
	cases := []struct {
		name, sent string
		honoured   bool
	}{
		{"valid", "req-7f3a:abc/def+g=h@i.j_k", true},
		{"max length", strings.Repeat("a", 128), true},
		{"too long", strings.Repeat("a", 129), false},
		{"space", "two words", false},
		{"quote", `a"b`, false},
		{"tab", "a\tb", false},
		{"non-ASCII", "ré", false},
		{"absent", "", false},
	}
	ids := map[string]bool{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := ts.do(t, http.MethodPost, "/token", "application/x-www-form-urlencoded", ts.form(tok).Encode(), func(r *http.Request) {
				if c.sent != "" {
					r.Header[HeaderRequestID] = []string{c.sent}
				}
				r.Header.Set("User-Agent", "ua-"+c.name)
			})
			got := r.header.Get(HeaderRequestID)
			switch {
			case c.honoured && got != c.sent:
				t.Fatalf("X-Request-Id %q echoed as %q", c.sent, got)
			case !c.honoured && !uuidRE.MatchString(got):
				t.Fatalf("X-Request-Id %q: generated %q, want a UUID", c.sent, got)
			}
			ev := lastEvent(t, ts, "exchange")
			if ev["request_id"] != got || ev["user_agent"] != "ua-"+c.name {
				t.Fatalf("event request_id %v user_agent %v, want %q and %q", ev["request_id"], ev["user_agent"], got, "ua-"+c.name)
			}
			if ev["schema_version"] != float64(AuditSchemaVersion) {
				t.Fatalf("schema_version %v", ev["schema_version"])
			}
			id, _ := ev["event_id"].(string)
			if !uuidRE.MatchString(id) || ids[id] {
				t.Fatalf("event_id %q not a fresh UUID", id)
			}
			ids[id] = true
		})
	}
	// Every response carries one, not only /token's.
	if r := ts.do(t, http.MethodGet, "/healthz", "", "", nil); !uuidRE.MatchString(r.header.Get(HeaderRequestID)) {
		t.Fatalf("/healthz: X-Request-Id %q", r.header.Get(HeaderRequestID))
	}
}

// TestAuditEnvelopeFields: the upstream's iss, the requested targets and
// scopes are fields of their own, of a refused exchange too; the user agent
// is bounded.
func TestAuditEnvelopeFields(t *testing.T) {
	ts := startSTS(t, stsOptions{})
	form := ts.form(ts.a.Token(t, payments))
	form.Set("scope", "ledger.read admin.everything")
	form.Add("resource", "https://ledger.internal/v1")
	long := strings.Repeat("é", 300) // 600 bytes
	r := ts.do(t, http.MethodPost, "/token", "application/x-www-form-urlencoded", form.Encode(), func(r *http.Request) {
		r.Header.Set("User-Agent", long)
	})
	if r.status == 200 {
		t.Fatalf("an unknown scope was granted: %s", r.raw)
	}
	ev := lastEvent(t, ts, "exchange")
	want := map[string]any{
		"outcome":            "refused",
		"upstream":           "cluster-a",
		"upstream_iss":       "https://issuer.example",
		"requested_audience": []any{ledger},
		"requested_resource": []any{"https://ledger.internal/v1"},
		"requested_scope":    []any{"ledger.read", "admin.everything"},
	}
	for k, v := range want {
		if got, _ := json.Marshal(ev[k]); string(got) != string(mustJSON(v)) {
			t.Errorf("%s = %s, want %s", k, got, mustJSON(v))
		}
	}
	ua, _ := ev["user_agent"].(string)
	if len(ua) > maxUserAgentLen || !strings.HasPrefix(long, ua) || len(ua) < maxUserAgentLen-1 {
		t.Errorf("user_agent of %d bytes, want the first %d bytes cut at a character", len(ua), maxUserAgentLen)
	}
}

// TestAuditEnvelopeTrace: with tracing on, the event carries the trace and
// span id of the request's server span, continuing the caller's trace.
func TestAuditEnvelopeTrace(t *testing.T) {
	rcv := testotlp.NewHTTP(t)
	ts := startTracedSTS(t, rcv, "", "  sample_ratio: 1\n  insecure: true\n")
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	r := ts.do(t, http.MethodPost, "/token", "application/x-www-form-urlencoded", ts.form(ts.a.Token(t, payments)).Encode(), func(r *http.Request) {
		r.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	})
	if r.status != 200 {
		t.Fatalf("exchange: %d %s", r.status, r.raw)
	}
	ev := lastEvent(t, ts, "exchange")
	span, _ := ev["span_id"].(string)
	if ev["trace_id"] != traceID || len(span) != 16 || span == "00f067aa0ba902b7" {
		t.Fatalf("trace_id %v span_id %v: want the caller's trace and the server span", ev["trace_id"], ev["span_id"])
	}
	flushTraces(t, ts)
	found := false
	for _, s := range rcv.Spans() {
		if hex.EncodeToString(s.SpanId) == span {
			found = true
		}
	}
	if !found {
		t.Fatalf("span %s of the audit event was not exported", span)
	}
}

// FuzzRequestID: an accepted X-Request-Id is bounded and of safe characters
// only; the user agent recorded is valid UTF-8, bounded, and a prefix of what
// was sent when that was valid UTF-8.
func FuzzRequestID(f *testing.F) {
	for _, s := range []string{"abc", "req-1:2/3+4=5@6.7_8", "", " ", "a\"b", "\x00", "é", strings.Repeat("x", 200)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if validRequestID(s) {
			if len(s) == 0 || len(s) > maxRequestIDLen {
				t.Fatalf("accepted %d bytes", len(s))
			}
			if !regexp.MustCompile(`^[A-Za-z0-9._:/+=@-]+$`).MatchString(s) {
				t.Fatalf("accepted %q", s)
			}
		}
		ua := boundedUserAgent(s)
		if len(ua) > maxUserAgentLen || !utf8.ValidString(ua) {
			t.Fatalf("user agent %q (%d bytes)", ua, len(ua))
		}
		if utf8.ValidString(s) && !strings.HasPrefix(s, ua) {
			t.Fatalf("user agent %q is not a prefix of %q", ua, s)
		}
	})
}
