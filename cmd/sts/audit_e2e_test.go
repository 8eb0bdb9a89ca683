package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/auditschema"
	"github.com/safeconduct/safeconduct/internal/testissuer"
	"github.com/safeconduct/safeconduct/internal/testproc"
)

// The audit path's failures, end to end: the real sts with its audit file on a
// full disk (a 64 KiB tmpfs) and with stderr on a pipe nobody reads.

const auditAdminPolicy = e2ePolicy + `admin:
  - name: secops
    upstreams: [corp]
    subjects: ["alice@example.com"]
    actions: [revoke, list]
    within_upstreams: ["*"]
`

// auditSetup is setup with the corp upstream (alice's IdP), the admin policy and
// extra configuration appended.
func auditSetup(t *testing.T, extra string) (*e2e, *testissuer.Issuer) {
	t.Helper()
	e := setup(t, "")
	corp := e.addCorp(extra)
	e.write("policy.yaml", auditAdminPolicy)
	return e, corp
}

// tokenStatus posts one exchange and answers its status and body.
func (e *e2e) tokenStatus(t *testing.T, subject string) (int, string) {
	t.Helper()
	form := fmt.Sprintf("grant_type=urn:ietf:params:oauth:grant-type:token-exchange&subject_token=%s&subject_token_type=urn:ietf:params:oauth:token-type:jwt&audience=%s&scope=ledger.read", subject, ledger)
	resp, err := e.client.Post(e.url+"/token", "application/x-www-form-urlencoded", strings.NewReader(form))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// revoke posts a revocation as the admin and answers the status.
func (e *e2e) revoke(t *testing.T, adminToken string) int {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"selector": "upstream=cluster-a,sub=" + payments, "reason": "audit test"})
	req, _ := http.NewRequest(http.MethodPost, e.url+"/admin/v1/revocations", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// metric reads one sample of /metrics (-1 when absent).
func (e *e2e) metric(t *testing.T, name string) float64 {
	t.Helper()
	_, body := e.get("/metrics")
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// auditEvents reads the audit file's events.
func auditEvents(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		if err := auditschema.Validate(sc.Bytes()); err != nil {
			t.Errorf("audit event does not match %s: %v\n%s", auditschema.SchemaPath, err, sc.Text())
		}
		out = append(out, ev)
	}
	return out
}

// fullDisk mounts a 64 KiB tmpfs at dir (root only) and returns a function that
// fills it up and one that frees it.
func fullDisk(t *testing.T, dir string) (fill, free func()) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a small tmpfs (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	filler := filepath.Join(dir, "filler")
	fill = func() {
		f, err := os.OpenFile(filler, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		chunk := make([]byte, 512)
		for {
			if _, err := f.Write(chunk); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatal(err)
				}
				return
			}
		}
	}
	free = func() {
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
	}
	return fill, free
}

