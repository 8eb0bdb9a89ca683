package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/safeconduct/safeconduct/internal/testproc"
	"github.com/safeconduct/safeconduct/internal/testspire"
)

const spireWatchPolicy = `rules:
  - name: payments-to-ledger
    effect: allow
    upstreams: [spire]
    subjects: ["spiffe://example.org/ns/payments/*"]
    audiences: ["https://ledger.internal"]
    scopes: [ledger.read]
admin:
  - name: watcher
    upstreams: [spire]
    subjects: ["spiffe://example.org/stswatch"]
    actions: [revoke, report_change]
    within_upstreams: [spire]
  - name: ledger-feed
    upstreams: [spire]
    subjects: ["spiffe://example.org/ledger"]
    actions: [read_feed]
    within_upstreams: ["*"]
`

// spireEnv is a real SPIRE, an STS whose upstream is its trust domain, and the
// credentials of the watcher and of the downstream (JWT-SVIDs for audience sts).
type spireEnv struct {
	*env
	s       *testspire.SPIRE
	watchID spiffeid.ID
	feedID  spiffeid.ID
}

func startSPIREEnv(t *testing.T) *spireEnv {
	t.Helper()
	s := testspire.Start(t, testspire.Options{})
	se := &spireEnv{s: s}
	se.watchID = s.RegisterWorkload(t, "/stswatch")
	se.feedID = s.RegisterWorkload(t, "/ledger")
	se.env = newEnv(t, func(e *env) string {
		return fmt.Sprintf(`upstreams:
  - name: spire
    kind: spiffe
    trust_domain: example.org
    audiences: [sts]
    workload_api_socket: %s
`, s.SocketPath())
	}, spireWatchPolicy)
	se.refreshCredential()
	se.startSTS()
	return se
}

// refreshCredential writes the watcher's JWT-SVID to its credential file, as a
// SPIFFE helper would.
func (se *spireEnv) refreshCredential() {
	se.write("watcher.jwt", se.s.FetchJWTSVIDFor(se.t, se.watchID, "sts"))
}

func (se *spireEnv) watcherConfig(upstream string, poll time.Duration, stateDir string) string {
	return fmt.Sprintf(`sts: {url: %q, ca_file: %q, credential_file: %q, max_backoff: 1s}
state_dir: %q
spire: {server_socket: %q, upstream: %s, poll_interval: %s}
`, se.url, se.caFile, se.path("watcher.jwt"), se.path(stateDir), se.s.ServerSocketPath(), upstream, poll)
}

// workload registers a workload and returns a ledger token minted for it and the
// ID of its registration entry.
func (se *spireEnv) workload(path string) (tok, entryID string) {
	se.t.Helper()
	id := se.s.RegisterWorkload(se.t, path)
	tok = se.exchange(se.s.FetchJWTSVIDFor(se.t, id, "sts"))
	return tok, se.entryID(id)
}

