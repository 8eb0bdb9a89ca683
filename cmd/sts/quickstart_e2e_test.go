package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/stsclient"
	"github.com/safeconduct/safeconduct/internal/testproc"
)

// TestE2EQuickstart: the quickstart exchanges, verifies and shows the audit event;
// a second run keeps the edited sts.yaml and policy.yaml (and refuses a --listen
// that contradicts the kept sts.yaml).
func TestE2EQuickstart(t *testing.T) {
	dir := t.TempDir()
	listen := fmt.Sprintf("127.0.0.1:%d", testproc.FreePort(t))
	out := runBin(t, 0, "sts", "quickstart", "--once", "--dir", dir, "--listen", listen)
	for _, want := range []string{"verifies from", `"sub": "system:serviceaccount:demo:app"`,
		`"log":"audit"`, `"event":"exchange"`, `"outcome":"issued"`, "stsctl revoke", "--feed-token-file " + dir + "/admin.jwt"} {
		if !strings.Contains(out, want) {
			t.Fatalf("quickstart output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "Reusing") {
		t.Fatalf("first run says it reuses files:\n%s", out)
	}

	// Edit the policy (a narrower scope list and a comment) and the config (a
	// comment); the second run keeps both and still exchanges (api.read stays).
	policyPath, cfgPath := filepath.Join(dir, "policy.yaml"), filepath.Join(dir, "sts.yaml")
	pol, _ := os.ReadFile(policyPath)
	edited := "# my edit\n" + strings.Replace(string(pol), "scopes: [api.read, api.write]", "scopes: [api.read]", 1)
	if edited == "# my edit\n"+string(pol) {
		t.Fatal("the policy has no scopes line to edit")
	}
	if err := os.WriteFile(policyPath, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _ := os.ReadFile(cfgPath)
	editedCfg := string(cfg) + "# my config edit\n"
	if err := os.WriteFile(cfgPath, []byte(editedCfg), 0o600); err != nil {
		t.Fatal(err)
	}
	subjectBefore, _ := os.ReadFile(filepath.Join(dir, "demo-subject.jwt"))
	keysBefore, _ := os.ReadDir(filepath.Join(dir, "keys"))

	out = runBin(t, 0, "sts", "quickstart", "--once", "--dir", dir)
	if !strings.Contains(out, "Reusing "+dir+": kept sts.yaml, policy.yaml") || !strings.Contains(out, "verifies from") {
		t.Fatalf("second run output:\n%s", out)
	}
	if got, _ := os.ReadFile(policyPath); string(got) != edited {
		t.Fatalf("policy.yaml was rewritten:\n%s", got)
	}
	if got, _ := os.ReadFile(cfgPath); string(got) != editedCfg {
		t.Fatalf("sts.yaml was rewritten:\n%s", got)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "demo-subject.jwt")); string(got) == string(subjectBefore) {
		t.Fatal("the demo subject token was not refreshed")
	}
	if keysAfter, _ := os.ReadDir(filepath.Join(dir, "keys")); len(keysAfter) != len(keysBefore) {
		t.Fatalf("signing keys changed: %d files, then %d", len(keysBefore), len(keysAfter))
	}

	// The edited policy is the one in force: api.write is no longer granted.
	if err := os.WriteFile(policyPath, []byte(strings.Replace(edited, "scopes: [api.read]", "scopes: [api.write]", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	out = runBin(t, 1, "sts", "quickstart", "--once", "--dir", dir)
	if !strings.Contains(out, "demo exchange failed") || !strings.Contains(out, "invalid_scope") {
		t.Fatalf("run with a policy that no longer grants api.read:\n%s", out)
	}

	// A --listen that contradicts the kept sts.yaml is a usage error.
	other := fmt.Sprintf("127.0.0.1:%d", testproc.FreePort(t))
	out = runBin(t, 2, "sts", "quickstart", "--once", "--dir", dir, "--listen", other)
	if !strings.Contains(out, "listens on "+listen) {
		t.Fatalf("contradicting --listen:\n%s", out)
	}
	runBin(t, 0, "sts", "quickstart", "--help")
}

// TestE2EQuickstartAdmin: the quickstart's admin token is allowed by its admin
// rule: stsctl revoke and revocations list work, and the revocation feed answers
// (verify-api reads it with that token).
func TestE2EQuickstartAdmin(t *testing.T) {
	dir := t.TempDir()
	listen := fmt.Sprintf("127.0.0.1:%d", testproc.FreePort(t))
	base := "https://" + listen
	cmd := exec.Command(filepath.Join(binDir, "sts"), "quickstart", "--dir", dir, "--listen", listen)
	out := &testproc.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "keeps serving") {
		select {
		case err := <-exited:
			t.Fatalf("quickstart exited: %v\n%s", err, out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("quickstart not serving within 60s:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	ca, admin := filepath.Join(dir, "ca.crt"), "@"+filepath.Join(dir, "admin.jwt")
	res := runBin(t, 0, "stsctl", "revoke", "--sts", base, "--cacert", ca, "--token", admin,
		"--selector", "upstream=demo,sub=system:serviceaccount:demo:app", "--reason", "quickstart test", "--for", "10m")
	if !strings.Contains(res, `"selector"`) {
		t.Fatalf("revoke:\n%s", res)
	}
	res = runBin(t, 0, "stsctl", "revocations", "list", "--sts", base, "--cacert", ca, "--token", admin)
	if !strings.Contains(res, "system:serviceaccount:demo:app") {
		t.Fatalf("revocations list:\n%s", res)
	}
	// The revocation feed (what verify-api reads with --feed-token-file admin.jwt).
	client, err := stsclient.HTTPClient(ca, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := os.ReadFile(filepath.Join(dir, "admin.jwt"))
	req, _ := http.NewRequest(http.MethodGet, base+"/revocations", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("revocation feed with the admin token: %s", resp.Status)
	}
	// The revoke was audited, on the quickstart's stderr.
	waitFor(t, func() bool { return strings.Contains(out.String(), `"event":"revoke"`) })
	// A token signed by the same demo key for another user is refused (403): the
	// rule names the local user only.
	res = runBin(t, 1, "stsctl", "revocations", "list", "--sts", base, "--cacert", ca, "--token", "@"+filepath.Join(dir, "demo-subject.jwt"))
	if !strings.Contains(res, "403") {
		t.Fatalf("demo workload as admin:\n%s", res)
	}
}

// TestE2EServeMissingTLSCreatesNothing: `sts serve` with a TLS file missing fails
// naming it, and leaves the directory as it was (no key directory, no store).
func TestE2EServeMissingTLSCreatesNothing(t *testing.T) {
	e := setup(t, "")
	if err := os.Remove(e.path("tls.crt")); err != nil {
		t.Fatal(err)
	}
	before := listTree(t, e.dir)
	out := runBin(t, 1, "sts", "serve", "--config", e.cfg)
	if !strings.Contains(out, "tls.crt") {
		t.Fatalf("serve output does not name the missing file:\n%s", out)
	}
	if after := listTree(t, e.dir); !slices.Equal(before, after) {
		t.Fatalf("serve created files:\nbefore %v\nafter  %v", before, after)
	}
}

// listTree lists every path under dir.
func listTree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		out = append(out, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestE2EHelpExitsZero: --help of every sts command and of the stsctl binary's
// commands exits 0; a missing --config is named (exit 2); stsctl version and its
// completion scripts come out of the real binary.
func TestE2EHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"serve", "--help"}, {"check-config", "-h"}, {"quickstart", "--help"},
		{"revocation-store", "--help"}, {"revocation-store", "accept-loss", "--help"}} {
		runBin(t, 0, "sts", args...)
	}
	if out := runBin(t, 2, "sts", "serve"); !strings.Contains(out, "missing --config") {
		t.Fatalf("sts serve without --config:\n%s", out)
	}
	for _, args := range [][]string{{"--help"}, {"keys", "--help"}, {"keys", "rotate", "--help"}, {"revocations", "lift", "-h"}, {"policy", "--help"}} {
		runBin(t, 0, "stsctl", args...)
	}
	if out := runBin(t, 0, "stsctl", "version"); !strings.HasPrefix(out, "stsctl ") {
		t.Fatalf("stsctl version: %q", out)
	}
	if out := runBin(t, 0, "stsctl", "completion", "bash"); !strings.Contains(out, "complete -o default -F _stsctl stsctl") {
		t.Fatalf("stsctl completion bash:\n%s", out)
	}
	if out := runBin(t, 0, "stsctl", "completion", "zsh"); !strings.HasPrefix(out, "#compdef stsctl") {
		t.Fatalf("stsctl completion zsh:\n%s", out)
	}
}
