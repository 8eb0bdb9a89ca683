// Package glob matches subject patterns. Patterns are anchored at both ends, every
// byte but '*' matches itself, and there is no escape. What '*' matches depends on
// the Mode the pattern is compiled with:
//
//   - Legacy (Compile, policy files without `version: 2`): '*' matches any run of
//     bytes, including ':' and '/'. This is AWS StringLike: "repo:acme/*" also
//     matches "repo:acme/app:pull_request".
//   - Segments (CompileMode(p, Segments), `version: 2`): the separators ':' and '/'
//     cut a string into segments; '*' matches any run of bytes within one segment
//     (no ':' or '/'), and '**' (two or more stars) any run of bytes, separators
//     included. "repo:acme/*" matches "repo:acme/app" only; "repo:acme/**" is the
//     old meaning.
//
// Patterns are compiled once; matching never allocates and never backtracks.
//
//	g := glob.CompileMode("system:serviceaccount:payments:*", glob.Segments)
//	g.Match("system:serviceaccount:payments:api")   // true
//	g.Match("system:serviceaccount:payments:a:b")   // false
package glob
