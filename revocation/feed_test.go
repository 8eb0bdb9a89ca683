package revocation

import (
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValidCursor(t *testing.T) {
	for _, tc := range []struct {
		cursor string
		want   bool
	}{
		{"", true},
		{"1700000000000-0", true},
		{"!~", true},
		{strings.Repeat("a", MaxCursorLength), true},
		{strings.Repeat("a", MaxCursorLength+1), false},
		{"a b", false},
		{"a\tb", false},
		{"a\r\nInjected: x", false},
		{"a\x00", false},
		{"a\x7f", false},
		{"é", false},
	} {
		if got := ValidCursor(tc.cursor); got != tc.want {
			t.Errorf("ValidCursor(%.20q) = %v, want %v", tc.cursor, got, tc.want)
		}
	}
}

// A valid cursor is safe to send back: it survives a header and a query
// parameter unchanged.
func FuzzValidCursor(f *testing.F) {
	for _, s := range []string{"", "0", "1700000000000-0", "a b", "\r\n", "é", strings.Repeat("z", MaxCursorLength+1)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, c string) {
		if !ValidCursor(c) {
			return
		}
		if len(c) > MaxCursorLength || !utf8.ValidString(c) || strings.ContainsAny(c, " \r\n\t\x00") {
			t.Fatalf("ValidCursor(%q) accepted", c)
		}
		h := http.Header{}
		h.Set(LastEventIDHeader, c)
		if got := h.Get(LastEventIDHeader); got != c {
			t.Fatalf("header round trip %q -> %q", c, got)
		}
	})
}
