package issuer

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSlowBodyTakesNoSlot: a /token request whose body has not come holds no
// in-flight slot (max_in_flight 1 here): the next caller is served.
func TestSlowBodyTakesNoSlot(t *testing.T) {
	ts := startSTS(t, stsOptions{extra: "limits: {max_in_flight: 1, shed_queue_delay: -1s}\n"})
	cfg := ts.hs.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ts.hs.Listener.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "POST /token HTTP/1.1\r\nHost: sts\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nx"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the stalled request reaches the handler (a pass without it proves less, never fails)
	if r := ts.post(t, ts.form(ts.a.Token(t, payments))); r.status != http.StatusOK {
		t.Fatalf("exchange beside a stalled body: %d %s", r.status, r.raw)
	}
}

// TestAdminPreLimits: the endpoints that verify a bearer token besides /token
// take a per-IP bucket and an in-flight slot of their own before verifying it;
// a feed stream gives its slot back once its caller is verified.
func TestAdminPreLimits(t *testing.T) {
	ts := startSTS(t, stsOptions{policy: feedPolicy, extra: "limits: {admin_per_ip_rps: 0.01, admin_burst: 3, admin_max_in_flight: 1, shed_queue_delay: -1s}\n"})
	admin := ts.a.Token(t, secops)
	openFeed(t, ts, admin, "") // holds its stream, not its slot
	if r := ts.do(t, http.MethodGet, PathRevocations, "", "", bearer(admin)); r.status != http.StatusOK {
		t.Fatalf("snapshot beside an open feed stream: %d %s", r.status, r.raw)
	}
	// The third request of the burst passes; then the bucket is empty, whatever
	// the credential (none is verified).
	if r := ts.do(t, http.MethodGet, PathRevocations, "", "", bearer(admin)); r.status != http.StatusOK {
		t.Fatalf("third request: %d %s", r.status, r.raw)
	}
	for _, path := range []string{PathRevocations, PathAdmin + "revocations"} {
		r := ts.do(t, http.MethodGet, path, "", "", bearer("forged"))
		if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" || r.body["error"] != "temporarily_unavailable" {
			t.Fatalf("%s over the admin per-IP rate: %d %s", path, r.status, r.raw)
		}
	}
	// Introspection by a resource server and RFC 7009 revocation too: refused
	// before the client assertion (or the token) is verified.
	form := url.Values{"token": {"x"}, "client_assertion_type": {AssertionTypeJWTBearer}, "client_assertion": {"forged.x.y"}}.Encode()
	for _, path := range []string{PathIntrospect, PathRevoke} {
		r := ts.do(t, http.MethodPost, path, "application/x-www-form-urlencoded", form, nil)
		if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" || r.body["error"] != "temporarily_unavailable" {
			t.Fatalf("%s over the admin per-IP rate: %d %s", path, r.status, r.raw)
		}
	}
	// /token's bucket is another one.
	if r := ts.post(t, ts.form(ts.a.Token(t, payments))); r.status != http.StatusOK {
		t.Fatalf("exchange after the admin bucket ran dry: %d %s", r.status, r.raw)
	}
}

// TestPendingBodiesPerConnection: one HTTP/2 connection may have
// maxPendingBodies requests whose body is stalled; requests beyond them on the
// same connection whose body comes at once (a client multiplexing exchanges)
// are served, and those whose body does not come within crowdedBodyTimeout are
// answered 429 (not kept for bodyTimeout); other connections are served.
func TestPendingBodiesPerConnection(t *testing.T) {
	ts := startSTS(t, stsOptions{extra: "limits: {shed_queue_delay: -1s}\n"})
	addr := ts.serve(t)
	tr := ts.hs.Client().Transport.(*http.Transport).Clone()
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP2(true)
	tr.MaxConnsPerHost = 1 // one connection (100 streams), dialled before the stalled requests start
	defer tr.CloseIdleConnections()
	h2 := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	if resp, err := h2.Get("https://" + addr + "/healthz"); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	ctx, cancel := context.WithCancel(context.Background())
	var stalled sync.WaitGroup
	defer func() { cancel(); stalled.Wait() }()
	// stall sends a request whose body never comes and returns its status (0
	// when cancelled).
	stall := func() int {
		body, w := io.Pipe()
		defer w.Close()
		stop := context.AfterFunc(ctx, func() { w.Close() })
		defer stop()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+PathToken, body)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := h2.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// maxPendingBodies stalled requests, kept stalled: one answered 429 because
	// others were coming at the same time tries again.
	for range maxPendingBodies {
		stalled.Go(func() {
			for i := 0; i < 200 && ctx.Err() == nil; i++ {
				if stall() != http.StatusTooManyRequests {
					return
				}
			}
		})
	}
	waitUntil(t, "the stalled bodies", func() bool { return ts.srv.limits.pendingBodies.Load() >= maxPendingBodies })

	// Exchanges multiplexed on the crowded connection are served.
	form := ts.form(ts.a.Token(t, payments)).Encode()
	for range 3 {
		resp, err := h2.Post("https://"+addr+PathToken, "application/x-www-form-urlencoded", strings.NewReader(form))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Fatalf("protocol %s, want HTTP/2", resp.Proto)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("exchange beside %d stalled bodies on its connection: %d", maxPendingBodies, resp.StatusCode)
		}
	}
	// One more stalled body on it is answered 429 (after crowdedBodyTimeout; a
	// body timing out after bodyTimeout would be a 400).
	if code := stall(); code != http.StatusTooManyRequests {
		t.Fatalf("a stalled body beyond %d on one connection: %d, want 429", maxPendingBodies, code)
	}
	// Another connection is served.
	h1 := &http.Client{Transport: ts.hs.Client().Transport.(*http.Transport).Clone(), Timeout: 10 * time.Second}
	resp, err := h1.Post("https://"+addr+PathToken, "application/x-www-form-urlencoded", strings.NewReader(form))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("exchange on another connection: %d", resp.StatusCode)
	}
}

// TestPendingBodiesBound: across connections at most maxPending bodies are read
// at once; beyond it a request is answered 429 at once, and a finished read
// gives its place back.
func TestPendingBodiesBound(t *testing.T) {
	m := newMetrics()
	l := newTokenLimits(Limits{MaxConnections: 1, ShedQueueDelay: -1}, time.Now, m)
	defer l.close()
	if l.maxPending != maxPendingBodies {
		t.Fatalf("maxPending %d with one connection, want %d", l.maxPending, maxPendingBodies)
	}
	read := func() (bool, int) {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, PathToken, strings.NewReader("grant_type=x"))
		ok := l.readBody(w, r)
		return ok, w.Code
	}
	l.pendingBodies.Store(l.maxPending) // that many bodies are coming elsewhere
	if ok, code := read(); ok || code != http.StatusTooManyRequests {
		t.Fatalf("body beyond the bound: read %v, status %d; want refused with 429", ok, code)
	}
	l.pendingBodies.Store(l.maxPending - 1)
	if ok, _ := read(); !ok {
		t.Fatal("body within the bound refused")
	}
	if n := l.pendingBodies.Load(); n != l.maxPending-1 {
		t.Fatalf("pending bodies %d after the read, want %d", n, l.maxPending-1)
	}
}
