package issuer

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/revocation"
)

// TestStatusListNodeInterop reads the STS's lists with implementations nobody
// here wrote: npm @sd-jwt/jwt-status-list 0.19.0 (status reference, decoding)
// and jose (signature against the JWKS), pinned by interop/node/package-lock.json
// and installed by scripts/interop-install.sh (.ci/run runs it). Without node or the
// packages the test skips, except in CI (CI=true), where it fails.
func TestStatusListNodeInterop(t *testing.T) {
	dir, err := filepath.Abs("../interop/node")
	if err != nil {
		t.Fatal(err)
	}
	node, err := exec.LookPath("node")
	_, modErr := os.Stat(filepath.Join(dir, "node_modules", "@sd-jwt", "jwt-status-list"))
	if err != nil || modErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("node (%v) or the interop packages (%v) missing: run scripts/interop-install.sh", err, modErr)
		}
		t.Skip("node or interop/node/node_modules missing (run scripts/interop-install.sh); CI=true makes this a failure")
	}
	ts := startSTS(t, stsOptions{extra: "status_lists: {ttl: 2s}\n"})
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.hs.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	check := func(tok string) map[string]any {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, node, "check.mjs", ts.url, tok)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "NODE_EXTRA_CA_CERTS="+ca)
		out, err := cmd.Output()
		if err != nil {
			stderr := ""
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			t.Fatalf("node check.mjs: %v: %s", err, stderr)
		}
		var res map[string]any
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("node output %q: %v", out, err)
		}
		return res
	}
	r := ts.post(t, ts.form(ts.a.Token(t, payments)))
	if r.status != 200 {
		t.Fatalf("exchange: %d %s", r.status, r.raw)
	}
	tok := r.body["access_token"].(string)
	uri, idx := statusRef(t, tok)
	res := check(tok)
	if res["status"] != float64(0) || res["uri"] != uri || res["idx"] != float64(idx) || res["kid"] != ts.srv.ActiveKeyID() {
		t.Fatalf("node read %v, want status 0 at %s[%d]", res, uri, idx)
	}
	jti := decodeSegment(t, tok, 1)["jti"].(string)
	if _, err := ts.srv.core.store.Create(context.Background(), revocation.Entry{Kind: revocation.KindRevoke, Selector: "jti=" + jti, Reason: "interop", Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, ts, uri, idx, revocation.StatusInvalid)
	if res := check(tok); res["status"] != float64(1) {
		t.Fatalf("node read %v after the revoke, want status 1", res)
	}

}

// TestStatusListPythonExample runs the README's Python example
// (examples/statuslist/check.py, PyJWT) against a real STS, before and after a
// revoke. It needs a Python with PyJWT[crypto] (SAFECONDUCT_PYTHON, default
// python3) and skips without one: the example is documentation, CI has no PyJWT.
func TestStatusListPythonExample(t *testing.T) {
	py := os.Getenv("SAFECONDUCT_PYTHON")
	if py == "" {
		py = "python3"
	}
	if err := exec.Command(py, "-c", "import jwt, cryptography").Run(); err != nil {
		t.Skipf("%s with PyJWT[crypto] not available (set SAFECONDUCT_PYTHON): %v", py, err)
	}
	script, err := filepath.Abs("../examples/statuslist/check.py")
	if err != nil {
		t.Fatal(err)
	}
	ts := startSTS(t, stsOptions{extra: "status_lists: {ttl: 2s}\n"})
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.hs.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(tok string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, py, script, ts.url, ledger, tok)
		cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+ca)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	r := ts.post(t, ts.form(ts.a.Token(t, payments)))
	if r.status != 200 {
		t.Fatalf("exchange: %d %s", r.status, r.raw)
	}
	tok := r.body["access_token"].(string)
	if out, err := run(tok); err != nil {
		t.Fatalf("python example refuses a fresh token: %v\n%s", err, out)
	}
	uri, idx := statusRef(t, tok)
	jti := decodeSegment(t, tok, 1)["jti"].(string)
	if _, err := ts.srv.core.store.Create(context.Background(), revocation.Entry{Kind: revocation.KindRevoke, Selector: "jti=" + jti, Reason: "example", Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, ts, uri, idx, revocation.StatusInvalid)
	out, err := run(tok)
	if err == nil || !strings.Contains(out, "revoked") {
		t.Fatalf("python example after the revoke: %v\n%s", err, out)
	}
}
