//go:build !linux

package testkube

import (
	"errors"
	"syscall"
)

// supported is false outside Linux: the harness relies on Pdeathsig so that no
// etcd or kube-apiserver outlives a killed test binary. Start skips (or fails when
// CI=true) before starting anything.
const supported = false

func sysProcAttr() *syscall.SysProcAttr { return nil }

func signalGroup(int, syscall.Signal) error { return errors.ErrUnsupported }
