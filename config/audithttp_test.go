package config

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/auditschema"
	"github.com/safeconduct/safeconduct/internal/testissuer"
	"github.com/safeconduct/safeconduct/internal/testproc"
	"github.com/safeconduct/safeconduct/issuer"
)

func TestAuditHTTPConfigRejects(t *testing.T) {
	base := goodConfig + "audit:\n  http: {url: https://siem.example/ingest}\n"
	if _, err := Parse("sts.yaml", []byte(base)); err != nil {
		t.Fatalf("good audit.http: %v", err)
	}
	cases := map[string]struct{ to, want string }{
		"no url":        {"  http: {batch_events: 10}\n", "audit.http.url: is required"},
		"not a url":     {"  http: {url: siem.example}\n", "audit.http.url: must be an http(s) URL"},
		"ftp":           {"  http: {url: ftp://siem.example/x}\n", "audit.http.url: must be an http(s) URL"},
		"credentials":   {"  http: {url: \"https://user:pw@siem.example/\"}\n", "must not carry credentials"},
		"plain http":    {"  http: {url: http://siem.example/}\n", "set audit.http.insecure: true"},
		"insecure+tls":  {"  http: {url: https://siem.example/, insecure: true}\n", "audit.http.insecure: applies only"},
		"ca on http":    {"  http: {url: http://siem.example/, insecure: true, ca_file: ca.pem}\n", "audit.http.ca_file: applies only"},
		"batch":         {"  http: {url: https://siem.example/, batch_events: 5000}\n", "audit.http.batch_events: must be 1..1000"},
		"buffer":        {"  http: {url: https://siem.example/, batch_events: 100, buffer_events: 10}\n", "audit.http.buffer_events: must be"},
		"max_delay":     {"  http: {url: https://siem.example/, max_delay: 10ms}\n", "audit.http.max_delay: must be 100ms..1m"},
		"timeout":       {"  http: {url: https://siem.example/, timeout: 1m}\n", "audit.http.timeout: must be 100ms..30s"},
		"path and http": {"  path: audit.log\n  http: {url: https://siem.example/}\n", "audit.path and audit.http are exclusive"},
		"unknown key":   {"  http: {url: https://siem.example/, batch: 1}\n", "unknown key"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse("sts.yaml", []byte(goodConfig+"audit:\n"+tc.to))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// siem is a real HTTP server on 127.0.0.1 that takes CloudEvents batches; it
// can fail (500), hang until the client gives up (slow), or accept.
type siem struct {
	*httptest.Server
	mu   sync.Mutex
	mode string // ok, fail, slow
	// release ends the slow handlers at cleanup.
	release chan struct{}
	events  []cloudEventIn
	posts   []http.Header
}

type cloudEventIn struct {
	SpecVersion, ID, Source, Type, Time, DataContentType, DataSchema string
	Data                                                             json.RawMessage
}

func startSIEM(t *testing.T) *siem {
	s := &siem{mode: "ok", release: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		mode := s.mode
		s.mu.Unlock()
		switch mode {
		case "fail":
			http.Error(w, "down", http.StatusInternalServerError)
			return
		case "slow":
			// Read the body (the server then notices the client going away) and
			// hang until the sink's timeout ends the request.
			_, _ = io.Copy(io.Discard, r.Body)
			select {
			case <-r.Context().Done():
			case <-s.release:
			}
			return
		}
		if r.Header.Get("Content-Type") != "application/cloudevents-batch+json" {
			http.Error(w, "content type", http.StatusUnsupportedMediaType)
			return
		}
		var batch []map[string]json.RawMessage
		if err := json.NewDecoder(r.Body).Decode(&batch); err != nil {
			http.Error(w, "json", http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, m := range batch {
			var ev cloudEventIn
			for k, dst := range map[string]*string{"specversion": &ev.SpecVersion, "id": &ev.ID, "source": &ev.Source, "type": &ev.Type,
				"time": &ev.Time, "datacontenttype": &ev.DataContentType, "dataschema": &ev.DataSchema} {
				_ = json.Unmarshal(m[k], dst)
			}
			ev.Data = m["data"]
			s.events = append(s.events, ev)
		}
		s.posts = append(s.posts, r.Header.Clone())
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(s.Close)
	t.Cleanup(func() { close(s.release) })
	return s
}

func (s *siem) set(mode string) { s.mu.Lock(); s.mode = mode; s.mu.Unlock() }

func (s *siem) received() ([]cloudEventIn, []http.Header) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]cloudEventIn(nil), s.events...), append([]http.Header(nil), s.posts...)
}

// auditHTTPServer builds a server from a real configuration whose audit events
// go to the siem.
func auditHTTPServer(t *testing.T, sink *siem, onFailure string) (*issuer.Server, *testissuer.Issuer, *testproc.Buffer) {
	t.Helper()
	dir, a := writeAuditConfig(t, fmt.Sprintf(`audit:
  on_failure: %s
  http:
    url: %s/ingest
    insecure: true
    headers_file: siem-headers
    source: urn:sts:test
    batch_events: 3
    buffer_events: 50
    max_delay: 300ms
    timeout: 200ms
`, onFailure, sink.URL), map[string]string{"siem-headers": "Authorization: Bearer siem-secret\n"})
	srv, appLog := buildAuditServer(t, dir)
	return srv, a, appLog
}

func exchangeOn(t *testing.T, srv *issuer.Server, subject string) (int, string) {
	t.Helper()
	body := url.Values{
		"grant_type":         {issuer.GrantTypeTokenExchange},
		"subject_token":      {subject},
		"subject_token_type": {issuer.TypeJWT},
		"audience":           {"https://ledger.internal"},
		"scope":              {"ledger.read"},
	}.Encode()
	r := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := httptest.NewRecorder()
	srv.Handler().ServeHTTP(w, r)
	return w.Code, w.Body.String()
}

func metricsOf(srv *issuer.Server) string {
	w := httptest.NewRecorder()
	srv.MetricsHandler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	b, _ := io.ReadAll(w.Body)
	return string(b)
}

// within polls cond for up to 20 s (no timing is asserted: a slow machine
// only waits longer).
func within(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s", what)
		}
	}
}

// TestAuditHTTPSinkDelivers: the events arrive as CloudEvents batches with the
// headers of headers_file; each event's data matches the published schema and
// its id is the event's event_id; nothing holds a token.
func TestAuditHTTPSinkDelivers(t *testing.T) {
	sink := startSIEM(t)
	srv, a, _ := auditHTTPServer(t, sink, AuditFailClosed)
	subject := a.Token(t, "system:serviceaccount:payments:api")
	for range 4 {
		if code, body := exchangeOn(t, srv, subject); code != 200 {
			t.Fatalf("exchange: %d %s", code, body)
		}
	}
	refused := a.Token(t, "system:serviceaccount:billing:api")
	if code, _ := exchangeOn(t, srv, refused); code != 400 {
		t.Fatalf("refusal: %d", code)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	events, posts := sink.received()
	if len(events) != 5 {
		t.Fatalf("%d events delivered, want 5", len(events))
	}
	if len(posts) < 2 {
		t.Fatalf("%d POSTs for 5 events in batches of 3", len(posts))
	}
	for _, h := range posts {
		if h.Get("Authorization") != "Bearer siem-secret" {
			t.Fatalf("POST without the headers_file header: %v", h)
		}
	}
	for _, ev := range events {
		if err := auditschema.Validate(ev.Data); err != nil {
			t.Errorf("delivered event does not match the schema: %v\n%s", err, ev.Data)
		}
		var data struct {
			EventID string `json:"event_id"`
			Event   string `json:"event"`
			Time    string `json:"time"`
		}
		_ = json.Unmarshal(ev.Data, &data)
		if ev.SpecVersion != "1.0" || ev.ID != data.EventID || ev.Source != "urn:sts:test" || ev.Type != "dev.safeconduct.audit."+data.Event ||
			ev.Time != data.Time || ev.DataContentType != "application/json" || ev.DataSchema != AuditSchemaID {
			t.Errorf("CloudEvent attributes %+v for data %s", ev, ev.Data)
		}
		if strings.Contains(string(ev.Data), subject) || strings.Contains(string(ev.Data), "eyJ") {
			t.Fatalf("a token was delivered: %s", ev.Data)
		}
	}
}

// TestAuditHTTPSinkFailsSlowRecovers: under fail_closed, an endpoint that fails
// (500) and then one that hangs until the POST times out make the STS answer
// 503 once events wait longer than max_delay; when the endpoint takes events
// again the STS issues again, an audit_recovered event says how many were lost,
// and every token answered 200 has its event delivered.
func TestAuditHTTPSinkFailsSlowRecovers(t *testing.T) {
	sink := startSIEM(t)
	srv, a, appLog := auditHTTPServer(t, sink, AuditFailClosed)
	subject := a.Token(t, "system:serviceaccount:payments:api")
	var issued []string // jti of every token answered 200
	exchange := func() int {
		code, body := exchangeOn(t, srv, subject)
		if code == 200 {
			var resp struct {
				AccessToken string `json:"access_token"`
			}
			_ = json.Unmarshal([]byte(body), &resp)
			parts := strings.Split(resp.AccessToken, ".")
			var claims struct {
				JTI string `json:"jti"`
			}
			if raw, err := decodeSegment(parts[1]); err == nil {
				_ = json.Unmarshal(raw, &claims)
			}
			issued = append(issued, claims.JTI)
		}
		return code
	}
	if code := exchange(); code != 200 {
		t.Fatalf("healthy exchange: %d", code)
	}
	for _, mode := range []string{"fail", "slow"} {
		t.Run(mode, func(t *testing.T) {
			sink.set(mode)
			within(t, "503 while the endpoint is "+mode, func() bool { return exchange() == http.StatusServiceUnavailable })
			m := metricsOf(srv)
			if !strings.Contains(m, "safeconduct_audit_healthy 0") || strings.Contains(m, `safeconduct_audit_http_posts_total{result="error"} 0`) {
				t.Fatalf("metrics while failing:\n%s", grepMetrics(m, "safeconduct_audit"))
			}
			sink.set("ok")
			within(t, "200 after the endpoint recovered", func() bool { return exchange() == 200 })
		})
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	events, _ := sink.received()
	delivered, recovered := map[string]bool{}, 0
	for _, ev := range events {
		var data map[string]any
		if err := json.Unmarshal(ev.Data, &data); err != nil {
			t.Fatal(err)
		}
		if err := auditschema.Validate(ev.Data); err != nil {
			t.Errorf("delivered event does not match the schema: %v\n%s", err, ev.Data)
		}
		if jti, ok := data["jti"].(string); ok {
			delivered[jti] = true
		}
		if data["event"] == "audit_recovered" {
			recovered++
			if lost, _ := data["lost"].(float64); lost < 1 {
				t.Errorf("audit_recovered reports %v lost", data["lost"])
			}
		}
	}
	for _, jti := range issued {
		if !delivered[jti] {
			t.Errorf("token %s was answered 200 but its event was not delivered", jti)
		}
	}
	if recovered != 2 {
		t.Errorf("%d audit_recovered events, want 2 (one per failure)", recovered)
	}
	if !strings.Contains(appLog.String(), "audit events cannot be delivered to audit.http.url") || strings.Contains(appLog.String(), "siem-secret") {
		t.Errorf("application log:\n%s", appLog)
	}
}

// TestAuditHTTPSinkContinue: under continue, tokens are issued while the
// endpoint fails; the events that could not be buffered are counted lost.
func TestAuditHTTPSinkContinue(t *testing.T) {
	sink := startSIEM(t)
	srv, a, _ := auditHTTPServer(t, sink, AuditContinue)
	defer srv.Close()
	subject := a.Token(t, "system:serviceaccount:payments:api")
	sink.set("fail")
	within(t, "a write failure counted", func() bool {
		if code, body := exchangeOn(t, srv, subject); code != 200 {
			t.Fatalf("continue: exchange %d %s", code, body)
		}
		m := metricsOf(srv)
		return strings.Contains(m, "safeconduct_audit_healthy 0") &&
			!strings.Contains(m, `safeconduct_audit_write_failures_total{reason="write_error"} 0`)
	})
	sink.set("ok") // the buffered events are delivered at Close
}

func grepMetrics(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func decodeSegment(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
