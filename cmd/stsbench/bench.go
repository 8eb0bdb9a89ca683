package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/safeconduct/safeconduct/internal/stsclient"
)

// maxBody bounds what is read of a response.
const maxBody = 64 << 10

// bench is one load run: the workers and what they share. Workers keep their own
// latencies and error counts; only the fail-fast bookkeeping before the first
// valid answer is shared (atomics).
type bench struct {
	url     string
	o       *options
	bodies  []string
	workers []*worker
	// answered is set by the first valid answer (200 or a well-formed 429);
	// failures counts the failures before it.
	answered atomic.Bool
	failures atomic.Int64
	abort    context.CancelCauseFunc
}

// worker owns one keep-alive connection. In the closed loop it sends exchanges
// back to back; in the open loop (--rate) it sends the arrivals handed to it.
type worker struct {
	client    *http.Client
	next      int   // index of the next subject token (closed loop)
	share     int64 // this worker's share of --max-requests, per phase (closed loop)
	budget    int64 // requests this worker may still send in this phase (closed loop)
	buf       bytes.Buffer
	lat       []time.Duration // admitted (200) exchanges of the measured window
	limLat    []time.Duration // limited (429) answers of the measured window
	delay     []time.Duration // open loop: scheduled arrival to send, measured window
	errs      map[string]int  // failures of the measured window, by kind
	warmErrs  map[string]int  // failures during warmup, by kind
	exhausted bool
}

// outcome classifies one request.
type outcome int

const (
	// admitted: 200 with a valid token response.
	admitted outcome = iota
	// limited: 429 with Retry-After and an RFC 6749 temporarily_unavailable body,
	// the STS's answer when a rate or concurrency limit refuses the request.
	limited
	// failed: anything else (another status, a malformed answer, a transport error).
	failed
)

// errFailFast is the abort cause when the first requests all fail.
var errFailFast = errors.New("fail fast")

func newBench(tokenURL string, o *options, bodies []string) (*bench, error) {
	b := &bench{url: tokenURL, o: o, bodies: bodies}
	var shared []*http.Client // --http2
	for range o.http2Conns {
		c, err := newClient(o.cacert, o.allowRemote, true)
		if err != nil {
			return nil, err
		}
		shared = append(shared, c)
	}
	for i := range o.concurrency {
		var c *http.Client
		if len(shared) > 0 {
			c = shared[i%len(shared)]
		} else {
			var err error
			if c, err = newClient(o.cacert, o.allowRemote, false); err != nil {
				return nil, err
			}
		}
		budget := o.maxRequests / int64(o.concurrency)
		if int64(i) < o.maxRequests%int64(o.concurrency) {
			budget++
		}
		b.workers = append(b.workers, &worker{
			client: c, next: i % len(bodies), share: budget, budget: budget,
			errs: map[string]int{}, warmErrs: map[string]int{},
		})
	}
	return b, nil
}

// newClient is an HTTP client with one keep-alive connection: HTTP/1.1 for one
// worker, or with h2 HTTP/2 for the workers that share it (their requests are
// streams of that connection); no proxy, no redirects, dials to loopback
// addresses only unless allowRemote.
func newClient(cacert string, allowRemote, h2 bool) (*http.Client, error) {
	c, err := stsclient.HTTPClient(cacert, requestTimeout)
	if err != nil {
		return nil, fmt.Errorf("--cacert: %w", err)
	}
	tr := c.Transport.(*http.Transport)
	tr.Proxy = nil
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	if !allowRemote {
		d.Control = loopbackOnly
	}
	tr.DialContext = d.DialContext
	tr.ForceAttemptHTTP2 = false
	tr.Protocols = new(http.Protocols)
	if h2 {
		tr.Protocols.SetHTTP2(true)
	} else {
		tr.Protocols.SetHTTP1(true)
	}
	tr.MaxConnsPerHost = 1
	tr.MaxIdleConnsPerHost = 1
	tr.MaxIdleConns = 1
	tr.DisableCompression = true
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c, nil
}