func (se *spireEnv) entryID(id spiffeid.ID) string {
	se.t.Helper()
	out := se.s.ServerCommand(se.t, "entry", "show", "-spiffeID", id.String(), "-output", "json")
	var res struct {
		Entries []struct {
			ID string `json:"id"`
		} `json:"entries"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.Entries) != 1 {
		se.t.Fatalf("entry show %s printed %q: %v", id, out, err)
	}
	return res.Entries[0].ID
}

func (se *spireEnv) deleteEntry(entryID string) time.Time {
	se.t.Helper()
	at := time.Now()
	se.s.ServerCommand(se.t, "entry", "delete", "-entryID", entryID)
	return at
}

// TestE2EWatcherSPIRE: registration entries deleted in a real SPIRE make the
// watcher revoke the tokens of their SPIFFE IDs, and only those; deletions while
// the watcher is down are found on restart from its state file; while the STS is
// down the reports wait and are delivered when it returns; while the SPIRE server
// is down the watcher is not ready and catches up; a banned agent revokes the IDs
// of its entries; a watcher whose credential may not revoke an upstream logs the
// 403 once.
func TestE2EWatcherSPIRE(t *testing.T) {
	se := startSPIREEnv(t)
	// Fetched once (valid 5 minutes): the feed reconnects while the SPIRE server is
	// down, when the agent may not answer.
	feedTok := se.s.FetchJWTSVIDFor(t, se.feedID, "sts")
	v := se.verifier(func() string { return feedTok })

	apiTok, apiEntry := se.workload("/ns/payments/sa/api")
	batchTok, batchEntry := se.workload("/ns/payments/sa/batch")
	cronTok, cronEntry := se.workload("/ns/payments/sa/cron")
	webTok, webEntry := se.workload("/ns/payments/sa/web")
	reportTok, _ := se.workload("/ns/payments/sa/report")
	for _, tok := range []string{apiTok, batchTok, cronTok, webTok, reportTok} {
		mustVerify(t, v, tok, "a fresh token")
	}

	w := se.startWatcher("watch", se.watcherConfig("spire", 200*time.Millisecond, "state"))
	w.awaitReady(30 * time.Second)
	// A second watcher whose reports name an upstream its credential may not
	// revoke: every report is refused with 403, logged once.
	denied := se.startWatcher("denied", se.watcherConfig("elsewhere", 200*time.Millisecond, "state-denied"))
	denied.awaitReady(30 * time.Second)

	// 1. An entry deleted: its ID's token is refused downstream; the others are not.
	took := awaitRevoked(t, v, apiTok, se.deleteEntry(apiEntry), 30*time.Second, "entry deleted")
	t.Logf("entry deleted -> token refused downstream in %s", took.Round(time.Millisecond))
	mustVerify(t, v, batchTok, "the token of an entry that still exists")

	// 2. A deletion while the watcher is down is found on restart (state file).
	w.stop()
	se.deleteEntry(batchEntry)
	w = se.startWatcher("watch", se.watcherConfig("spire", 200*time.Millisecond, "state"))
	awaitRevoked(t, v, batchTok, time.Now(), 30*time.Second, "entry deleted while the watcher was down")
	mustVerify(t, v, cronTok, "the token of an entry that still exists")

	// The denied watcher saw both deletions: two 403s, one log line.
	testproc.WaitUntil(t, 30*time.Second, "the denied watcher's 403s", func() bool {
		return denied.metric("stswatch_reports_total", `outcome="forbidden"`) >= 2
	})
	denied.stop()
	if n := strings.Count(denied.Log.String(), "refuses the watcher this action (403)"); n != 1 {
		t.Fatalf("the 403 was logged %d times, want once per kind:\n%s", n, denied.Log)
	}

	// 3. STS down: the watcher is not ready, keeps the report, delivers it later.
	se.sts.stop()
	se.deleteEntry(cronEntry)
	testproc.WaitUntil(t, 30*time.Second, "readyz to report the STS unreachable", func() bool {
		code, body := w.readyz()
		return code == 503 && strings.Contains(body, `"sts"`)
	})
	if got := w.metric("stswatch_report_retries_total"); got < 1 {
		t.Fatalf("no retry counted while the STS was down")
	}
	se.startSTS()
	awaitRevoked(t, v, cronTok, time.Now(), 60*time.Second, "entry deleted while the STS was down")
	w.awaitReady(30 * time.Second)

	// 4. SPIRE server down: not ready; back: ready, and the next deletion is found.
	se.s.StopServer()
	testproc.WaitUntil(t, 30*time.Second, "readyz to report SPIRE unreachable", func() bool {
		code, body := w.readyz()
		return code == 503 && strings.Contains(body, `"spire"`)
	})
	if w.metric("stswatch_source_up", `source="spire"`) != 0 {
		t.Fatal("stswatch_source_up{source=spire} is not 0 while the server is down")
	}
	se.s.RestartServer(t)
	w.awaitReady(30 * time.Second)
	mustVerify(t, v, webTok, "a token while nothing changed")
	awaitRevoked(t, v, webTok, se.deleteEntry(webEntry), 30*time.Second, "entry deleted after SPIRE came back")

	// 5. The agent banned: the IDs of its entries are revoked.
	mustVerify(t, v, reportTok, "a token before the ban")
	at := time.Now()
	se.s.ServerCommand(t, "agent", "ban", "-spiffeID", se.s.AgentID().String())
	awaitRevoked(t, v, reportTok, at, 30*time.Second, "agent banned")

	if got := w.metric("stswatch_reports_total", `source="spire"`, `outcome="delivered"`); got < 2 {
		t.Fatalf("delivered reports %v", got)
	}
	if got := w.metric("stswatch_events_total", `event="agent_banned"`); got < 1 {
		t.Fatalf("agent_banned events %v", got)
	}
	if got := w.metric("stswatch_reports_total", `outcome="forbidden"`) + w.metric("stswatch_reports_total", `outcome="rejected"`); got != 0 {
		t.Fatalf("the allowed watcher had %v reports forbidden or rejected:\n%s", got, w.Log)
	}
}
