package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/issuer"
)

// TestE2EKeyFilePermissions: a signing key others can read (0644) stops both `sts
// check-config` and `sts serve`, with a message naming the file and the fix; the
// same key at 0600 passes and serves.
func TestE2EKeyFilePermissions(t *testing.T) {
	e := setup(t, "")
	keyDir := e.path("keys")
	if err := os.Mkdir(keyDir, 0o755); err != nil {
		t.Fatal(err)
	}
	res, err := issuer.RotateKey(keyDir, jose.ES256, time.Now().Add(-time.Minute), true)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(res.File, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"check-config", "--config", e.cfg}, {"serve", "--config", e.cfg}} {
		out := runBin(t, 1, "sts", args...)
		for _, want := range []string{res.File, "mode 0644", "chmod 600 " + res.File} {
			if !strings.Contains(out, want) {
				t.Errorf("sts %s with a 0644 key: output lacks %q:\n%s", args[0], want, out)
			}
		}
	}
	if err := os.Chmod(res.File, 0o600); err != nil {
		t.Fatal(err)
	}
	if out := runBin(t, 0, "sts", "check-config", "--config", e.cfg); !strings.Contains(out, ": ok") {
		t.Fatalf("check-config with a 0600 key:\n%s", out)
	}
	e.start()
	if r, err := e.exchange(e.a.Token(t, payments)); err != nil || !strings.Contains(r.AccessToken, ".") {
		t.Fatalf("exchange with a 0600 key: %+v, %v", r, err)
	}
}

// TestE2EKeysRevokeKnownKidsOnly: with the real binaries, stsctl keys revoke with a
// truncated kid (what a key file name shows) fails with the STS's 404 and the full
// kid, where it used to record an entry that revokes nothing; stsctl keys list
// shows the full kids, the key an emergency rotation deleted included, and that
// key stays revocable after a restart.
func TestE2EKeysRevokeKnownKidsOnly(t *testing.T) {
	e := setup(t, "")
	corp := e.addCorp("")
	e.write("policy.yaml", e2ePolicy+`admin:
  - name: key-admins
    upstreams: [corp]
    subjects: ["alice@example.com"]
    actions: [rotate_keys]
    within_upstreams: ["*"]
`)
	e.write("admin.jwt", corp.Token(t, "alice@example.com"))
	e.start()
	keyDir := e.path("keys")
	admin := []string{"--sts", e.url, "--cacert", e.caFile, "--token-file", e.path("admin.jwt")}

	list := runBin(t, 0, "stsctl", "keys", "list", "--key-dir", keyDir)
	f := strings.Fields(strings.Split(list, "\n")[1])
	if len(f) < 2 || f[1] != "active" || len(f[0]) != 43 {
		t.Fatalf("keys list:\n%s", list)
	}
	old := f[0]
	out := runBin(t, 1, "stsctl", append([]string{"keys", "revoke", "--kid", old[:8]}, admin...)...)
	for _, want := range []string{"NOT revoked", "404 unknown_kid", "looks truncated", old} {
		if !strings.Contains(out, want) {
			t.Errorf("keys revoke with a truncated kid: output lacks %q:\n%s", want, out)
		}
	}
	runBin(t, 0, "stsctl", append([]string{"keys", "rotate", "--key-dir", keyDir, "--emergency"}, admin...)...)
	if list := runBin(t, 0, "stsctl", "keys", "list", "--key-dir", keyDir); !strings.Contains(list, old+"  removed") {
		t.Errorf("keys list after the emergency rotation:\n%s", list)
	}

	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	e.start()
	if out := runBin(t, 0, "stsctl", append([]string{"keys", "revoke", "--kid", old}, admin...)...); !strings.Contains(out, `"selector": "kid=`+old+`"`) {
		t.Errorf("revoking the deleted key after a restart:\n%s", out)
	}
}