// TestE2EAuditFullDisk: with the audit file on a full disk, fail_closed (the
// default) refuses /token and admin changes with 503, /readyz fails, the
// failure is counted and logged once; once space is free again everything
// recovers and the audit file says how many events were lost.
func TestE2EAuditFullDisk(t *testing.T) {
	e, corp := auditSetup(t, "audit: {path: audit/audit.jsonl}\n")
	fill, free := fullDisk(t, e.path("audit"))
	e.start()
	subject := e.a.Token(t, payments)
	if code, body := e.tokenStatus(t, subject); code != 200 {
		t.Fatalf("exchange before the disk is full: %d %s", code, body)
	}
	held, err := e.exchange(subject) // its holder revokes it at /revoke (RFC 7009) below
	if err != nil {
		t.Fatal(err)
	}
	revokeHeld := func() int {
		resp, err := e.client.PostForm(e.url+"/revoke", url.Values{"token": {held.AccessToken}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	fill()
	// The audit file's last page may still take a few events.
	for i := 0; ; i++ {
		code, body := e.tokenStatus(t, subject)
		if code == http.StatusServiceUnavailable {
			break
		}
		if code != 200 || i == 20 {
			t.Fatalf("exchange %d on a full disk: %d %s", i, code, body)
		}
	}
	for i := range 20 {
		code, body := e.tokenStatus(t, subject)
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "temporarily_unavailable") {
			t.Fatalf("exchange %d on a full disk: %d %s", i, code, body)
		}
	}
	if code := e.revoke(t, corp.Token(t, alice)); code != http.StatusServiceUnavailable {
		t.Fatalf("revoke on a full disk: %d, want 503", code)
	}
	if code := revokeHeld(); code != http.StatusServiceUnavailable {
		t.Fatalf("POST /revoke on a full disk: %d, want 503", code)
	}
	if code, _ := e.get("/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz on a full disk: %d", code)
	}
	if v := e.metric(t, "safeconduct_audit_healthy"); v != 0 {
		t.Fatalf("safeconduct_audit_healthy %v, want 0", v)
	}
	if v := e.metric(t, `safeconduct_audit_write_failures_total{reason="write_error"}`); v < 1 {
		t.Fatalf("write failures %v, want >= 1", v)
	}
	if n := strings.Count(e.log.String(), `"msg":"audit log cannot be written"`); n != 1 {
		t.Fatalf("%d failure lines in the application log, want 1:\n%s", n, e.log)
	}

	free()
	waitFor(t, func() bool { code, _ := e.get("/readyz"); return code == 200 })
	if code, body := e.tokenStatus(t, subject); code != 200 {
		t.Fatalf("exchange after recovery: %d %s", code, body)
	}
	if code := revokeHeld(); code != http.StatusOK {
		t.Fatalf("POST /revoke after recovery: %d", code)
	}
	if code := e.revoke(t, corp.Token(t, alice)); code != http.StatusCreated {
		t.Fatalf("revoke after recovery: %d", code)
	}
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	var recovered, revoked, tokenRevoked bool
	for _, ev := range auditEvents(t, e.path("audit/audit.jsonl")) {
		switch ev["event"] {
		case "audit_recovered":
			recovered = ev["lost"].(float64) >= 1 && ev["failed_since"] != nil
		case "revoke":
			revoked = revoked || ev["outcome"] == "recorded"
		case "revoke_token":
			tokenRevoked = tokenRevoked || ev["outcome"] == "recorded"
		}
	}
	if !recovered || !revoked || !tokenRevoked {
		t.Fatalf("audit file: recovered %v, revoke recorded %v, revoke_token recorded %v", recovered, revoked, tokenRevoked)
	}
	if !strings.Contains(e.log.String(), `"msg":"audit log written again"`) {
		t.Fatalf("no recovery line in the application log:\n%s", e.log)
	}
}

// TestE2EAuditFullDiskContinue: with on_failure continue, tokens are still
// issued on a full disk, /readyz stays ok, and the failure is counted and shown.
func TestE2EAuditFullDiskContinue(t *testing.T) {
	e, _ := auditSetup(t, "audit: {path: audit/audit.jsonl, on_failure: continue}\n")
	fill, _ := fullDisk(t, e.path("audit"))
	e.start()
	subject := e.a.Token(t, payments)
	fill()
	for i := range 40 {
		if code, body := e.tokenStatus(t, subject); code != 200 {
			t.Fatalf("exchange %d on a full disk with continue: %d %s", i, code, body)
		}
	}
	if code, _ := e.get("/readyz"); code != 200 {
		t.Fatalf("/readyz with continue: %d", code)
	}
	waitFor(t, func() bool { return e.metric(t, "safeconduct_audit_healthy") == 0 })
	if v := e.metric(t, `safeconduct_audit_write_failures_total{reason="write_error"}`); v < 1 {
		t.Fatalf("write failures %v, want >= 1", v)
	}
}

// TestE2EAuditStderrUnread: audit events on a stderr pipe nobody reads never
// hang /token. With continue every exchange is answered 200; with fail_closed
// they are answered (200 while the pipe takes events, then 503), and once the
// pipe is read again exchanges succeed.
func TestE2EAuditStderrUnread(t *testing.T) {
	for _, policy := range []string{"continue", "fail_closed"} {
		t.Run(policy, func(t *testing.T) {
			e, _ := auditSetup(t, "audit: {on_failure: "+policy+"}\n")
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close() }) // after sts has stopped
			e.startWithStderr(w)
			w.Close()
			subject := e.a.Token(t, payments)
			// A pipe holds 64 KiB: a few hundred events fill it.
			e.client.Timeout = 5 * time.Second
			refused := 0
			for i := range 400 {
				code, body := e.tokenStatus(t, subject)
				switch {
				case code == 200:
				case code == http.StatusServiceUnavailable && policy == "fail_closed":
					refused++
				default:
					t.Fatalf("exchange %d: %d %s", i, code, body)
				}
			}
			if policy == "fail_closed" && refused == 0 {
				t.Fatal("fail_closed: no exchange refused while the audit sink is stuck")
			}
			// The stuck sink is seen with either policy.
			waitFor(t, func() bool {
				e.tokenStatus(t, subject)
				return e.metric(t, "safeconduct_audit_healthy") == 0
			})
			// Reading the pipe again: the queue drains and exchanges succeed.
			go func() { _, _ = io.Copy(io.Discard, r) }()
			waitFor(t, func() bool { code, _ := e.get("/readyz"); return code == 200 })
			waitFor(t, func() bool { code, _ := e.tokenStatus(t, subject); return code == 200 })
		})
	}
}

