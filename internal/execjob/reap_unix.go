//go:build unix && !linux

package execjob

// reapGroup is a no-op where waitid(P_PGID) is not available; a worker
// that is PID 1 there needs an init (docker run --init) to reap orphans.
func reapGroup(int) {}
