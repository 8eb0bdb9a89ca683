// Package glob matches subject patterns: '*' matches any run of bytes (including ':'
// and '/'), every other byte matches itself, and patterns are anchored at both ends.
// Patterns are compiled once; matching never allocates.
//
//	g := glob.Compile("system:serviceaccount:payments:*")
//	g.Match("system:serviceaccount:payments:api") // true
package glob
