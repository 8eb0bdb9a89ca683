package hardening

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSlowBodiesDoNotStarveToken: requests whose body never arrives, on HTTP/2
// streams (a connection takes 100, the client opens more) or on HTTP/1.1
// connections sending a byte a second, more of them than the default in-flight
// bound (128 on 2 CPUs), must not keep legitimate callers on other connections
// from their exchanges: a request counts against max_in_flight only once its
// body is in.
func TestSlowBodiesDoNotStarveToken(t *testing.T) {
	t.Parallel()
	// Default limits (the attack needs no credential); shedding off, as a busy
	// test machine is not what is under test.
	e := newEnvWith(t, envOptions{limits: "{shed_queue_delay: -1s}"})
	form := exchangeForm(e.a.Token(t, payments), "").Encode()
	e.wantIssued(t, e.postToken(t, form))

	for _, a := range []struct {
		name   string
		n      int
		attack func(context.Context, *sync.WaitGroup, int, *atomic.Int64)
	}{
		{"250 stalled HTTP/2 streams", 250, e.http2StalledStreams},
		{"200 HTTP/1.1 bodies at a byte a second", 200, e.slowloris},
	} {
		t.Run(a.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			var attackers sync.WaitGroup
			defer func() { cancel(); attackers.Wait() }()
			var sent atomic.Int64 // requests whose headers went out
			a.attack(ctx, &attackers, a.n, &sent)
			for deadline := time.Now().Add(10 * time.Second); sent.Load() < int64(a.n); {
				if time.Now().After(deadline) {
					t.Fatalf("the attack did not take hold: %d of %d requests sent", sent.Load(), a.n)
				}
				time.Sleep(20 * time.Millisecond)
			}
			res := e.legitExchanges(t, form, 3*time.Second, 5000)
			t.Logf("under %s: %s", a.name, res)
			res.want95(t)
		})
	}
}

// legit is the outcome of legitimate exchanges during an attack.
type legit struct {
	ok, total int
	statuses  map[string]int
	latencies []time.Duration
}

func (l legit) p99() time.Duration {
	if len(l.latencies) == 0 {
		return 0
	}
	s := slices.Clone(l.latencies)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*99/100)]
}

func (l legit) String() string {
	return fmt.Sprintf("%d/%d legitimate exchanges issued, p99 %v, answers %v", l.ok, l.total, l.p99().Round(time.Millisecond), l.statuses)
}

// want95 asserts that at least 95% of the exchanges were issued.
func (l legit) want95(t *testing.T) {
	t.Helper()
	if l.total == 0 || l.ok*100 < l.total*95 {
		t.Fatalf("only %s", l)
	}
}

// legitExchanges posts form to /token one after the other, on connections of
// its own (HTTP/1.1), for d or n exchanges, whichever ends first.
func (e *env) legitExchanges(t *testing.T, form string, d time.Duration, n int) legit {
	t.Helper()
	tr := e.client.Transport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	res := legit{statuses: map[string]int{}}
	for end := time.Now().Add(d); res.total < n && time.Now().Before(end); {
		start := time.Now()
		resp, err := c.Post(e.url+"/token", "application/x-www-form-urlencoded", strings.NewReader(form))
		res.total++
		if err != nil {
			res.statuses["error"]++
			continue
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		res.latencies = append(res.latencies, time.Since(start))
		res.statuses[fmt.Sprint(resp.StatusCode)]++
		if resp.StatusCode == http.StatusOK {
			res.ok++
		}
	}
	return res
}

// http2StalledStreams keeps n /token requests open over HTTP/2 whose body
// never comes (each opened again when the server ends it), until ctx ends;
// sent counts the requests whose headers went out.
func (e *env) http2StalledStreams(ctx context.Context, wg *sync.WaitGroup, n int, sent *atomic.Int64) {
	tr := e.client.Transport.(*http.Transport).Clone()
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP2(true)
	c := &http.Client{Transport: tr}
	trace := &httptrace.ClientTrace{WroteHeaders: func() { sent.Add(1) }}
	wg.Add(n + 1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		tr.CloseIdleConnections()
	}()
	for range n {
		go func() {
			defer wg.Done()
			for i := 0; i < 200 && ctx.Err() == nil; i++ {
				body, w := io.Pipe()
				stop := context.AfterFunc(ctx, func() { w.CloseWithError(ctx.Err()) })
				req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodPost, e.url+"/token", body)
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				req.ContentLength = 2000
				resp, err := c.Do(req)
				stop()
				w.Close()
				if err != nil {
					sleepCtx(ctx, 100*time.Millisecond)
					continue
				}
				resp.Body.Close()
				sleepCtx(ctx, 250*time.Millisecond) // refused (or ended): again, as an attacker would
			}
		}()
	}
}

// slowloris keeps n HTTP/1.1 connections posting to /token a body of 2000 bytes
// at one byte a second (a new connection when the server closes one), until ctx
// ends; sent counts the requests whose headers went out.
func (e *env) slowloris(ctx context.Context, wg *sync.WaitGroup, n int, sent *atomic.Int64) {
	cfg := e.client.Transport.(*http.Transport).TLSClientConfig.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	addr := strings.TrimPrefix(e.url, "https://")
	wg.Add(n)
	for range n {
		go func() {
			defer wg.Done()
			for i := 0; i < 100 && ctx.Err() == nil; i++ {
				slowPost(ctx, addr, cfg, sent)
				sleepCtx(ctx, 100*time.Millisecond)
			}
		}()
	}
}

// slowPost sends one request's headers, then its body a byte a second until the
// server closes the connection or ctx ends.
func slowPost(ctx context.Context, addr string, cfg *tls.Config, sent *atomic.Int64) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	head := "POST /token HTTP/1.1\r\nHost: " + addr + "\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 2000\r\n\r\n"
	if _, err := io.WriteString(c, head); err != nil {
		return
	}
	sent.Add(1)
	for range 2000 {
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("a")); err != nil || !sleepCtx(ctx, time.Second) {
			return
		}
	}
}

// sleepCtx sleeps for d unless ctx ends first; it reports whether ctx is still
// live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}
