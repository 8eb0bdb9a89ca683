package issuer

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
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
