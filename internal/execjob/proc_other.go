//go:build !unix

package execjob

import (
	"errors"
	"syscall"
)

// Supported reports whether exec job types run on this system: they need
// Unix process groups.
const Supported = false

var errUnsupported = errors.New("exec job types need a Unix system (process groups)")

func groupLeader() *syscall.SysProcAttr  { return nil }
func killGroup(int, syscall.Signal)      {}
func signalName(s syscall.Signal) string { return s.String() }
func reapGroup(int)                      {}
