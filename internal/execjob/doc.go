// Package execjob runs one attempt of an exec job: a program, in any
// language, that speaks claimcheck's stdin/stdout/stderr protocol. It owns
// the protocol and the program's lifetime; it imports no claimcheck public
// package (package worker adapts a Program into a worker.Handler through
// the small Task interface declared here).
//
// # The protocol (a contract: programs rely on it)
//
//   - stdin: the job's input, the JSON object the API accepted, then EOF.
//     A program that does not read it is fine.
//   - stdout: the result, exactly the bytes written, streamed to the result
//     store as they arrive (never held whole in memory). An empty stdout is
//     an empty result. A result over the type's max_result_bytes kills the
//     program's process group at once and fails the job without retry.
//   - stderr: one job-log line per line written, as UTF-8 (invalid bytes
//     become U+FFFD; a line longer than MaxLineBytes is cut and marked, and
//     no line is buffered past that), except a line
//     "::progress <percent> [message]", which reports progress
//     (percent a number in [0, 100], clamped; message optional, cut to
//     MaxProgressMessage bytes). A "::progress" line that does not parse
//     is logged as an ordinary line. Progress is coalesced to at most one
//     report per ProgressInterval; the latest value always gets through.
//     And except a line "::checkpoint <text>", which saves text as the
//     job's checkpoint: where it got to, for its next attempt (after a
//     shutdown's hand-back, or a retry) to go on from; the next attempt
//     finds it in CLAIMCHECK_CHECKPOINT. Text is one line of at most
//     MaxLineBytes less the prefix (encode binary state, e.g. base64);
//     a longer line, or one holding a NUL, is not saved, and the log says
//     so. Checkpoints are coalesced like progress, and the last one
//     written before the program exits is always saved. When the worker
//     shuts down the program gets SIGTERM at once: that is the moment to
//     write a last checkpoint and exit.
//   - exit status 0: the attempt succeeded and stdout is the result. Any
//     other exit fails the attempt, which is retried by the type's max_retry,
//     with an error naming the status (or the signal that killed the
//     program) and the last stderr line. Exit status 65 (EX_DATAERR from
//     sysexits.h: "the input data was incorrect") fails the job at once,
//     without retry: a program says "bad input" with it.
//   - environment: cleared, except the variables of AllowedEnv that the
//     worker itself has, then the type's env: (which may override those),
//     then CLAIMCHECK_JOB_ID, CLAIMCHECK_ATTEMPT (1 for the first
//     attempt) and, when the job has one, CLAIMCHECK_CHECKPOINT (see
//     stderr), which nothing overrides.
//     Nor can a program read the worker's secrets through /proc (its
//     environ, memory or file descriptors): on Linux the worker makes
//     itself non-dumpable before it starts a program, so that takes
//     CAP_SYS_PTRACE, which a worker running as an unprivileged user does
//     not have. A program still runs as the worker's user, with its files
//     (the results directory among them).
//   - working directory: the type's workdir.
//   - lifetime: the program leads its own process group. When the attempt
//     is cancelled, times out, or the worker shuts down and hands the job
//     back, the whole group gets SIGTERM, and SIGKILL KillGrace later if
//     any of it is still there. When the program exits on its own, whatever
//     is left in its group is killed with SIGKILL at once: no process of a
//     job outlives its attempt. (A process that leaves the group, by setsid
//     or setpgid, escapes this. Should it still hold stdout DrainTimeout
//     after the program exited, the attempt fails with ErrEscaped: its
//     output cannot be told from a result cut short.) The killed processes
//     are reaped when the worker inherited them (it is PID 1 or a
//     subreaper), so none stays a zombie.
//
// # How a run is wired
//
// One goroutine writes stdin; one copies stdout into the result; one splits
// stderr into bounded lines. Everything that calls the Task — logs,
// progress — happens on the caller's goroutine, which also watches the
// context and the program's exit, so a Task needs no locking beyond what
// its result writer does.
package execjob
