package config

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
)

// AuditHTTPConfig sends audit events to an HTTP endpoint (a SIEM's collector)
// as batches of CloudEvents (JSON batch format), instead of a file or stderr.
type AuditHTTPConfig struct {
	// URL receives POSTs of application/cloudevents-batch+json. https, or http
	// with insecure: true.
	URL string `yaml:"url"`
	// CAFile verifies an https endpoint (default: system roots).
	CAFile string `yaml:"ca_file"`
	// Insecure must be set to post to an http:// URL (unencrypted).
	Insecure bool `yaml:"insecure"`
	// HeadersFile holds headers sent with every POST, one "Name: value" per
	// line (an Authorization header, an API key), read at start.
	HeadersFile string `yaml:"headers_file"`
	// Source is the CloudEvents source attribute (default: the issuer URL).
	Source string `yaml:"source"`
	// BatchEvents is the most events one POST carries (default 100, 1..1000).
	BatchEvents int `yaml:"batch_events"`
	// BufferEvents bounds the events waiting for delivery (default 10000,
	// up to 1000000; a few hundred bytes each).
	BufferEvents int `yaml:"buffer_events"`
	// MaxDelay is how long an event may wait undelivered before the sink counts
	// as failed (audit.on_failure applies): default 5s, 100ms..1m.
	MaxDelay Duration `yaml:"max_delay"`
	// Timeout bounds one POST (default 5s, 100ms..30s).
	Timeout Duration `yaml:"timeout"`
}

// Defaults and bounds of audit.http.
const (
	auditHTTPBatch        = 100
	auditHTTPMaxBatch     = 1000
	auditHTTPBuffer       = 10000
	auditHTTPMaxBuffer    = 1000000
	auditHTTPMaxDelay     = 5 * time.Second
	auditHTTPTimeout      = 5 * time.Second
	auditHTTPBackoffStart = 100 * time.Millisecond
	auditHTTPBackoffMax   = 10 * time.Second
	// auditHTTPCloseBound is how long Close keeps delivering what is buffered.
	auditHTTPCloseBound = 5 * time.Second
	// auditHTTPMaxResponse bounds the response body read (and discarded).
	auditHTTPMaxResponse = 64 << 10
)

// AuditSchemaID is the $id of docs/audit-event.schema.json, the CloudEvents
// dataschema of the events the HTTP sink posts.
const AuditSchemaID = "https://github.com/safeconduct/safeconduct/docs/audit-event.schema.json"

func (c *AuditHTTPConfig) validate(v *validator) {
	at := func(msg string, path ...any) { v.at(msg, append([]any{"audit", "http"}, path...)...) }
	u, err := url.Parse(c.URL)
	switch {
	case c.URL == "":
		at("audit.http.url is required", "url")
	case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
		at("audit.http.url must be an http(s) URL with a host", "url")
	case u.User != nil:
		at("audit.http.url must not carry credentials (put them in audit.http.headers_file)", "url")
	case u.Scheme == "http" && !c.Insecure:
		at("audit.http.url is http://: set audit.http.insecure: true to send audit events unencrypted", "url")
	case u.Scheme == "http" && c.CAFile != "":
		at("audit.http.ca_file applies only to an https url", "ca_file")
	case u.Scheme == "https" && c.Insecure:
		at("audit.http.insecure applies only to an http:// url", "insecure")
	}
	if c.BatchEvents == 0 {
		c.BatchEvents = auditHTTPBatch
	} else if c.BatchEvents < 1 || c.BatchEvents > auditHTTPMaxBatch {
		at(fmt.Sprintf("audit.http.batch_events must be 1..%d", auditHTTPMaxBatch), "batch_events")
	}
	if c.BufferEvents == 0 {
		c.BufferEvents = auditHTTPBuffer
	} else if c.BufferEvents < c.BatchEvents || c.BufferEvents > auditHTTPMaxBuffer {
		at(fmt.Sprintf("audit.http.buffer_events must be batch_events..%d", auditHTTPMaxBuffer), "buffer_events")
	}
	if c.MaxDelay == 0 {
		c.MaxDelay = Duration(auditHTTPMaxDelay)
	} else if d := c.MaxDelay.D(); d < 100*time.Millisecond || d > time.Minute {
		at("audit.http.max_delay must be 100ms..1m", "max_delay")
	}
	if c.Timeout == 0 {
		c.Timeout = Duration(auditHTTPTimeout)
	} else if d := c.Timeout.D(); d < 100*time.Millisecond || d > 30*time.Second {
		at("audit.http.timeout must be 100ms..30s", "timeout")
	}
}

