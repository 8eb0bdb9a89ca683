// Package doccheck runs the commands of the project's documentation (README.md,
// docs/*.md, deploy/README.md) as written: its test extracts every code block
// marked runnable and runs it with bash, in document order, in a scratch directory
// that is the module root (symbolic links to its files), so that `go run ./cmd/sts`
// and relative paths such as sts-quickstart/ca.crt work there, with sts and stsctl
// built onto PATH.
//
// Marking a block: an HTML comment on the line before it (invisible on GitHub),
//
//	<!-- runnable -->                          the block must exit 0
//	<!-- runnable: background "TEXT" -->       started, and running once its output
//	                                           shows TEXT; stopped (SIGTERM to its
//	                                           process group) when the document ends
//
// followed by a fenced (```) or indented code block. Lines of the block starting
// with "#" are comments, as in the shell. Blocks that need what a test machine has
// not (a cluster, a Docker engine, minutes of load) are left unmarked.
package doccheck
