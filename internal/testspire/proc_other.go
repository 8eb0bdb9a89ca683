//go:build !unix

package testspire

import (
	"errors"
	"syscall"
)

// supported reports whether Start can run SPIRE here: the harness relies on unix
// sockets and process groups, so elsewhere Start skips (or fails when CI=true)
// before starting anything, and these only keep the package compiling.
const supported = false

func sysProcAttr() *syscall.SysProcAttr { return nil }

func signalGroup(int, syscall.Signal) error { return errors.ErrUnsupported }
