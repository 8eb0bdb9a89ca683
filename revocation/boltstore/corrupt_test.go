package boltstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/safeconduct/safeconduct/revocation"
)

// corruptPage overwrites one page of a bbolt file with garbage, as a bad disk
// or a torn copy would: the freelist page or the root bucket's page, as named by
// the newer meta page.
func corruptPage(t *testing.T, path, which string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A page starts with a 16-byte header; a meta page then has magic, version,
	// page size, flags (4 bytes each), the root bucket (root pgid, sequence),
	// the freelist pgid, the high-water pgid, the txid and a checksum (8 each).
	pageSize := int(binary.LittleEndian.Uint32(b[16+8:]))
	meta := 0
	if binary.LittleEndian.Uint64(b[pageSize+16+48:]) > binary.LittleEndian.Uint64(b[16+48:]) {
		meta = pageSize
	}
	off := map[string]int{"root": 16 + 16, "freelist": 16 + 32}[which]
	pg := int(binary.LittleEndian.Uint64(b[meta+off:]))
	if pg < 2 || (pg+1)*pageSize > len(b) {
		t.Fatalf("%s page %d out of the file", which, pg)
	}
	t.Logf("corrupting %s page %d (meta at %d, size %d, file %d)", which, pg, meta, pageSize, len(b))
	for i := pg * pageSize; i < (pg+1)*pageSize; i++ {
		b[i] = byte(i*7 + 13)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCorruptPages: bbolt panics on corrupt pages; Open must return ErrCorrupt
// naming the file and what to do, not panic.
func TestCorruptPages(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rev.db")
	s := open(t, path, Options{JanitorInterval: -1})
	for i := range 200 {
		if _, err := s.Create(t.Context(), revocation.Entry{Kind: revocation.KindRevoke, Selector: fmt.Sprintf("sub=w%03d", i), Reason: strings.Repeat("r", 100), Actor: "a"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, which := range []string{"root", "freelist"} {
		t.Run(which, func(t *testing.T) {
			if err := os.WriteFile(path, good, 0o600); err != nil {
				t.Fatal(err)
			}
			corruptPage(t, path, which)
			s, err := Open(path, Options{JanitorInterval: -1})
			if err == nil {
				_ = s.Close()
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "backup") {
				t.Fatalf("Open of a corrupt file = %v; want ErrCorrupt naming %s and what to do", err, path)
			}
		})
	}
}
