package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/issuer"
	"github.com/safeconduct/safeconduct/policy"
)

// TestE2EPolicyStatus: the operations listener shows the live policy's digest and
// load time and the last reload; a broken policy reloaded with SIGHUP shows there
// (and in the gauges, and in `stsctl policy status`, which then exits 1) while the
// previous policy's digest stays live and keeps deciding.
func TestE2EPolicyStatus(t *testing.T) {
	e := setup(t, "")
	e.start()
	plain := &http.Client{Timeout: 10 * time.Second}
	status := func() issuer.PolicyStatus {
		t.Helper()
		code, body := get(t, plain, "http://"+e.ops+issuer.PathPolicyStatus)
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", issuer.PathPolicyStatus, code, body)
		}
		var st issuer.PolicyStatus
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
		return st
	}
	digestOf := func() string {
		t.Helper()
		p, err := policy.Load(e.path("policy.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		return p.Digest()
	}

	first := digestOf()
	st := status()
	if st.Digest != first || len(st.Files) != 1 || st.LoadedAt.IsZero() || st.LastReload != nil {
		t.Fatalf("status at start: %+v (want digest %s)", st, first)
	}
	// The token listener does not serve it: it names files and quotes problems.
	if code, _ := get(t, e.client, e.url+issuer.PathPolicyStatus); code != http.StatusNotFound {
		t.Errorf("token listener %s: %d", issuer.PathPolicyStatus, code)
	}

	hup := func() { _ = e.proc.Cmd.Process.Signal(syscall.SIGHUP) }
	e.write("policy.yaml", strings.Replace(e2ePolicy, "payments:*", "*", 1))
	second := digestOf()
	hup()
	waitFor(t, func() bool { return status().Digest == second })
	st = status()
	if st.LastReload == nil || st.LastReload.Result != "ok" || st.LastReload.Trigger != "signal" || st.LastReload.Error != "" {
		t.Fatalf("after a good reload: %+v", st.LastReload)
	}
	loaded := st.LoadedAt

	e.write("policy.yaml", "rules:\n  - name: broken\n    effect: maybe\n")
	hup()
	waitFor(t, func() bool { r := status().LastReload; return r != nil && r.Result == "error" })
	st = status()
	if st.Digest != second || !st.LoadedAt.Equal(loaded) {
		t.Errorf("the failed reload changed the live policy's status: %+v", st)
	}
	if !strings.Contains(st.LastReload.Error, "policy.yaml:3") || !strings.Contains(st.LastReload.Error, "maybe") {
		t.Errorf("reload error: %q", st.LastReload.Error)
	}
	// The old policy still decides (the outsider rule of the second policy).
	if _, err := e.exchange(e.a.Token(t, outsider)); err != nil {
		t.Errorf("the last good policy is not live: %v", err)
	}

	_, metrics := get(t, plain, "http://"+e.ops+"/metrics")
	for _, want := range []string{
		`safeconduct_policy_info{digest="` + second + `"} 1`,
		"safeconduct_policy_last_reload_success 0",
		"safeconduct_policy_loaded_timestamp_seconds ",
		"safeconduct_policy_last_reload_timestamp_seconds ",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(metrics, first) {
		t.Error("metrics still name the first policy's digest")
	}

	out := runBin(t, 1, "stsctl", "policy", "status", "--sts", "http://"+e.ops)
	for _, want := range []string{"live policy:  " + second, "last reload:  error", "policy.yaml:3", "the last policy reload failed"} {
		if !strings.Contains(out, want) {
			t.Errorf("stsctl policy status lacks %q:\n%s", want, out)
		}
	}
	out = runBin(t, 1, "stsctl", "policy", "status", "--sts", "http://"+e.ops, "--output", "json")
	if !strings.Contains(out, `"result": "error"`) || !strings.Contains(out, second) {
		t.Errorf("stsctl policy status --json:\n%s", out)
	}

	// Fixed: the status clears, and stsctl exits 0.
	e.write("policy.yaml", e2ePolicy)
	hup()
	waitFor(t, func() bool { return status().Digest == first })
	out = runBin(t, 0, "stsctl", "policy", "status", "--sts", "http://"+e.ops)
	if !strings.Contains(out, "last reload:  ok") {
		t.Errorf("after the fix:\n%s", out)
	}
	// A URL that is not the operations listener is an error, not a status.
	runBin(t, 1, "stsctl", "policy", "status", "--sts", "http://"+e.ops+"/metrics")
}
