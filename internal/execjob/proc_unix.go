//go:build unix

package execjob

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// Supported reports whether exec job types run on this system: they need
// Unix process groups.
const Supported = true

var errUnsupported error

func groupLeader() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// killGroup sends sig to every process of group pgid.
func killGroup(pgid int, sig syscall.Signal) {
	if pgid > 1 { // never -1 (every process) or -0 (the worker's own group)
		_ = syscall.Kill(-pgid, sig)
	}
}

// signalName is "SIGKILL" for SIGKILL.
func signalName(s syscall.Signal) string {
	if n := unix.SignalName(s); n != "" {
		return n
	}
	return s.String()
}
