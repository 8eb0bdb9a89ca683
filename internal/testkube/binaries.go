package testkube

import (
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/testbin"
)

const (
	// EnvKubeDir names a directory holding kube-apiserver and etcd, used instead
	// of running scripts/kube-install.sh.
	EnvKubeDir = "SAFECONDUCT_KUBE_DIR"

	healthTimeout = 60 * time.Second
)

// kubeBinaries finds kube-apiserver and etcd.
var kubeBinaries = &testbin.Set{
	Harness: "testkube",
	What:    "kube-apiserver/etcd",
	Names:   []string{"kube-apiserver", "etcd"},
	EnvDir:  EnvKubeDir,
	Script:  "scripts/kube-install.sh",
	Timeout: 40 * time.Minute,
}

// binaries returns the paths of kube-apiserver and etcd, or skips t (fails it when
// CI=true) when they cannot be had.
func binaries(t testing.TB) (apiserver, etcd string) {
	t.Helper()
	p := kubeBinaries.Paths(t)
	return p[0], p[1]
}
