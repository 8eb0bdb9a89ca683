package issuer

import (
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

func TestKeyModeProblem(t *testing.T) {
	const sts, other = 65532, 1000
	inGroup := func(g uint32) bool { return g == sts }
	for _, c := range []struct {
		perm     fs.FileMode
		uid, gid uint32
		ok       bool
	}{
		{0o600, sts, sts, true},
		{0o400, sts, sts, true},
		{0o440, 0, sts, true}, // a Kubernetes Secret volume with fsGroup
		{0o640, 0, sts, true},
		{0o644, sts, sts, false},
		{0o604, sts, sts, false},
		{0o601, sts, sts, false},
		{0o440, sts, sts, false}, // group read on a file the STS owns
		{0o440, 0, other, false}, // a group the STS is not in
		{0o460, 0, sts, false},   // group write
		{0o610, sts, sts, false},
		{0o444, 0, sts, false},
	} {
		if got := keyModeProblem(c.perm, c.uid, c.gid, inGroup); (got == "") != c.ok {
			t.Errorf("mode %04o owner %d:%d: %q, want ok=%v", c.perm, c.uid, c.gid, got, c.ok)
		}
	}
}

// TestKeyFilePermissionsOnReload: a key that turns readable by others while the
// STS runs is refused at the next reload (the last good keys keep serving), and
// `stsctl keys rotate` refuses to work beside it.
func TestKeyFilePermissionsOnReload(t *testing.T) {
	dir := t.TempDir()
	clock := &keyClock{t: t0}
	s := keyServer(t, dir, clock, 10*time.Minute)
	res, err := RotateKey(dir, jose.ES256, clock.Now(), false)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(res.File, 0o644); err != nil {
		t.Fatal(err)
	}
	err = s.ReloadKeys()
	if err == nil || !strings.Contains(err.Error(), "chmod 600 "+res.File) {
		t.Fatalf("reload with a 0644 key: %v", err)
	}
	if set, _ := getJWKS(t, s); len(set.Keys) != 1 {
		t.Errorf("a 0644 key was published: %v", kids(set))
	}
	if _, err := RotateKey(dir, jose.ES256, clock.Now(), false); err == nil || !strings.Contains(err.Error(), "mode 0644") {
		t.Errorf("rotating beside a 0644 key: %v", err)
	}
	if err := os.Chmod(res.File, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.ReloadKeys(); err != nil {
		t.Fatal(err)
	}
	if set, _ := getJWKS(t, s); len(set.Keys) != 2 {
		t.Errorf("after chmod 600: %v", kids(set))
	}
}
