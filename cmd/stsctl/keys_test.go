package main

import (
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/issuer"
)

const testAdminToken = "admin-token"

// fakeKeyAdmin is the STS's POST /admin/v1/keys/revoke over TLS: it records the
// kids asked for, and answers 201 with an entry or, while failing is set, 409.
type fakeKeyAdmin struct {
	srv    *httptest.Server
	cacert string

	mu      sync.Mutex
	kids    []string
	reasons []string
	failing bool
}

func newFakeKeyAdmin(t *testing.T) *fakeKeyAdmin {
	t.Helper()
	f := &fakeKeyAdmin{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /admin/v1/keys/revoke", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		var req struct{ Kid, Reason string }
		if r.Header.Get("Authorization") != "Bearer "+testAdminToken || json.NewDecoder(r.Body).Decode(&req) != nil {
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_token", "error_description": "bad credential or body"})
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.failing {
			w.WriteHeader(http.StatusConflict)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "key_in_use", "error_description": "key " + req.Kid + " signs this STS's new tokens: rotate first"})
			return
		}
		f.kids, f.reasons = append(f.kids, req.Kid), append(f.reasons, req.Reason)
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]any{"id": "E1", "kind": "revoke", "selector": "kid=" + req.Kid, "reason": req.Reason,
			"created": time.Now().UnixMilli(), "expires": time.Now().Add(2 * time.Hour).UnixMilli()})
	})
	f.srv = httptest.NewTLSServer(mux)
	t.Cleanup(f.srv.Close)
	f.cacert = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(f.cacert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fakeKeyAdmin) revoked() ([]string, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.kids...), append([]string(nil), f.reasons...)
}

func (f *fakeKeyAdmin) setFailing(v bool) {
	f.mu.Lock()
	f.failing = v
	f.mu.Unlock()
}

// keyDirWithKey is a key_dir holding one key, signing now; it returns the dir
// and the key's kid.
func keyDirWithKey(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	res, err := issuer.RotateKey(dir, jose.ES256, time.Now().Add(-time.Hour), true)
	if err != nil {
		t.Fatal(err)
	}
	return dir, res.KeyID
}

func pemFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// shellSplit splits a command line as a POSIX shell would for what shellQuote
// writes: words separated by spaces, single-quoted runs kept literal, a backslash
// outside quotes escaping the next character.
func shellSplit(t *testing.T, line string) []string {
	t.Helper()
	var words []string
	var cur strings.Builder
	inWord, quoted, escaped := false, false, false
	for _, r := range line {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case !quoted && r == '\\':
			escaped, inWord = true, true
		case quoted && r == '\'':
			quoted = false
		case quoted:
			cur.WriteRune(r)
		case r == '\'':
			quoted, inWord = true, true
		case r == ' ':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quoted {
		t.Fatalf("unterminated quote in %q", line)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// newKeyID is the kid of "new key KID (FILE) ..." in the output of keys rotate.
func newKeyID(t *testing.T, out string) string {
	t.Helper()
	_, rest, ok := strings.Cut(out, "new key ")
	kid, _, ok2 := strings.Cut(rest, " ")
	if !ok || !ok2 || kid == "" {
		t.Fatalf("no new key in:\n%s", out)
	}
	return kid
}

// retryLine is the indented stsctl keys revoke command line in out.
func retryLine(t *testing.T, out string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "    stsctl keys revoke ") {
			return strings.TrimSpace(l)
		}
	}
	t.Fatalf("no retry command in:\n%s", out)
	return ""
}

func TestKeysRotateEmergencyRevokes(t *testing.T) {
	sts := newFakeKeyAdmin(t)
	dir, old := keyDirWithKey(t)
	tokenFile := filepath.Join(t.TempDir(), "admin.jwt")
	if err := os.WriteFile(tokenFile, []byte(testAdminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := stsctl(t, 0, "keys", "rotate", "--key-dir", dir, "--emergency", "--sts", sts.srv.URL, "--token-file", tokenFile, "--cacert", sts.cacert)
	kids, reasons := sts.revoked()
	if len(kids) != 1 || kids[0] != old || !strings.Contains(reasons[0], old) {
		t.Fatalf("revoked %q (reasons %q), want the old key %s\n%s", kids, reasons, old, out)
	}
	if !strings.Contains(out, "revoked every token signed by the old key "+old) || !strings.Contains(out, "entry E1") {
		t.Errorf("output does not say what was revoked:\n%s", out)
	}
	if files := pemFiles(t, dir); len(files) != 1 || strings.Contains(files[0], old[:8]) {
		t.Errorf("key files after the rotation: %v", files)
	}
	current := newKeyID(t, out)

	// The call fails: exit 1, a loud NOT revoked, and the exact command to retry,
	// which then works.
	sts.setFailing(true)
	var stdout, stderr strings.Builder
	code := run([]string{"keys", "rotate", "--key-dir", dir, "--emergency", "--sts", sts.srv.URL, "--token-file", tokenFile,
		"--cacert", sts.cacert, "--reason", "incident 7: it's leaked"}, strings.NewReader(""), &stdout, &stderr)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", code, stdout.String(), stderr.String())
	}
	if !strings.Contains(stderr.String(), "ARE NOT REVOKED") || !strings.Contains(stderr.String(), "409 key_in_use") ||
		!strings.Contains(stderr.String(), "do NOT rotate again") {
		t.Errorf("the failure is not loud enough:\n%s", stderr.String())
	}
	words := shellSplit(t, retryLine(t, stderr.String()))
	if len(words) < 3 || words[0] != "stsctl" {
		t.Fatalf("retry command %q", words)
	}
	for _, want := range []string{"--kid", current, "--token-file", tokenFile, "--cacert", sts.cacert, "--sts", sts.srv.URL, "incident 7: it's leaked"} {
		found := false
		for _, w := range words {
			found = found || w == want
		}
		if !found {
			t.Errorf("retry command %q lacks %q", words, want)
		}
	}
	sts.setFailing(false)
	out = stsctl(t, 0, words[1:]...)
	if kids, reasons := sts.revoked(); len(kids) != 2 || kids[1] != current || reasons[1] != "incident 7: it's leaked" {
		t.Fatalf("the retry revoked %q (%q), want %s\n%s", kids, reasons, current, out)
	}
	if !strings.Contains(out, `"selector": "kid=`+current+`"`) {
		t.Errorf("keys revoke output:\n%s", out)
	}

	// The STS cannot be reached at all: the same loud failure.
	sts.srv.Close()
	stdout.Reset()
	stderr.Reset()
	if code := run([]string{"keys", "rotate", "--key-dir", dir, "--emergency", "--sts", sts.srv.URL, "--token-file", tokenFile,
		"--cacert", sts.cacert, "--timeout", "2s"}, strings.NewReader(""), &stdout, &stderr); code != 1 ||
		!strings.Contains(stderr.String(), "ARE NOT REVOKED") {
		t.Errorf("unreachable STS: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
}

func TestKeysRotateEmergencyWithoutSTS(t *testing.T) {
	dir, old := keyDirWithKey(t)
	out := stsctl(t, 0, "keys", "rotate", "--key-dir", dir, "--emergency")
	if !strings.Contains(out, "are NOT revoked") {
		t.Errorf("output does not warn:\n%s", out)
	}
	words := shellSplit(t, retryLine(t, out))
	want := []string{"stsctl", "keys", "revoke", "--sts", "https://STS", "--kid", old, "--token-file", "ADMIN_TOKEN_FILE", "--reason"}
	if len(words) != len(want)+1 || strings.Join(words[:len(want)], " ") != strings.Join(want, " ") {
		t.Errorf("command to run %q, want %q REASON", words, want)
	}
	// A staged rotation revokes nothing and prints no such command.
	out = stsctl(t, 0, "keys", "rotate", "--key-dir", dir)
	if strings.Contains(out, "keys revoke") {
		t.Errorf("staged rotation output:\n%s", out)
	}
}

func TestKeysRotateUsage(t *testing.T) {
	dir, _ := keyDirWithKey(t)
	before := pemFiles(t, dir)
	tokenFile := filepath.Join(t.TempDir(), "admin.jwt")
	os.WriteFile(tokenFile, []byte(testAdminToken), 0o600)
	for _, args := range [][]string{
		{"keys", "rotate", "--key-dir", dir, "--sts", "https://sts.example", "--token-file", tokenFile},                                // not --emergency
		{"keys", "rotate", "--key-dir", dir, "--emergency", "--sts", "https://sts.example"},                                            // no credential
		{"keys", "rotate", "--key-dir", dir, "--emergency", "--token-file", tokenFile},                                                 // no --sts
		{"keys", "rotate", "--key-dir", dir, "--emergency", "--sts", "https://sts.example", "--token-file", tokenFile, "--token", "x"}, // two credentials
		{"keys", "revoke", "--sts", "https://sts.example", "--token-file", tokenFile},                                                  // no --kid
		{"keys", "revoke", "--kid", "k"}, // no --sts
		{"keys", "nope"},
	} {
		stsctl(t, 2, args...)
	}
	// A credential that cannot be read fails before anything is rotated.
	stsctl(t, 1, "keys", "rotate", "--key-dir", dir, "--emergency", "--sts", "https://sts.example", "--token-file", filepath.Join(dir, "missing.jwt"))
	if after := pemFiles(t, dir); strings.Join(after, " ") != strings.Join(before, " ") {
		t.Errorf("refused invocations changed the keys: %v -> %v", before, after)
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"plain-kid_1":       "plain-kid_1",
		"https://sts:8443/": "https://sts:8443/",
		"@/tmp/a.jwt":       "@/tmp/a.jwt",
		"two words":         "'two words'",
		"it's":              `'it'\''s'`,
		"":                  "''",
		"$HOME;rm":          "'$HOME;rm'",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestKeysList: keys list prints every kid in full (file names show 8
// characters, the revoke endpoint takes nothing shorter) with its state,
// including a key an emergency rotation deleted, which stays revocable.
func TestKeysList(t *testing.T) {
	dir, removed := keyDirWithKey(t)
	active := newKeyID(t, stsctl(t, 0, "keys", "rotate", "--key-dir", dir, "--emergency"))
	staged := newKeyID(t, stsctl(t, 0, "keys", "rotate", "--key-dir", dir))
	out := stsctl(t, 0, "keys", "list", "--key-dir", dir)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "KID ") {
		t.Fatalf("keys list:\n%s", out)
	}
	for i, want := range [][]string{
		{removed, "removed", "still revocable"},
		{active, "active", "ES256", "key-"},
		{staged, "staged", "ES256", "key-"},
	} {
		f := strings.Fields(lines[i+1])
		if len(f) < 3 || f[0] != want[0] || f[1] != want[1] || !strings.Contains(lines[i+1], want[2]) {
			t.Errorf("line %d: %q, want %q", i+1, lines[i+1], want)
		}
	}
	// A key file others can read is named, after what could be read.
	if err := os.Chmod(pemFiles(t, dir)[0], 0o644); err != nil {
		t.Fatal(err)
	}
	if out := stsctl(t, 1, "keys", "list", "--key-dir", dir); !strings.Contains(out, "chmod 600") || !strings.Contains(out, removed) {
		t.Errorf("keys list with a 0644 key:\n%s", out)
	}
	stsctl(t, 2, "keys", "list")
	stsctl(t, 1, "keys", "list", "--key-dir", filepath.Join(dir, "missing"))
}
