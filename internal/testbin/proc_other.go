//go:build !unix

package testbin

import (
	"errors"
	"syscall"
)

// Without process groups the harnesses skip (or fail when CI=true) before
// starting anything; these only keep the package compiling.
const (
	ProcessGroups  = false
	DiesWithParent = false
)

func sysProcAttr() *syscall.SysProcAttr { return nil }

func signalGroup(int, syscall.Signal) error { return errors.ErrUnsupported }
