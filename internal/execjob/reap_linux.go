package execjob

import (
	"errors"

	"golang.org/x/sys/unix"
)

// reapGroup collects the exit status of the processes of group pgid that
// are the worker's children. Normally there are none: a job's orphans are
// re-parented to init. But a worker that is PID 1 (a container without an
// init) or a subreaper inherits them, and they would stay zombies. It runs
// after the group was killed, so it waits only for processes already dying.
func reapGroup(pgid int) {
	for {
		var info unix.Siginfo
		if err := unix.Waitid(unix.P_PGID, pgid, &info, unix.WEXITED, nil); err != nil && !errors.Is(err, unix.EINTR) {
			return // ECHILD: none (left)
		}
	}
}
