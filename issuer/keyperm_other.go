//go:build !unix

package issuer

import "io/fs"

// fileOwner reports no owner where files have no Unix permissions: key file
// permissions are not checked there.
func fileOwner(fs.FileInfo) (uid, gid uint32, ok bool) { return 0, 0, false }