// run does the warmup and the measured window and collects the result. server, when
// not nil, is the STS process whose CPU time is measured over the window. With
// --rate it is an open loop (runOpen), else a closed loop.
func (b *bench) run(parent context.Context, server *procCPU) (*result, error) {
	if b.o.rate > 0 {
		return b.runOpen(parent, server)
	}
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	b.abort = cancel
	defer func() {
		for _, w := range b.workers {
			w.client.CloseIdleConnections()
		}
	}()

	if b.o.warmup > 0 {
		b.phase(ctx, time.Now().Add(b.o.warmup), false)
		if err := b.aborted(parent, ctx); err != nil {
			return nil, err
		}
	}
	for _, w := range b.workers {
		w.budget, w.exhausted = w.share, false // a fresh budget for the measured window
	}

	var s0, s1 time.Duration
	var err error
	if server != nil {
		if s0, err = server.cpu(); err != nil {
			return nil, fmt.Errorf("--pid: %w", err)
		}
	}
	g0 := selfCPU()
	start := time.Now()
	b.phase(ctx, start.Add(b.o.duration), true)
	wall := time.Since(start)
	g1 := selfCPU()
	if server != nil {
		if s1, err = server.cpu(); err != nil {
			return nil, fmt.Errorf("--pid: the STS process is gone: %w", err)
		}
	}
	if parent.Err() == nil {
		if err := b.aborted(parent, ctx); err != nil {
			return nil, err
		}
	}

	res := b.collect(wall)
	res.Generator = newCPUReport(g1-g0, wall, res.OK+res.Limited+res.Errors)
	if server != nil {
		r := newCPUReport(s1-s0, wall, res.OK)
		r.PID, r.Name = server.pid, server.name
		res.Server = &r
	}
	if parent.Err() != nil {
		res.Stopped = stopInterrupted
	}
	return res, nil
}

// collect merges the workers' measurements of a window of wall time into a result.
func (b *bench) collect(wall time.Duration) *result {
	res := &result{
		Mode:        modeClosed,
		URL:         b.url,
		Concurrency: b.o.concurrency,
		HTTP2Conns:  b.o.http2Conns,
		Tokens:      len(b.bodies),
		WarmupS:     b.o.warmup.Seconds(),
		DurationS:   wall.Seconds(),
		Stopped:     stopDeadline,
		ErrorKinds:  map[string]int{},
		GenProcs:    runtime.GOMAXPROCS(0),
		NumCPU:      runtime.NumCPU(),
	}
	var lat, limLat []time.Duration
	for _, w := range b.workers {
		lat = append(lat, w.lat...)
		limLat = append(limLat, w.limLat...)
		for k, n := range w.errs {
			res.ErrorKinds[k] += n
			res.Errors += n
		}
		if w.exhausted {
			res.Stopped = stopMaxRequests
		}
	}
	res.OK, res.Limited = len(lat), len(limLat)
	if wall > 0 {
		res.Throughput = float64(res.OK) / wall.Seconds()
		res.LimitedRate = float64(res.Limited) / wall.Seconds()
	}
	res.Latency = percentiles(lat)
	res.LatencyLimited = percentiles(limLat)
	return res
}

// percentiles sorts lat and returns its percentiles in microseconds.
func percentiles(lat []time.Duration) latencyUS {
	slices.Sort(lat)
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	return latencyUS{
		P50:  us(percentile(lat, 50)),
		P90:  us(percentile(lat, 90)),
		P99:  us(percentile(lat, 99)),
		P999: us(percentile(lat, 99.9)),
		Max:  us(percentile(lat, 100)),
	}
}

// aborted explains why ctx ended early, if it did: an interrupt, or the first
// requests all failing.
func (b *bench) aborted(parent, ctx context.Context) error {
	if parent.Err() != nil {
		return errors.New("interrupted")
	}
	if !errors.Is(context.Cause(ctx), errFailFast) {
		return nil
	}
	kinds := map[string]int{}
	for _, w := range b.workers {
		for _, m := range []map[string]int{w.warmErrs, w.errs} {
			for k, n := range m {
				kinds[k] += n
			}
		}
	}
	var parts []string
	for _, k := range sortedKeys(kinds) {
		parts = append(parts, fmt.Sprintf("%d × %s", kinds[k], k))
	}
	hint := ""
	for k := range kinds {
		if strings.HasPrefix(k, "400") {
			hint = "; the STS refuses the requests: check that it trusts --upstream-key for --upstream-issuer " +
				"(with --kid and --upstream-audience) and that its policy grants subjects --subject-prefix* " +
				"the --audience and --scope"
		}
	}
	return fmt.Errorf("stopped: the first %d requests all failed: %s%s", failFast, strings.Join(parts, ", "), hint)
}

// phase runs all workers until the deadline (no request starts after it), their
// budgets are spent or ctx ends.
func (b *bench) phase(ctx context.Context, until time.Time, record bool) {
	var wg sync.WaitGroup
	for _, w := range b.workers {
		wg.Go(func() { w.loop(ctx, b, until, record) })
	}
	wg.Wait()
}

