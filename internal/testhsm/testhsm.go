// Package testhsm creates private SoftHSM2 tokens for tests: a real PKCS#11
// module (Debian's softhsm2), each token in its own temporary directory.
package testhsm

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Token is an initialised SoftHSM2 token.
type Token struct {
	// Module is the PKCS#11 library path.
	Module string
	// Label is the token label; PIN its user PIN, also in PINFile (mode 0600).
	Label, PIN, PINFile string
	// Conf is the SOFTHSM2_CONF file that locates the token; New sets the
	// variable for the test (and the processes it starts).
	Conf string
}

// Modules are where Debian and others install the SoftHSM2 module.
var Modules = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
}

// Module returns the SoftHSM2 module and softhsm2-util, or skips t (fails it
// when CI=true: .ci/run installs softhsm2).
func Module(t testing.TB) (module, util string) {
	t.Helper()
	util, err := exec.LookPath("softhsm2-util")
	for _, m := range Modules {
		if _, serr := os.Stat(m); serr == nil && err == nil {
			return m, util
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("softhsm2 is not installed (apt-get install softhsm2; .ci/run does it)")
	}
	t.Skip("softhsm2 is not installed (apt-get install softhsm2)")
	return "", ""
}

// New initialises a token labelled label in a temporary directory and points
// SOFTHSM2_CONF at it for the rest of t (t.Setenv: t must not be parallel).
func New(t testing.TB, label string) *Token {
	t.Helper()
	module, util := Module(t)
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.WriteFile(conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	tok := &Token{Module: module, Label: label, PIN: "4711-pin", Conf: conf, PINFile: filepath.Join(dir, "pin")}
	out, err := exec.Command(util, "--init-token", "--free", "--label", label, "--pin", tok.PIN, "--so-pin", "so-4711").CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
	if err := os.WriteFile(tok.PINFile, []byte(tok.PIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return tok
}

// Tool runs pkcs11-tool (OpenSC) against the token, logged in, or skips t when
// pkcs11-tool is missing (fails it when CI=true).
func (tok *Token) Tool(t testing.TB, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("pkcs11-tool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("pkcs11-tool is not installed (apt-get install opensc; .ci/run does it)")
		}
		t.Skip("pkcs11-tool is not installed (apt-get install opensc)")
	}
	args = append([]string{"--module", tok.Module, "--token-label", tok.Label, "--login", "--pin", tok.PIN}, args...)
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("pkcs11-tool %v: %v\n%s", args, err, out)
	}
	return string(out)
}
