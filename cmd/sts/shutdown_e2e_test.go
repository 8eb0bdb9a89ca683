package main

import (
	"bufio"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/revocation"
)

// feedPolicy lets alice (corp upstream) read the revocation feed.
const feedPolicy = e2ePolicy + `admin:
  - name: feed-readers
    upstreams: [corp]
    subjects: ["alice@example.com"]
    actions: [read_feed]
    within_upstreams: ["*"]
`

// setupFeedReader is an STS on the embedded store whose policy lets alice, from a
// corp upstream, read the revocation feed; it returns alice's token.
func setupFeedReader(t *testing.T) (*e2e, string) {
	t.Helper()
	e := setup(t, "")
	corp := e.addCorp("")
	e.write("policy.yaml", feedPolicy)
	return e, corp.Token(t, alice)
}

// TestE2EShutdownEndsFeedStreams: SIGTERM while a feed subscriber is connected ends
// its stream at once; the process exits cleanly within 3 s instead of waiting out
// the drain (10 s) and failing with "context deadline exceeded".
// Over HTTP/1.1 and HTTP/2 (verify's default client speaks HTTP/2).
func TestE2EShutdownEndsFeedStreams(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("http2=%v", h2), func(t *testing.T) { testShutdownEndsFeedStream(t, h2) })
	}
}

func testShutdownEndsFeedStream(t *testing.T, h2 bool) {
	e, token := setupFeedReader(t)
	e.start()
	req, _ := http.NewRequest(http.MethodGet, e.url+"/revocations/stream", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	tr := e.client.Transport.(*http.Transport).Clone()
	tr.ForceAttemptHTTP2 = h2
	// The stream outlives the client's default 10 s timeout by design.
	client := &http.Client{Transport: tr}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != revocation.StreamContentType || resp.ProtoAtLeast(2, 0) != h2 {
		t.Fatalf("stream: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Proto)
	}
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() && lines.Text() != "event: "+revocation.EventHeartbeat {
	}
	if lines.Err() != nil {
		t.Fatalf("no heartbeat: %v", lines.Err())
	}
	// The stream is established (the first heartbeat arrived): stop the STS.
	ended := make(chan struct{})
	go func() {
		for lines.Scan() {
		}
		close(ended)
	}()
	start := time.Now()
	if err := e.proc.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited, exitErr := e.proc.Wait(15 * time.Second)
	if !exited {
		_ = e.proc.Cmd.Process.Kill()
		t.Fatalf("sts did not exit within 15 s of SIGTERM\n%s", e.log)
	}
	took := time.Since(start)
	t.Logf("exit %v after SIGTERM with a feed subscriber connected", took.Round(time.Millisecond))
	if exitErr != nil {
		t.Errorf("exit: %v\n%s", exitErr, e.log)
	}
	if took >= 3*time.Second {
		t.Errorf("exit took %v, want < 3 s", took)
	}
	if strings.Contains(e.log.String(), "deadline exceeded") {
		t.Errorf("shutdown ran into its deadline:\n%s", e.log)
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Error("the feed stream did not end")
	}
}
