package issuer

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"
)

// serve runs ts.srv.Serve over TLS on a loopback port until the test ends and
// returns its address.
func (ts *testSTS) serve(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ts.srv.Serve(ctx, l, ts.hs.TLS.Clone(), time.Second) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return l.Addr().String()
}

// TestConnectionCap: at limits.max_connections, a new connection closes the one
// idle longest (a new one still sending its headers counts as idle) and is
// served; when none is idle, the new one is closed.
func TestConnectionCap(t *testing.T) {
	ts := startSTS(t, stsOptions{extra: "limits: {max_connections: 3}\n"})
	addr := ts.serve(t)
	cfg := ts.hs.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	dial := func() (*tls.Conn, error) {
		return tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	}
	// get sends a request on c and reads its answer: c is idle afterwards.
	get := func(c *tls.Conn) error {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: sts\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	}
	// closed reports whether the server closed c (a read sees EOF or a reset
	// within the wait; a live idle connection times out).
	closed := func(c *tls.Conn, wait time.Duration) bool {
		_ = c.SetReadDeadline(time.Now().Add(wait))
		_, err := c.Read(make([]byte, 1))
		return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
	}

	var conns []*tls.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// The first connection sends half a request's headers (new, never active),
	// the next two a whole request (idle after it); the fourth makes room.
	for i := range 4 {
		c, err := dial()
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if i == 0 {
			_, err = io.WriteString(c, "GET /healthz HTTP/1.1\r\n")
		} else {
			err = get(c)
		}
		if err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
	}
	if !closed(conns[0], 5*time.Second) {
		t.Fatal("the connection idle longest (half a header) was not closed for the fourth")
	}
	for i, c := range conns[1:] {
		if closed(c, 100*time.Millisecond) {
			t.Fatalf("connection %d closed, want only the first", i+2)
		}
	}

	// None idle: the three hold a request whose body has not come (a request
	// counts once its headers are in; a connection with half a header is idle).
	for _, c := range conns[1:] {
		if _, err := io.WriteString(c, "POST /token HTTP/1.1\r\nHost: sts\r\nContent-Length: 10\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); ts.srv.conns.idleCount() > 0; { // the server reads the headers: active
		if time.Now().After(deadline) {
			t.Fatal("connections still idle 5s after their request's headers")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if c, err := dial(); err == nil {
		defer c.Close()
		if !closed(c, 5*time.Second) {
			t.Fatal("a connection over the bound was kept while none was idle")
		}
	}
}
