package config

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/testissuer"
	"github.com/safeconduct/safeconduct/internal/testproc"
	"github.com/safeconduct/safeconduct/issuer"
)

// writeAuditConfig writes, in a new directory, a configuration with one upstream
// (cluster-a, a JWKS file), the payments-to-ledger policy and the given audit
// section, with the files named in extra beside it; it returns the directory and
// the upstream.
func writeAuditConfig(t *testing.T, audit string, extra map[string]string) (string, *testissuer.Issuer) {
	t.Helper()
	dir := t.TempDir()
	a := testissuer.New(t, "https://issuer.example")
	files := map[string]string{
		"sts.yaml": `issuer: https://sts.example
listen: 127.0.0.1:0
tls: {cert_file: unused.crt, key_file: unused.key}
signing: {key_dir: keys}
upstreams:
  - name: cluster-a
    kind: oidc
    issuer: https://issuer.example
    audiences: [sts]
    jwks_file: a-jwks.json
policy_files: [policy.yaml]
revocation: {embedded: {path: data/revocation.db}}
` + audit,
		"policy.yaml": `rules:
  - name: payments-to-ledger
    effect: allow
    upstreams: [cluster-a]
    subjects: ["system:serviceaccount:payments:*"]
    audiences: ["https://ledger.internal"]
    scopes: [ledger.read]
`,
		"a-jwks.json": string(a.JWKS()),
	}
	maps.Copy(files, extra)
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir, a
}

// buildAuditServer loads dir/sts.yaml, checks that check-config finds nothing
// wrong with its audit section, and builds the server, its application log going
// to the returned buffer.
func buildAuditServer(t *testing.T, dir string) (*issuer.Server, *testproc.Buffer) {
	t.Helper()
	cfg, err := Load(filepath.Join(dir, "sts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(context.Background(), cfg); err != nil && strings.Contains(err.Error(), "audit") {
		t.Fatalf("check-config: %v", err)
	}
	appLog := &testproc.Buffer{}
	srv, err := Build(context.Background(), cfg, Options{Logger: slog.New(slog.NewJSONHandler(appLog, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return srv, appLog
}

// TestAuditSinkFile: with audit.path, audit events go to that file only, one JSON
// object per line, and neither the presented nor the minted token is in it.
func TestAuditSinkFile(t *testing.T) {
	dir, a := writeAuditConfig(t, "audit: {path: audit/audit.jsonl}\n", nil)
	if err := os.Mkdir(filepath.Join(dir, "audit"), 0o700); err != nil {
		t.Fatal(err)
	}
	srv, appLog := buildAuditServer(t, dir)
	subject := a.Token(t, "system:serviceaccount:payments:api")
	code, body := exchangeOn(t, srv, subject)
	if code != 200 {
		t.Fatalf("exchange: %d %s", code, body)
	}
	var resp map[string]any
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		t.Fatal(err)
	}
	minted, _ := resp["access_token"].(string)
	refusedSubject := a.Token(t, "system:serviceaccount:billing:api")
	if code, body := exchangeOn(t, srv, refusedSubject); code != 400 {
		t.Fatalf("refusal: %d %s", code, body)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}

	path := filepath.Join(dir, "audit", "audit.jsonl")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("audit file mode %v, want 0600", fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var outcomes []string
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		if ev["log"] != "audit" {
			t.Fatalf("audit event without log=audit: %v", ev)
		}
		if ev["msg"] == "exchange" {
			outcomes = append(outcomes, ev["outcome"].(string))
		}
	}
	if strings.Join(outcomes, ",") != "issued,refused" {
		t.Fatalf("audit file outcomes %v:\n%s", outcomes, data)
	}
	for name, secret := range map[string]string{"a JWT (eyJ)": "eyJ", "the minted token": minted, "the subject token": subject, "the refused token": refusedSubject} {
		if secret == "" || strings.Contains(string(data), secret) {
			t.Fatalf("audit file contains %s:\n%s", name, data)
		}
	}
	if s := appLog.String(); strings.Contains(s, `"msg":"exchange"`) || strings.Contains(s, `"log":"audit"`) || strings.Contains(s, "eyJ") {
		t.Fatalf("audit events leaked into the application log:\n%s", s)
	}
}

func TestAuditSinkReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	sink, err := OpenAuditSink(path, true)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sink.Watch(ctx, 5*time.Millisecond, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	}()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	defer stop()

	if _, err := sink.Write([]byte("one\n")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the audit file was not reopened after rotation")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := sink.Write([]byte("two\n")); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{path + ".1": "one\n", path: "two\n"} {
		got, err := os.ReadFile(file)
		if err != nil || string(got) != want {
			t.Fatalf("%s: %q %v, want %q", file, got, err, want)
		}
	}
	if sink.moved() {
		t.Fatal("reopened file reported as moved")
	}
	// A removed file is recreated too.
	stop()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if !sink.moved() {
		t.Fatal("removed file not reported as moved")
	}
	if err := sink.Reopen(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("recreated file: %v %v", fi, err)
	}
}

func TestAuditConfig(t *testing.T) {
	cfg, err := Parse("/etc/sts/sts.yaml", []byte(goodConfig+"audit: {path: /var/log/sts/audit.jsonl, fsync: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Audit.Path != "/var/log/sts/audit.jsonl" || !cfg.Audit.Fsync || cfg.Audit.OnFailure != AuditFailClosed {
		t.Fatalf("audit %+v (on_failure defaults to fail_closed)", cfg.Audit)
	}
	if cfg, err := Parse("sts.yaml", []byte(goodConfig+"audit: {on_failure: continue}\n")); err != nil || cfg.Audit.OnFailure != AuditContinue {
		t.Fatalf("on_failure continue: %+v %v", cfg, err)
	}
	if _, err := Parse("sts.yaml", []byte(goodConfig+"audit: {on_failure: ignore}\n")); err == nil || !strings.Contains(err.Error(), "audit.on_failure") {
		t.Fatalf("on_failure ignore: %v", err)
	}
	if _, err := Parse("sts.yaml", []byte(goodConfig+"audit: {fsync: true}\n")); err == nil || !strings.Contains(err.Error(), "audit.fsync") {
		t.Fatalf("fsync without path: %v", err)
	}
	if _, err := Parse("sts.yaml", []byte(goodConfig+"audit: {file: x}\n")); err == nil {
		t.Fatal("unknown audit key accepted")
	}
}
