package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/safeconduct/safeconduct/internal/stsclient"
	"github.com/safeconduct/safeconduct/internal/testredis"
)

// get answers the status and body of GET path: /metrics from the metrics
// listener, anything else from the token listener.
func (e *e2e) get(path string) (int, string) {
	e.t.Helper()
	url, client := e.url+path, e.client
	if path == "/metrics" {
		url, client = "http://"+e.ops+path, http.DefaultClient
	}
	resp, err := client.Get(url)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestE2EEmbeddedStoreLost: a bbolt file truncated to zero length is loss, not a
// new store: the STS starts but refuses tokens (503) and readiness, says so in
// one log line naming the command and in a metric, until the operator runs
// `sts revocation-store accept-loss`, which the running STS picks up.
func TestE2EEmbeddedStoreLost(t *testing.T) {
	e := setup(t, "")
	e.start()
	firstLog := e.log.String()
	if _, err := e.exchange(e.a.Token(t, payments)); err != nil {
		t.Fatal(err)
	}
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(e.path("data/revocation.db"), 0); err != nil {
		t.Fatal(err)
	}
	e.start()
	if code, _ := e.get("/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz %d with the store lost", code)
	}
	_, err := e.exchange(e.a.Token(t, payments))
	if se, ok := err.(*stsclient.Error); !ok || se.Status != 503 {
		t.Fatalf("exchange with the store lost: %v", err)
	}
	if m := e.metric(t, "safeconduct_revocation_store_lost"); m != 1 {
		t.Fatalf("metric: %v", m)
	}
	if log := e.log.String(); strings.Count(log, "REVOCATION STORE LOST") != 1 || !strings.Contains(log, "accept-loss") {
		t.Fatalf("want one loss line naming the command:\n%s", log)
	}

	out := runBin(t, 0, "sts", "revocation-store", "accept-loss", "--config", e.cfg)
	if !strings.Contains(out, "accepted") {
		t.Fatalf("accept-loss: %s", out)
	}
	waitFor(t, func() bool { code, _ := e.get("/readyz"); return code == http.StatusOK })
	if _, err := e.exchange(e.a.Token(t, payments)); err != nil {
		t.Fatal(err)
	}
	if m := e.metric(t, "safeconduct_revocation_store_lost"); m != 0 {
		t.Fatalf("metric after accept-loss: %v", m)
	}
	if !strings.Contains(firstLog, "revocation store initialised") {
		t.Fatalf("a new store is not logged as such:\n%s", firstLog)
	}
}

// TestE2EClusterMasterWithoutReplica: on a Redis Cluster with one replica per
// master, after the {rev} master fails over the promoted node has no replica, so
// no revocation can be confirmed: /readyz must say 503, the writable metric 0,
// and a warning must be logged, until the old master rejoins as its replica.
func TestE2EClusterMasterWithoutReplica(t *testing.T) {
	c := testredis.StartCluster6(t)
	prefix := testredis.Prefix(t)
	e := setup(t, fmt.Sprintf("revocation:\n  backend: redis\n  redis: {addrs: [%s], cluster: true, prefix: %q}\n",
		strings.Join(c.Addrs(), ", "), prefix))
	e.start()
	waitFor(t, func() bool { code, _ := e.get("/readyz"); return code == http.StatusOK })
	master := c.MasterForKey(prefix + ":{rev}:id")
	c.KillMaster(t, master)
	// The next write probe (within 5 s) finds no replica to confirm it.
	waitFor(t, func() bool {
		code, body := e.get("/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "cannot record")
	})
	if m := e.metric(t, "safeconduct_revocation_store_writable"); m != 0 {
		t.Fatalf("metric with the master alone: %v", m)
	}
	if !strings.Contains(e.log.String(), "cannot record revocations") {
		t.Fatalf("no warning logged:\n%s", e.log)
	}
	c.Restart(t, master)
	waitFor(t, func() bool { code, _ := e.get("/readyz"); return code == http.StatusOK })
	if !strings.Contains(e.log.String(), "records revocations again") {
		t.Fatalf("no recovery logged:\n%s", e.log)
	}
}
