package issuer

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

const secops = "system:serviceaccount:secops:admin"

// feedPolicy lets secops (cluster-a) revoke, lift and read the feed.
const feedPolicy = testPolicy + `admin:
  - name: secops
    upstreams: [cluster-a]
    subjects: ["` + secops + `"]
    actions: [revoke, lift, read_feed]
    within_upstreams: ["*"]
`

// sseEvent is one Server-Sent Event of the revocation feed.
type sseEvent struct{ id, typ, data string }

// openFeed subscribes to the feed from cursor and returns its events as they
// arrive; the subscription ends with the test.
func openFeed(t *testing.T, ts *testSTS, token, cursor string) <-chan sseEvent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ts.url+PathRevocationFeed+"?cursor="+cursor, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		t.Fatalf("feed: %d", resp.StatusCode)
	}
	events := make(chan sseEvent, 64)
	go func() {
		defer resp.Body.Close()
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				events <- ev
				ev = sseEvent{}
			case strings.HasPrefix(line, "id: "):
				ev.id = line[len("id: "):]
			case strings.HasPrefix(line, "event: "):
				ev.typ = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[len("data: "):]
			}
		}
	}()
	return events
}

// nextBatch reads events up to and including the heartbeat that ends the next
// non-empty batch (the server writes a batch of events, then a heartbeat, then
// flushes) and returns their types.
func nextBatch(t *testing.T, events <-chan sseEvent) []string {
	t.Helper()
	var types []string
	timeout := time.After(15 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("feed closed after %v", types)
			}
			if ev.typ == "heartbeat" {
				if len(types) > 0 {
					return types
				}
				continue // a heartbeat-only batch (nothing new for 5 s)
			}
			types = append(types, ev.typ)
		case <-timeout:
			t.Fatalf("no heartbeat after %v", types)
		}
	}
}

// feedMetrics reads the feed lag histogram's count and sum and the events sent.
func feedMetrics(t *testing.T, ts *testSTS) (count, sum, sent float64) {
	t.Helper()
	text := ts.metrics(t)
	var ok [3]bool
	count, ok[0] = metricValue(t, text, "safeconduct_feed_lag_seconds_count")
	sum, ok[1] = metricValue(t, text, "safeconduct_feed_lag_seconds_sum")
	sent, ok[2] = metricValue(t, text, "safeconduct_feed_events_sent_total")
	if ok != [3]bool{true, true, true} {
		t.Fatalf("feed metrics missing (count, sum, sent present: %v)", ok)
	}
	return count, sum, sent
}

// TestFeedLagMetric: every created event written to a stream is observed once in
// safeconduct_feed_lag_seconds (a catch-up from an old cursor shows its age; a
// live event, within the store's grace, reads 0 rather than negative), and lifted
// events, which carry no time of lifting, are not observed.
func TestFeedLagMetric(t *testing.T) {
	ts := startSTS(t, stsOptions{policy: feedPolicy})
	admin := ts.a.Token(t, secops)
	authz := func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+admin) }
	revoke := func(i int) (string, time.Time) {
		t.Helper()
		body := fmt.Sprintf(`{"selector":"upstream=cluster-a,sub=system:serviceaccount:payments:gone-%d","kind":"revoke","reason":"feed lag test"}`, i)
		r := ts.do(t, http.MethodPost, PathAdmin+"revocations", "application/json", body, authz)
		if r.status != http.StatusCreated {
			t.Fatalf("revoke: %d %s", r.status, r.raw)
		}
		id, _ := r.body["id"].(string)
		ms, _ := r.body["created"].(float64) // unix milliseconds
		if id == "" || ms <= 0 {
			t.Fatalf("revoke answered %s", r.raw)
		}
		return id, time.UnixMilli(int64(ms))
	}

	const backlog = 3
	var ids []string
	var last time.Time
	for i := range backlog {
		id, created := revoke(i)
		ids, last = append(ids, id), created
	}
	// Created is ahead of the clock by the store's grace: wait until the entries
	// are 300 ms old, then subscribe from the start of the feed.
	const age = 300 * time.Millisecond
	time.Sleep(time.Until(last.Add(age)))
	count0, sum0, sent0 := feedMetrics(t, ts)
	events := openFeed(t, ts, admin, "")
	if got := nextBatch(t, events); len(got) != backlog || got[0] != "created" || got[backlog-1] != "created" {
		t.Fatalf("backlog batch %v, want %d created", got, backlog)
	}
	count1, sum1, sent1 := feedMetrics(t, ts)
	if count1-count0 != backlog || sent1-sent0 != backlog {
		t.Errorf("after %d created events: lag count +%v, events sent +%v", backlog, count1-count0, sent1-sent0)
	}
	if lag := (sum1 - sum0) / backlog; lag < age.Seconds() || lag > 60 {
		t.Errorf("mean lag of the backlog %.3fs, want at least %s", lag, age)
	}

	// A lift: sent, not observed.
	if r := ts.do(t, http.MethodDelete, PathAdmin+"revocations/"+ids[0]+"?reason=done", "", "", authz); r.status != http.StatusOK {
		t.Fatalf("lift: %d %s", r.status, r.raw)
	}
	if got := nextBatch(t, events); len(got) != 1 || got[0] != "lifted" {
		t.Fatalf("after the lift: %v", got)
	}
	count2, sum2, sent2 := feedMetrics(t, ts)
	if count2 != count1 || sum2 != sum1 || sent2 != sent1+1 {
		t.Errorf("after a lifted event: lag count %v -> %v, sum %v -> %v, events sent %v -> %v", count1, count2, sum1, sum2, sent1, sent2)
	}

	// A live event arrives within the grace: observed once, clamped to 0 (a raw
	// negative lag would lower the sum).
	revoke(backlog)
	if got := nextBatch(t, events); len(got) != 1 || got[0] != "created" {
		t.Fatalf("live batch %v", got)
	}
	count3, sum3, sent3 := feedMetrics(t, ts)
	if count3 != count2+1 || sent3 != sent2+1 {
		t.Errorf("after a live created event: lag count %v -> %v, events sent %v -> %v", count2, count3, sent2, sent3)
	}
	if sum3 < sum2 || sum3-sum2 > 0.5 {
		t.Errorf("live event lag %.3fs, want 0 (clamped within the grace)", sum3-sum2)
	}
}
