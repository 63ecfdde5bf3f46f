package execjob

import (
	"sync"

	"golang.org/x/sys/unix"
)

var protectOnce sync.Once

// protectWorker makes the worker process non-dumpable before it starts its
// first program. A program runs as the worker's user, and a process of the
// same user may otherwise read the worker's /proc/<pid>/environ (REDIS_URL,
// password included), /proc/<pid>/mem, and open its file descriptors (its
// Redis connections) through /proc/<pid>/fd; non-dumpable, those need
// CAP_SYS_PTRACE. (The worker also dumps no core then: its memory holds
// the same secrets.) A worker running as root with CAP_SYS_PTRACE is not
// protected by this: run workers as an unprivileged user.
func protectWorker() {
	protectOnce.Do(func() { _ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0) })
}
