package issuer

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
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

// TestPendingBodiesPerConnection: one HTTP/2 connection has at most
// maxPendingBodies requests whose body is still coming; more are answered 429
// at once (their goroutines and buffers are bounded with the connections),
// other connections are served.
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
	// maxPendingBodies requests whose body never comes; one refused because a
	// request below was coming at the same time tries again.
	for range maxPendingBodies {
		stalled.Go(func() {
			for i := 0; i < 200 && ctx.Err() == nil; i++ {
				body, w := io.Pipe()
				stop := context.AfterFunc(ctx, func() { w.Close() })
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+PathToken, body)
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				resp, err := h2.Do(req)
				stop()
				w.Close()
				if err != nil {
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusTooManyRequests {
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	form := ts.form(ts.a.Token(t, payments)).Encode()
	refused := false
	for deadline := time.Now().Add(5 * time.Second); !refused && time.Now().Before(deadline); {
		resp, err := h2.Post("https://"+addr+PathToken, "application/x-www-form-urlencoded", strings.NewReader(form))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Fatalf("protocol %s, want HTTP/2", resp.Proto)
		}
		refused = resp.StatusCode == http.StatusTooManyRequests
		time.Sleep(10 * time.Millisecond)
	}
	if !refused {
		t.Fatalf("a connection with %d bodies coming was given another request", maxPendingBodies)
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
