package config

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestIdentityFile: the identity file defaults to <embedded.path>.id beside the
// bbolt file, to none (memory only) for Redis, and resolves against the config
// file's directory when set.
func TestIdentityFile(t *testing.T) {
	dir := t.TempDir()
	load := func(edit func(string) string) *Config {
		t.Helper()
		cfg, err := Parse(filepath.Join(dir, "sts.yaml"), []byte(edit(goodConfig)))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	same := func(s string) string { return s }
	if got, want := load(same).identityFile(), filepath.Join(dir, "data/revocation.db.id"); got != want {
		t.Fatalf("embedded default: %s, want %s", got, want)
	}
	redis := func(s string) string { return strings.Replace(s, "backend: embedded", "backend: redis", 1) }
	if got := load(redis).identityFile(); got != "" {
		t.Fatalf("redis default: %q, want none", got)
	}
	set := func(s string) string {
		return strings.Replace(redis(s), "  redis:", "  identity_file: state/rev.id\n  redis:", 1)
	}
	if got, want := load(set).identityFile(), filepath.Join(dir, "state/rev.id"); got != want {
		t.Fatalf("set: %s, want %s", got, want)
	}
	if name := load(set).storeName(); name != "redis 127.0.0.1:6379" {
		t.Fatalf("store name %q", name)
	}
}