// check reads the files the sink needs, for `sts check-config`.
func (c *AuditHTTPConfig) check(cfg *Config) error {
	_, _, err := c.transport(cfg)
	return err
}

// transport builds the HTTP client's TLS settings and the headers.
func (c *AuditHTTPConfig) transport(cfg *Config) (*http.Transport, http.Header, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(cfg.Path(c.CAFile))
		if err != nil {
			return nil, nil, fmt.Errorf("audit.http.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, errors.New("audit.http.ca_file: no certificate found")
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	h := http.Header{}
	if c.HeadersFile != "" {
		m, err := readHeaders(cfg.Path(c.HeadersFile), "audit.http.headers_file")
		if err != nil {
			return nil, nil, err
		}
		for k, v := range m {
			h.Set(k, v)
		}
	}
	return tr, h, nil
}

var (
	errAuditHTTPFull    = errors.New("audit.http: the buffer is full (the endpoint does not take events)")
	errAuditHTTPBehind  = errors.New("audit.http: events are not delivered within max_delay (the endpoint fails or is slow)")
	errAuditHTTPClosed  = errors.New("audit.http: closed")
	errAuditHTTPPartial = errors.New("audit.http: a write must end with a newline")
)

// AuditHTTPSink is the audit events' HTTP sink: an io.Writer of JSON lines
// (the issuer's audit writer hands it whole events) that buffers them (at most
// BufferEvents) and delivers them from one goroutine in batches of CloudEvents,
// retrying a failed POST with exponential backoff (100ms doubling to 10s,
// jittered) until it succeeds. Write fails, so that the issuer's audit path
// counts as failed and audit.on_failure applies, while the buffer is full or
// the oldest undelivered event has waited longer than MaxDelay; once the
// endpoint has taken what waited, writes succeed again.
type AuditHTTPSink struct {
	url, source   string
	client        *http.Client
	header        http.Header
	batch, buffer int
	maxDelay      time.Duration
	log           *slog.Logger
	now           func() time.Time

	// ctx ends in-flight POSTs once Close has waited long enough.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	pending []pendingEvent
	closed  bool
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	// failing is the sender's state, to log each transition once.
	failing bool

	posts     *prometheus.CounterVec
	delivered prometheus.Counter
}

type pendingEvent struct {
	line []byte
	at   time.Time
}

// NewAuditHTTPSink starts the sink of c (validated) with the issuer URL as the
// default CloudEvents source.
func NewAuditHTTPSink(c AuditHTTPConfig, cfg *Config, issuerURL string, log *slog.Logger) (*AuditHTTPSink, error) {
	tr, h, err := c.transport(cfg)
	if err != nil {
		return nil, err
	}
	src := c.Source
	if src == "" {
		src = issuerURL
	}
	s := &AuditHTTPSink{
		url: c.URL, source: src, header: h,
		client: &http.Client{Transport: tr, Timeout: c.Timeout.D(),
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		batch: c.BatchEvents, buffer: c.BufferEvents, maxDelay: c.MaxDelay.D(), log: log, now: time.Now,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		posts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "safeconduct_audit_http_posts_total",
			Help: "POSTs of audit event batches to audit.http.url, by result (ok, error: retried).",
		}, []string{"result"}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "safeconduct_audit_http_delivered_events_total",
			Help: "Audit events the audit.http endpoint accepted.",
		}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.posts.WithLabelValues("ok")
	s.posts.WithLabelValues("error")
	go s.run()
	return s, nil
}

// Collectors are the sink's metrics, for the server's registry.
func (s *AuditHTTPSink) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.posts, s.delivered,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "safeconduct_audit_http_buffered_events",
			Help: "Audit events waiting for delivery to audit.http.url.",
		}, func() float64 { s.mu.Lock(); defer s.mu.Unlock(); return float64(len(s.pending)) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "safeconduct_audit_http_oldest_pending_seconds",
			Help: "Age of the oldest audit event waiting for delivery to audit.http.url (0 when none).",
		}, func() float64 {
			s.mu.Lock()
			defer s.mu.Unlock()
			if len(s.pending) == 0 {
				return 0
			}
			return s.now().Sub(s.pending[0].at).Seconds()
		}),
	}
}

