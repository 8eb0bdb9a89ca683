package watch

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
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Admin API paths the watcher calls.
const (
	PathRevocations    = "/admin/v1/revocations"
	PathWorkloadChange = "/admin/v1/workloads/change"
)

const (
	maxCredentialBytes = 64 << 10
	maxResponseBytes   = 64 << 10
	minBackoff         = 100 * time.Millisecond
	maxReasonLen       = 256
)

// Outcomes of a report, as counted by stswatch_reports_total.
const (
	OutcomeDelivered = "delivered" // 2xx
	OutcomeRejected  = "rejected"  // 400/404/409/413/422: the STS refuses the report as malformed (a bug or a config mismatch)
	OutcomeForbidden = "forbidden" // 403: the watcher's credential may not do this
)

// credential is the bearer credential in a file, re-read when the file changes
// (a projected token is rotated by the kubelet by swapping a symlink) or when the
// STS answers 401.
type credential struct {
	path string
	mu   sync.Mutex
	sig  string // size, mtime and inode of the file last read
	tok  string
}

func (c *credential) get(force bool) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fi, err := os.Stat(c.path)
	if err != nil {
		return "", fmt.Errorf("credential file: %w", err)
	}
	sig := fmt.Sprintf("%d/%d", fi.Size(), fi.ModTime().UnixNano())
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		sig += "/" + strconv.FormatUint(st.Ino, 10)
	}
	if !force && sig == c.sig && c.tok != "" {
		return c.tok, nil
	}
	f, err := os.Open(c.path)
	if err != nil {
		return "", fmt.Errorf("credential file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCredentialBytes+1))
	if err != nil {
		return "", fmt.Errorf("credential file: %w", err)
	}
	if len(b) > maxCredentialBytes {
		return "", fmt.Errorf("credential file %s is over %d bytes", c.path, maxCredentialBytes)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" || strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("credential file %s does not hold one bearer token", c.path)
	}
	c.sig, c.tok = sig, tok
	return tok, nil
}

// Reporter delivers reports to the STS admin API from a bounded queue, retrying
// with backoff while the STS is unreachable or failing.
type Reporter struct {
	base        string
	client      *http.Client
	cred        *credential
	q           *queue
	log         *slog.Logger
	m           *Metrics
	maxBackoff  time.Duration
	concurrency int

	forbidden sync.Map // kind + "\x00" + upstream: a 403 already logged
	// up is whether the last attempt reached the STS and was accepted or refused
	// for a reason other than its availability; lastErr says why not.
	up      atomic.Bool
	lastErr atomic.Pointer[string]
}

// NewReporter builds the reporter from the sts section of the configuration.
func NewReporter(cfg *Config, log *slog.Logger, m *Metrics) (*Reporter, error) {
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.STS.CAFile != "" {
		pem, err := os.ReadFile(cfg.STS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("sts.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("sts.ca_file %s holds no PEM certificate", cfg.STS.CAFile)
		}
		tlsConf.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsConf
	tr.Proxy = nil
	tr.MaxIdleConnsPerHost = cfg.STS.Concurrency
	r := &Reporter{
		base:        strings.TrimSuffix(cfg.STS.URL, "/"),
		client:      &http.Client{Timeout: time.Duration(cfg.STS.Timeout), Transport: tr, CheckRedirect: noRedirect},
		cred:        &credential{path: cfg.STS.CredentialFile},
		log:         log,
		m:           m,
		maxBackoff:  time.Duration(cfg.STS.MaxBackoff),
		concurrency: cfg.STS.Concurrency,
	}
	r.q = newQueue(cfg.QueueSize, func() {
		m.queueFull.Inc()
		log.Warn("report queue full: sources wait until the STS takes reports again", slog.Int("queue_size", cfg.QueueSize))
	})
	m.queueCapacity.Set(float64(cfg.QueueSize))
	msg := "no report sent yet"
	r.lastErr.Store(&msg)
	r.up.Store(true)
	if _, err := r.cred.get(true); err != nil {
		// Not fatal: the file may appear (a projected volume, a SPIFFE helper);
		// every attempt reads it again and readiness says why it fails.
		log.Warn("the credential cannot be read yet", slog.String("error", err.Error()))
	}
	return r, nil
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Report queues r for delivery and returns its ticket; it waits while the queue
// is full, until ctx ends.
func (r *Reporter) Report(ctx context.Context, rep Report) (*Ticket, error) {
	if rep.Observed.IsZero() {
		rep.Observed = time.Now()
	}
	if len(rep.Reason) > maxReasonLen {
		rep.Reason = rep.Reason[:maxReasonLen]
	}
	t, err := r.q.put(ctx, rep)
	r.m.queueLength.Set(float64(r.q.len()))
	return t, err
}

// Pending is the number of reports waiting in the queue (not those in flight).
func (r *Reporter) Pending() int { return r.q.len() }

// Ready is nil while the STS takes reports, else why not.
func (r *Reporter) Ready() error {
	if r.up.Load() {
		return nil
	}
	return errors.New("sts: " + *r.lastErr.Load())
}

// Run delivers queued reports until ctx ends.
func (r *Reporter) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for range r.concurrency {
		wg.Go(func() {
			for {
				it, err := r.q.take(ctx)
				if err != nil {
					return
				}
				r.m.queueLength.Set(float64(r.q.len()))
				r.m.inFlight.Inc()
				r.deliver(ctx, it)
				r.m.inFlight.Dec()
			}
		})
	}
	wg.Wait()
}

// deliver sends one report until it is dealt with or ctx ends; the tickets are
// finished only when it is dealt with.
func (r *Reporter) deliver(ctx context.Context, it *queued) {
	rep := &it.r
	backoff := minBackoff
	for attempt := 1; ; attempt++ {
		outcome, retryAfter, err := r.send(ctx, rep)
		if err == nil {
			r.up.Store(true)
			r.m.reports.WithLabelValues(rep.Source, rep.Kind, outcome).Inc()
			if outcome == OutcomeDelivered {
				r.m.latency.WithLabelValues(rep.Source, rep.Kind).Observe(time.Since(rep.Observed).Seconds())
			}
			for _, t := range it.tickets {
				t.finish()
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
		msg := err.Error()
		r.lastErr.Store(&msg)
		r.up.Store(false)
		r.m.retries.WithLabelValues(rep.Kind).Inc()
		wait := time.Duration(rand.Int64N(int64(backoff))) + backoff/2
		if retryAfter > wait {
			wait = retryAfter
		}
		wait = min(wait, r.maxBackoff)
		lvl := slog.LevelWarn
		if attempt > 1 {
			lvl = slog.LevelDebug
		}
		if attempt%20 == 0 {
			lvl = slog.LevelWarn
		}
		r.log.Log(ctx, lvl, "report not delivered; retrying", slog.String("kind", rep.Kind), slog.String("upstream", rep.Upstream),
			slog.String("sub", rep.Subject), slog.Int("attempt", attempt), slog.Duration("retry_in", wait), slog.String("error", msg))
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
		backoff = min(backoff*2, r.maxBackoff)
	}
}

type adminErrorBody struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// send makes one attempt. It returns an outcome (nil error) when the report is
// dealt with, or an error (and the Retry-After asked for) when it must be retried.
func (r *Reporter) send(ctx context.Context, rep *Report) (string, time.Duration, error) {
	var path string
	var body any
	switch rep.Kind {
	case KindRevoke:
		path = PathRevocations
		body = map[string]string{"selector": rep.Selector, "kind": "revoke", "reason": rep.Reason}
	case KindChange:
		path = PathWorkloadChange
		attrs := rep.Attributes
		if attrs == nil {
			attrs = map[string]string{}
		}
		body = map[string]any{"upstream": rep.Upstream, "subject": rep.Subject, "attributes": attrs}
	default:
		r.log.Error("internal error: unknown report kind dropped", slog.String("kind", rep.Kind))
		return OutcomeRejected, 0, nil
	}
	b, err := json.Marshal(body)
	if err != nil {
		return OutcomeRejected, 0, nil
	}
	var lastStatus int
	for try := 0; try < 2; try++ {
		tok, err := r.cred.get(try > 0)
		if err != nil {
			return "", 0, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.base+path, bytes.NewReader(b))
		if err != nil {
			return "", 0, err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := r.client.Do(req)
		if err != nil {
			return "", 0, fmt.Errorf("STS unreachable: %w", unwrapURLError(err))
		}
		var eb adminErrorBody
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
		resp.Body.Close()
		_ = json.Unmarshal(data, &eb)
		lastStatus = resp.StatusCode
		switch {
		case resp.StatusCode >= 200 && resp.StatusCode < 300:
			return OutcomeDelivered, 0, nil
		case resp.StatusCode == http.StatusUnauthorized:
			continue // read the credential again once: it may have been rotated
		case resp.StatusCode == http.StatusForbidden:
			r.logForbidden(rep, eb)
			return OutcomeForbidden, 0, nil
		case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
			return "", retryAfter(resp.Header.Get("Retry-After")), fmt.Errorf("STS answered %d %s: %s", resp.StatusCode, eb.Error, eb.Description)
		default:
			// A 4xx the STS will give again: the report is malformed for it (an
			// upstream without binding_attributes, a selector it refuses). Retrying
			// cannot help; it is counted and logged, never silently dropped.
			r.log.Error("report rejected by the STS; not retried", slog.String("kind", rep.Kind), slog.String("source", rep.Source),
				slog.String("upstream", rep.Upstream), slog.String("sub", rep.Subject), slog.String("selector", rep.Selector),
				slog.Int("status", resp.StatusCode), slog.String("error", eb.Error), slog.String("error_description", eb.Description))
			return OutcomeRejected, 0, nil
		}
	}
	return "", 0, fmt.Errorf("STS answered %d: the credential in %s is not accepted", lastStatus, r.cred.path)
}

// logForbidden logs a 403 once per report kind and upstream: a policy that does
// not grant the watcher an action would otherwise log every event.
func (r *Reporter) logForbidden(rep *Report, eb adminErrorBody) {
	k := rep.Kind + "\x00" + rep.Upstream
	if _, seen := r.forbidden.LoadOrStore(k, struct{}{}); seen {
		return
	}
	action := "revoke"
	if rep.Kind == KindChange {
		action = "report_change"
	}
	r.log.Error("the STS refuses the watcher this action (403); such reports are counted in stswatch_reports_total{outcome=\"forbidden\"} and not logged again",
		slog.String("kind", rep.Kind), slog.String("action", action), slog.String("upstream", rep.Upstream),
		slog.String("error_description", eb.Description))
}

func retryAfter(v string) time.Duration {
	if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n > 0 && n < 3600 {
		return time.Duration(n) * time.Second
	}
	return 0
}

// unwrapURLError drops the URL (the address is in the config) from a client error.
func unwrapURLError(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}