func (w *worker) loop(ctx context.Context, b *bench, until time.Time, record bool) {
	errs := w.warmErrs
	if record {
		errs = w.errs
	}
	stride := len(b.workers)
	for ctx.Err() == nil {
		if w.budget <= 0 {
			w.exhausted = true
			return
		}
		t0 := time.Now()
		if !t0.Before(until) {
			return
		}
		out, kind := w.exchange(ctx, b.url, b.bodies[w.next])
		d := time.Since(t0)
		w.budget--
		w.next = (w.next + stride) % len(b.bodies)
		if ctx.Err() != nil {
			return // cut short by an interrupt or an abort: not a result
		}
		w.note(b, out, kind, d, record, errs)
	}
}

// note records one answer: its latency by class in the measured window, a failure
// by kind, and the fail-fast bookkeeping.
func (w *worker) note(b *bench, out outcome, kind string, d time.Duration, record bool, errs map[string]int) {
	switch out {
	case admitted, limited:
		if record {
			if out == admitted {
				w.lat = append(w.lat, d)
			} else {
				w.limLat = append(w.limLat, d)
			}
		}
		if !b.answered.Load() {
			b.answered.Store(true)
		}
		return
	}
	errs[kind]++
	if !b.answered.Load() && b.failures.Add(1) >= failFast && !b.answered.Load() {
		b.abort(errFailFast)
	}
}

// exchange sends one exchange and classifies the answer: admitted (a valid 200),
// limited (a valid 429), or failed with the kind of failure (never including a
// token).
func (w *worker) exchange(ctx context.Context, tokenURL, body string) (outcome, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, strings.NewReader(body))
	if err != nil {
		return failed, "request: " + err.Error()
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := w.client.Do(req)
	if err != nil {
		return failed, transportKind(err)
	}
	defer resp.Body.Close()
	w.buf.Reset()
	if _, err := w.buf.ReadFrom(io.LimitReader(resp.Body, maxBody+1)); err != nil {
		return failed, fmt.Sprintf("%d, then %s", resp.StatusCode, transportKind(err))
	}
	if w.buf.Len() > maxBody {
		return failed, fmt.Sprintf("%d with a body over %d bytes", resp.StatusCode, maxBody)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusTooManyRequests:
		if kind := checkLimited(resp.Header, w.buf.Bytes()); kind != "" {
			return failed, kind
		}
		return limited, ""
	default:
		return failed, errorKind(resp.StatusCode, w.buf.Bytes())
	}
	var r struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	switch {
	case json.Unmarshal(w.buf.Bytes(), &r) != nil:
		return failed, "200 with a malformed JSON body"
	case r.AccessToken == "":
		return failed, "200 without access_token"
	case r.ExpiresIn <= 0:
		return failed, "200 with expires_in <= 0"
	}
	return admitted, ""
}

// checkLimited checks a 429 answer the way a well-behaved client relies on it:
// Retry-After present (delay-seconds or an HTTP-date, RFC 9110 §10.2.3) and an
// RFC 6749 §5.2 JSON body with error temporarily_unavailable. It returns "" when
// it is one, else the kind of failure.
func checkLimited(h http.Header, body []byte) string {
	switch ra := h.Get("Retry-After"); {
	case ra == "":
		return "429 without Retry-After"
	case !validRetryAfter(ra):
		return "429 with a malformed Retry-After"
	}
	if kind := errorKind(http.StatusTooManyRequests, body); kind != "429 temporarily_unavailable" {
		return kind + " (want a temporarily_unavailable JSON body)"
	}
	return ""
}

// validRetryAfter reports whether v is delay-seconds (1*DIGIT) or an HTTP-date.
func validRetryAfter(v string) bool {
	if v == "" || len(v) > 64 {
		return false
	}
	digits := true
	for _, c := range v {
		if c < '0' || c > '9' {
			digits = false
			break
		}
	}
	if digits {
		return true
	}
	_, err := http.ParseTime(v)
	return err == nil
}

var errorCode = regexp.MustCompile(`^[a-z_]{1,64}$`)

// errorKind is "STATUS error_code" for an RFC 6749 error answer, else "STATUS".
func errorKind(status int, body []byte) string {
	var e struct {
		Code string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && errorCode.MatchString(e.Code) {
		return fmt.Sprintf("%d %s", status, e.Code)
	}
	return fmt.Sprint(status)
}

// transportKind names a failure to get a response.
func transportKind(err error) string {
	var ne net.Error
	var unknownCA x509.UnknownAuthorityError
	var verify *tls.CertificateVerificationError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed by the server"
	case errors.As(err, &unknownCA), errors.As(err, &verify):
		return "TLS certificate not trusted (--cacert?)"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // without the method and URL
	}
	msg := err.Error()
	if len(msg) > 120 {
		msg = msg[:120] + "..."
	}
	return "transport: " + msg
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
