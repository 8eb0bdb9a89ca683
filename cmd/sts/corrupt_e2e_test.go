package main

import (
	"encoding/binary"
	"os"
	"strings"
	"testing"
)

// TestE2ECorruptStore: a corrupt page in the bbolt file stops `sts serve` with a
// clear error naming the file, a non-zero exit, and no panic.
func TestE2ECorruptStore(t *testing.T) {
	e := setup(t, "")
	e.start()
	if _, err := e.exchange(e.a.Token(t, payments)); err != nil {
		t.Fatal(err)
	}
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	db := e.path("data/revocation.db")
	b, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	// The root bucket's page, as named by the newer meta page (pages 0 and 1;
	// page size at 16+8, root pgid at 16+16, txid at 16+48).
	size := int(binary.LittleEndian.Uint32(b[24:]))
	meta := 0
	if binary.LittleEndian.Uint64(b[size+64:]) > binary.LittleEndian.Uint64(b[64:]) {
		meta = size
	}
	root := int(binary.LittleEndian.Uint64(b[meta+32:]))
	for i := root * size; i < (root+1)*size; i++ {
		b[i] = byte(i*7 + 13)
	}
	if err := os.WriteFile(db, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out := runBin(t, 1, "sts", "serve", "--config", e.cfg)
	if !strings.Contains(out, db) || !strings.Contains(out, "corrupt") || strings.Contains(out, "panic") || strings.Contains(out, "goroutine") {
		t.Fatalf("want a clear error naming %s, no panic:\n%s", db, out)
	}
}
