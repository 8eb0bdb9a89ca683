//go:build cgo

package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/internal/stsclient"
	"github.com/safeconduct/safeconduct/internal/testhsm"
)

// TestE2EPKCS11 runs the real sts and stsctl binaries with their signing keys
// in a SoftHSM2 token: a wrong PIN and a readable PIN file stop the start, the
// first key is generated in the token (key_dir holds only its reference and the
// kid registry), a minted token verifies with go-oidc against the STS's JWKS,
// and `stsctl keys rotate --config` stages then (emergency) switches to new
// token keys that the running STS publishes and signs with.
func TestE2EPKCS11(t *testing.T) {
	th := testhsm.New(t, "sts") // SOFTHSM2_CONF reaches the binaries through the environment
	e := setup(t, "")
	cfg, err := os.ReadFile(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.write("sts.yaml", strings.Replace(string(cfg), "signing: {algorithm: ES256, key_dir: keys}",
		"signing: {algorithm: ES256, key_dir: keys, pkcs11: {module: "+th.Module+", token_label: sts, key_label: sts-signing, pin_file: hsm-pin}}", 1))

	e.write("hsm-pin", "not-the-pin\n")
	if out := runBin(t, 1, "sts", "check-config", "--config", e.cfg); !strings.Contains(out, "signing.pkcs11") || strings.Contains(out, "not-the-pin") {
		t.Fatalf("check-config with a wrong PIN:\n%s", out)
	}
	e.write("hsm-pin", th.PIN+"\n")
	if err := os.Chmod(e.path("hsm-pin"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := runBin(t, 1, "sts", "check-config", "--config", e.cfg); !strings.Contains(out, "chmod 600") {
		t.Fatalf("check-config with a 0644 PIN file:\n%s", out)
	}
	if err := os.Chmod(e.path("hsm-pin"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.start()

	keyDir := e.path("keys")
	refs, _ := filepath.Glob(filepath.Join(keyDir, "*.pkcs11"))
	pems, _ := filepath.Glob(filepath.Join(keyDir, "*.pem"))
	if len(refs) != 1 || len(pems) != 0 {
		t.Fatalf("key_dir holds references %v and key files %v", refs, pems)
	}
	first := e.mintedKid(t)
	if jwks := e.jwksKids(t); !slices.Equal(jwks, []string{first}) {
		t.Fatalf("JWKS %v, token kid %s", jwks, first)
	}
	// pkcs11-tool (OpenSC), another PKCS#11 client, sees the key as the token keeps
	// it: sensitive, never extractable.
	if objs := th.Tool(t, "--list-objects", "--type", "privkey"); !strings.Contains(objs, "sts-signing") || !strings.Contains(objs, "never extractable") {
		t.Fatalf("token objects:\n%s", objs)
	}

	// Staged rotation: the new token key is published at the next reload, the
	// old one keeps signing.
	out := runBin(t, 0, "stsctl", "keys", "rotate", "--config", e.cfg)
	if !strings.Contains(out, ".pkcs11") {
		t.Fatalf("keys rotate:\n%s", out)
	}
	if err := e.proc.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(e.jwksKids(t)) == 2 })
	if kid := e.mintedKid(t); kid != first {
		t.Fatalf("after a staged rotation the token is signed by %s, want %s", kid, first)
	}
	if list := runBin(t, 0, "stsctl", "keys", "list", "--config", e.cfg); !strings.Contains(list, "staged") || !strings.Contains(list, first+"  active") {
		t.Fatalf("keys list:\n%s", list)
	}

	// Emergency rotation: a new token key signs now, the old one leaves the JWKS.
	out = runBin(t, 0, "stsctl", "keys", "rotate", "--config", e.cfg, "--emergency")
	if !strings.Contains(out, "stays in the PKCS#11 token") {
		t.Fatalf("emergency rotation:\n%s", out)
	}
	if err := e.proc.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return !slices.Contains(e.jwksKids(t), first) })
	if kid := e.mintedKid(t); kid == first || !slices.Contains(e.jwksKids(t), kid) {
		t.Fatalf("after an emergency rotation the token is signed by %s (old %s, JWKS %v)", kid, first, e.jwksKids(t))
	}
	if strings.Contains(e.log.String(), th.PIN) {
		t.Fatal("the PIN is in the log")
	}
}

// mintedKid exchanges a token, verifies it with go-oidc against the STS's
// discovery and JWKS, and returns the kid it was signed with.
func (e *e2e) mintedKid(t *testing.T) string {
	t.Helper()
	resp, err := e.exchange(e.a.Token(t, payments))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stsclient.Verify(context.Background(), e.client, e.url, ledger, resp.AccessToken); err != nil {
		t.Fatalf("go-oidc rejects a token signed in the HSM: %v", err)
	}
	jws, err := jose.ParseSignedCompact(resp.AccessToken, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	return jws.Signatures[0].Header.KeyID
}

// jwksKids are the kids the STS publishes.
func (e *e2e) jwksKids(t *testing.T) []string {
	t.Helper()
	resp, err := e.client.Get(e.url + "/jwks")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.KeyID)
	}
	return kids
}
