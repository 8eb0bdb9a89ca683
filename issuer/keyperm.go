package issuer

import (
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sync"
)

// A signing key file must be readable by the STS alone, as ssh requires of its
// private keys: no permission bit for others, none for the group but read, and
// group read only on a file owned by root whose group is one the STS runs in (a
// Kubernetes Secret volume with fsGroup: root-owned files, group fsGroup, mode 0440,
// the group read being how the STS itself reads them). Anything else is refused.

// keyFileAccess checks the permissions of the key file path described by fi
// (after symlinks). It returns nil where the platform has no such permissions.
func keyFileAccess(path string, fi fs.FileInfo) error {
	uid, gid, ok := fileOwner(fi)
	if !ok {
		return nil
	}
	if msg := keyModeProblem(fi.Mode().Perm(), uid, gid, inOwnGroups); msg != "" {
		return fmt.Errorf("mode %04o %s: a signing key must be readable by the STS alone; run chmod 600 %s (or, on a Kubernetes Secret volume, use fsGroup and defaultMode 0440 or 0400)",
			uint32(fi.Mode().Perm()), msg, path)
	}
	return nil
}

// keyModeProblem says what is wrong with a key file of mode perm owned by uid:gid,
// or "" when nothing is. inGroup reports whether the STS runs in a group.
func keyModeProblem(perm fs.FileMode, uid, gid uint32, inGroup func(uint32) bool) string {
	switch {
	case perm&0o007 != 0:
		return "lets others access it"
	case perm&0o030 != 0:
		return "lets its group write it"
	case perm&0o040 == 0:
		return ""
	case uid != 0:
		return "lets its group read it (allowed only for a file owned by root whose group is the STS's)"
	case !inGroup(gid):
		return "lets a group the STS is not in read it"
	}
	return ""
}

// ownGroups are the process's group IDs, primary and supplementary.
var ownGroups = sync.OnceValue(func() []int {
	groups, _ := os.Getgroups()
	return append(groups, os.Getgid())
})

func inOwnGroups(gid uint32) bool { return slices.Contains(ownGroups(), int(gid)) }
