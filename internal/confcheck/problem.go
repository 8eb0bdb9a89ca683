package confcheck

import (
	"slices"
	"strconv"
	"strings"
)

// Problem is one thing wrong in a configuration file.
type Problem struct {
	// File is the file name; empty for problems that belong to no file.
	File string
	// Line is 1-based; zero when the problem belongs to the whole file.
	Line int
	// Path is the key path of the value at fault ("upstreams[1].issuer"); empty
	// when the problem is about the file or document as a whole.
	Path string
	// Message says what is wrong, without the location.
	Message string
}

// String formats the problem as "file:line: path: message", leaving out what is
// unknown.
func (p Problem) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		if p.Line > 0 {
			b.WriteByte(':')
			b.WriteString(strconv.Itoa(p.Line))
		}
		b.WriteString(": ")
	}
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// Format prints one problem per line.
func Format(problems []Problem) string {
	lines := make([]string, len(problems))
	for i, p := range problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Sort orders problems by file, in the order of files (files not listed come
// first), then by line, keeping the order of discovery within a line.
func Sort(problems []Problem, files ...string) {
	order := make(map[string]int, len(files))
	for i, f := range files {
		if _, ok := order[f]; !ok {
			order[f] = i + 1
		}
	}
	slices.SortStableFunc(problems, func(a, b Problem) int {
		if d := order[a.File] - order[b.File]; d != 0 {
			return d
		}
		return a.Line - b.Line
	})
}

// Key is the path of key under path: path.key, or path["key"] when key is not
// made of letters, digits, '_' and '-' only (so that a path stays one unambiguous
// line whatever the keys hold).
func Key(path, key string) string {
	switch {
	case !plainKey(key):
		return path + "[" + strconv.Quote(key) + "]"
	case path == "":
		return key
	default:
		return path + "." + key
	}
}

func plainKey(key string) bool {
	for i := 0; i < len(key); i++ {
		if c := key[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return key != ""
}

// Index is the path of item i of the list at path.
func Index(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

// Merge appends the problems of a later check to those found in decoding,
// leaving out the ones at or below a path decoding already complained about: a
// value that could not be decoded was reported, its zero value is not worth a
// second complaint.
func Merge(decoded, later []Problem) []Problem {
	bad := make(map[string]bool, len(decoded))
	for _, p := range decoded {
		if p.Path != "" {
			bad[p.Path] = true
		}
	}
	out := decoded
next:
	for _, p := range later {
		for i := len(p.Path); i > 0; i-- {
			if (i == len(p.Path) || p.Path[i] == '.' || p.Path[i] == '[') && bad[p.Path[:i]] {
				continue next
			}
		}
		out = append(out, p)
	}
	return out
}
