//go:build !linux

package testredis

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