// startWithStderr starts sts with stdout and stderr on w and waits until it
// answers.
func (e *e2e) startWithStderr(w *os.File) {
	t := e.t
	t.Helper()
	cmd := e.serveCmd()
	cmd.Stdout, cmd.Stderr = w, w
	e.proc = testproc.Start(t, cmd)
	t.Cleanup(func() {
		if err := e.stop(); err != nil {
			t.Error(err)
		}
	})
	waitFor(t, func() bool {
		resp, err := e.client.Get(e.url + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
}

// TestE2ERateLimitedAudited: 429s of the per-IP limit are audited, aggregated
// per reason and client address with their count; exchange and admin events
// carry the client address.
func TestE2ERateLimitedAudited(t *testing.T) {
	e, _ := auditSetup(t, "audit: {path: audit.jsonl}\nlimits: {per_ip_rps: 1, burst: 3}\n")
	e.start()
	if code, body := e.tokenStatus(t, e.a.Token(t, payments)); code != 200 {
		t.Fatalf("exchange: %d %s", code, body)
	}
	if code, _ := e.get("/admin/v1/revocations"); code != http.StatusUnauthorized {
		t.Fatalf("unauthenticated admin call: %d", code)
	}
	limited := 0
	for range 60 {
		if code, _ := e.tokenStatus(t, "x"); code == http.StatusTooManyRequests {
			limited++
		}
	}
	if limited < 40 {
		t.Fatalf("only %d of 60 requests over the per-IP limit were refused", limited)
	}
	// The window's event comes without a shutdown (windows of 10 s).
	for deadline := time.Now().Add(25 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		data, _ := os.ReadFile(e.path("audit.jsonl"))
		if bytes.Contains(data, []byte(`"event":"rate_limited"`)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no rate_limited event within 25s")
		}
	}
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	var counted float64
	var exchange, admin bool
	for _, ev := range auditEvents(t, e.path("audit.jsonl")) {
		switch ev["event"] {
		case "rate_limited", "exchange", "list":
			if ev["client_addr"] != "127.0.0.1" {
				t.Fatalf("event without the client address: %v", ev)
			}
		}
		switch ev["event"] {
		case "rate_limited":
			if ev["reason"] != "per_ip" || ev["window_s"] != 10.0 {
				t.Fatalf("rate_limited event %v", ev)
			}
			counted += ev["count"].(float64)
		case "exchange":
			exchange = true
		case "list":
			admin = ev["outcome"] == "unauthenticated"
		}
	}
	if int(counted) != limited || !exchange || !admin {
		t.Fatalf("rate_limited counts %v, want %d; exchange event %v, admin event %v", counted, limited, exchange, admin)
	}
}
