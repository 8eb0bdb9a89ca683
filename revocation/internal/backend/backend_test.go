package backend

import "testing"

// TestAppendHash: the bucket hash built from bytes is the one built from the
// string (stores file and find entries by either).
func TestAppendHash(t *testing.T) {
	for _, s := range []string{"", "sub=a", "aud=https://ledger.internal", "attr.ns=\xff"} {
		if got := string(AppendHash([]byte("p:"), []byte(s))); got != "p:"+Hash(s) {
			t.Errorf("AppendHash(%q) = %q, want p:%s", s, got, Hash(s))
		}
	}
}
