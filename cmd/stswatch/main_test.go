package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckConfig: the binary validates a configuration without running it; a bad
// one exits 1 naming every problem, a good one exits 0.
func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte("sts: {url: https://sts.example, credential_file: token}\nstate_dir: state\n"+
		"spire: {server_socket: /run/spire/api.sock, upstream: spire}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("sts: {url: http://sts.example}\nspire: {upstream: spire}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(binDir, "stswatch"), "check-config", "--config", good).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "configuration OK") {
		t.Fatalf("good config: %v\n%s", err, out)
	}
	out, err = exec.Command(filepath.Join(binDir, "stswatch"), "check-config", "--config", bad).CombinedOutput()
	if err == nil || !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("bad config: %v\n%s", err, out)
	}
	for _, want := range []string{"sts.url must be https", "sts.credential_file is required", "state_dir is required", "spire.server_socket is required"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
