package confcheck

import (
	"fmt"
	"strings"
)

// UnknownKey is the message for a key that is not one of known, the keys of its
// mapping: it suggests the key probably meant, or lists them all.
func UnknownKey(key string, known []string) string {
	if s := Suggest(key, known); s != "" {
		return fmt.Sprintf("unknown key (did you mean %q?)", s)
	}
	return "unknown key (the keys here are " + strings.Join(known, ", ") + ")"
}

// Suggest returns the known key closest to key, if it is within two edits (a
// typo, a missing or doubled letter, two swapped letters); else the one known key
// that key is a word of, when there is one ("endpoint" for "otlp_endpoint", "ttl"
// for "max_ttl"); else "".
func Suggest(key string, known []string) string {
	best, dist := "", 3
	for _, k := range known {
		if d := editDistance(key, k); d < dist {
			best, dist = k, d
		}
	}
	if best != "" || key == "" {
		return best
	}
	for _, k := range known {
		if strings.HasPrefix(k, key+"_") || strings.HasSuffix(k, "_"+key) || strings.Contains(k, "_"+key+"_") {
			if best != "" {
				return "" // ambiguous
			}
			best = k
		}
	}
	return best
}

// editDistance is the Levenshtein distance of two short keys, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
