package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/testproc"
)

// The latency measurements of docs/benchmarks.md ("Watcher"): from the event (a
// SPIRE entry deleted, a pod deleted) to a verify-based downstream refusing the
// token minted before it, with the watcher's defaults (SPIRE poll_interval 1s).
// They run only when SAFECONDUCT_WATCH_LATENCY names the number of samples (e.g.
// 30), and assert nothing about time: the figures are logged.
//
//	SAFECONDUCT_WATCH_LATENCY=30 go test -run 'Latency' -v ./cmd/stswatch/

func latencySamples(t *testing.T) int {
	t.Helper()
	n, _ := strconv.Atoi(os.Getenv("SAFECONDUCT_WATCH_LATENCY"))
	if n <= 0 {
		t.Skip("set SAFECONDUCT_WATCH_LATENCY=N to measure N samples")
	}
	return n
}

func report(t *testing.T, what string, d []time.Duration) {
	t.Helper()
	slices.Sort(d)
	q := func(p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
	t.Logf("%s: n=%d min=%s p50=%s p90=%s p99=%s max=%s", what, len(d),
		d[0].Round(time.Millisecond), q(.5).Round(time.Millisecond), q(.9).Round(time.Millisecond),
		q(.99).Round(time.Millisecond), d[len(d)-1].Round(time.Millisecond))
}

func TestLatencySPIREEntryDeleted(t *testing.T) {
	n := latencySamples(t)
	se := startSPIREEnv(t)
	feedTok := se.s.FetchJWTSVIDFor(t, se.feedID, "sts")
	v := se.verifier(func() string { return feedTok })
	toks, entries := make([]string, n), make([]string, n)
	for i := range n {
		toks[i], entries[i] = se.workload(fmt.Sprintf("/ns/payments/sa/w%d", i))
	}
	w := se.startWatcher("watch", se.watcherConfig("spire", time.Second, "state"))
	w.awaitReady(30 * time.Second)
	var d []time.Duration
	for i := range n {
		mustVerify(t, v, toks[i], "before")
		d = append(d, awaitRevoked(t, v, toks[i], se.deleteEntry(entries[i]), 30*time.Second, "entry deleted"))
		// Spread the deletions over the poll phase.
		time.Sleep(time.Duration(i%7) * 150 * time.Millisecond)
	}
	report(t, "SPIRE entry deleted -> token refused downstream (poll_interval 1s)", d)
}

func TestLatencyPodDeleted(t *testing.T) {
	n := latencySamples(t)
	ke := startKubeEnv(t)
	feedTok := ke.k.Token(t, "payments", "ledger", "sts")
	v := ke.verifier(func() string { return feedTok })
	ke.k.ServiceAccount(t, "payments", "api")
	toks := make([]string, n)
	for i := range n {
		toks[i] = ke.podToken(fmt.Sprintf("api-%d", i), "api")
	}
	w := ke.startWatcher("watch", ke.watcherConfig("state"))
	w.awaitReady(60 * time.Second)
	testproc.WaitUntil(t, 60*time.Second, "the initial change reports", func() bool {
		return w.metric("stswatch_reports_total", `kind="change"`, `outcome="delivered"`) >= float64(n)
	})
	var d []time.Duration
	for i := range n {
		mustVerify(t, v, toks[i], "before")
		at := time.Now()
		ke.k.DeletePod(t, "payments", fmt.Sprintf("api-%d", i))
		d = append(d, awaitRevoked(t, v, toks[i], at, 30*time.Second, "pod deleted"))
	}
	report(t, "pod deleted -> token refused downstream", d)
}