// Write buffers the events of p (JSON lines; empty lines are skipped). It takes
// all of them or none: an error while the sink is failed (buffer full, or an
// event undelivered for longer than max_delay).
func (s *AuditHTTPSink) Write(p []byte) (int, error) {
	if len(p) > 0 && p[len(p)-1] != '\n' {
		return 0, errAuditHTTPPartial
	}
	lines := bytes.Split(p[:len(p)-min(len(p), 1)], []byte{'\n'})
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return 0, errAuditHTTPClosed
	case len(s.pending) > 0 && now.Sub(s.pending[0].at) > s.maxDelay:
		return 0, errAuditHTTPBehind
	case len(s.pending)+len(lines) > s.buffer:
		return 0, errAuditHTTPFull
	}
	for _, l := range lines {
		if len(bytes.TrimSpace(l)) == 0 {
			continue
		}
		s.pending = append(s.pending, pendingEvent{line: bytes.Clone(l), at: now})
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// run delivers the buffer, a batch at a time, until Close.
func (s *AuditHTTPSink) run() {
	defer close(s.done)
	backoff := time.Duration(0)
	for {
		s.mu.Lock()
		n := min(len(s.pending), s.batch)
		batch := s.pending[:n:n]
		s.mu.Unlock()
		if n == 0 {
			select {
			case <-s.wake:
				continue
			case <-s.stop:
				return
			}
		}
		err := s.post(batch)
		if err == nil {
			s.mu.Lock()
			s.pending = append(s.pending[:0:0], s.pending[n:]...)
			s.mu.Unlock()
			s.delivered.Add(float64(n))
			s.posts.WithLabelValues("ok").Inc()
			if s.failing {
				s.failing = false
				s.log.Info("audit events delivered to audit.http.url again")
			}
			backoff = 0
			continue
		}
		s.posts.WithLabelValues("error").Inc()
		if !s.failing {
			s.failing = true
			s.log.Error("audit events cannot be delivered to audit.http.url; retrying", slog.String("error", err.Error()))
		}
		backoff = min(max(2*backoff, auditHTTPBackoffStart), auditHTTPBackoffMax)
		wait := backoff/2 + rand.N(backoff/2+1)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-s.stop:
			t.Stop()
			return
		}
	}
}

// cloudEvent is one CloudEvents 1.0 event of the JSON batch format.
type cloudEvent struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Time            string          `json:"time,omitempty"`
	DataContentType string          `json:"datacontenttype"`
	DataSchema      string          `json:"dataschema"`
	Data            json.RawMessage `json:"data"`
}

// envelope wraps one audit event (a JSON object) in its CloudEvent.
func (s *AuditHTTPSink) envelope(line []byte) cloudEvent {
	var head struct {
		Time    string `json:"time"`
		Event   string `json:"event"`
		EventID string `json:"event_id"`
	}
	ce := cloudEvent{SpecVersion: "1.0", Source: s.source, DataContentType: "application/json", DataSchema: AuditSchemaID}
	if json.Unmarshal(line, &head) != nil {
		// Not an object: delivered as a JSON string rather than dropped.
		ce.Data, _ = json.Marshal(string(line))
		head.Event = "unparsed"
	} else {
		ce.Data = line
	}
	ce.ID, ce.Time, ce.Type = head.EventID, head.Time, "dev.safeconduct.audit."+head.Event
	if ce.ID == "" {
		ce.ID = uuid.NewString()
	}
	if head.Event == "" {
		ce.Type = "dev.safeconduct.audit"
	}
	return ce
}

// post delivers one batch; any answer but 2xx is a failure (retried).
func (s *AuditHTTPSink) post(batch []pendingEvent) error {
	evs := make([]cloudEvent, len(batch))
	for i, e := range batch {
		evs[i] = s.envelope(e.line)
	}
	body, err := json.Marshal(evs)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(s.ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	for k, v := range s.header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/cloudevents-batch+json")
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, auditHTTPMaxResponse))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("audit.http.url answered %s", resp.Status)
	}
	return nil
}

// Close stops taking events, keeps delivering what is buffered for at most
// auditHTTPCloseBound, and stops; what is left is reported as lost.
func (s *AuditHTTPSink) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	deadline := time.Now().Add(auditHTTPCloseBound)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		left := len(s.pending)
		s.mu.Unlock()
		if left == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.cancel()
	close(s.stop)
	<-s.done
	s.mu.Lock()
	left := len(s.pending)
	s.mu.Unlock()
	if left > 0 {
		s.log.Error("audit events not delivered to audit.http.url at shutdown", slog.Int("lost", left))
		return fmt.Errorf("audit.http: %d events not delivered at shutdown", left)
	}
	return nil
}
