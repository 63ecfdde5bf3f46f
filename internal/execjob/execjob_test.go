//go:build linux

// The tests read /proc to see whether a process is still there.

package execjob_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/claimcheck/claimcheck/internal/execjob"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
)

// task is a Task that records what the program reported.
type task struct {
	id       string
	attempt  int
	input    []byte
	limit    int // result bytes allowed; 0: no limit
	logs     []string
	progress []float64
	messages []string
	ct       string

	mu     sync.Mutex // the result is written from the copying goroutine
	result bytes.Buffer
	writes int

	checkpoint []byte   // what the attempt starts from
	saved      []string // checkpoints saved, in order
}

func (t *task) ID() string    { return t.id }
func (t *task) Attempt() int  { return t.attempt }
func (t *task) Input() []byte { return t.input }
func (t *task) Log(l string)  { t.logs = append(t.logs, l) }
func (t *task) Progress(p float64, m string) {
	t.progress = append(t.progress, p)
	t.messages = append(t.messages, m)
}
func (t *task) Result(ct string) (io.Writer, error) { t.ct = ct; return resultWriter{t}, nil }
func (t *task) Checkpoint() []byte                  { return t.checkpoint }
func (t *task) SaveCheckpoint(b []byte) error       { t.saved = append(t.saved, string(b)); return nil }

func (t *task) resultString() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.result.String()
}

var errTooLarge = errors.New("too large")

type resultWriter struct{ t *task }

func (w resultWriter) Write(p []byte) (int, error) {
	w.t.mu.Lock()
	defer w.t.mu.Unlock()
	if w.t.limit > 0 && w.t.result.Len()+len(p) > w.t.limit {
		return 0, errTooLarge
	}
	w.t.writes++
	return w.t.result.Write(p)
}

func newTask(input string) *task { return &task{id: "job-1", attempt: 2, input: []byte(input)} }

// sh is a program running script with /bin/sh in a temporary directory.
func sh(t *testing.T, script string) *execjob.Program {
	t.Helper()
	return &execjob.Program{
		Path: "/bin/sh", Args: []string{"sh", "-c", script}, Dir: t.TempDir(),
		Env: execjob.Environ(os.Environ(), nil), ContentType: "text/plain",
		KillGrace: 200 * time.Millisecond,
	}
}

func TestProtocolStdinStdoutStderrProgress(t *testing.T) {
	p := sh(t, `
input=$(cat)
echo "first log line" >&2
echo "::progress 25 reading" >&2
echo "::progress lots" >&2
echo "::progress NaN" >&2
printf 'got %s' "$input"
echo "::progress 150 done" >&2
printf 'carriage\r\n' >&2
printf 'no newline at end' >&2`)
	tk := newTask(`{"text":"a b"}`)
	if err := p.Run(context.Background(), tk); err != nil {
		t.Fatal(err)
	}
	if got := tk.resultString(); got != `got {"text":"a b"}` || tk.ct != "text/plain" {
		t.Errorf("result %q (%s)", got, tk.ct)
	}
	wantLogs := []string{"first log line", "::progress lots", "::progress NaN", "carriage", "no newline at end"}
	if !slices.Equal(tk.logs, wantLogs) {
		t.Errorf("logs %q, want %q", tk.logs, wantLogs)
	}
	// 25 goes out at once; 150 (clamped) comes within ProgressInterval, so it
	// is held and flushed no later than the end of stderr.
	if !slices.Equal(tk.progress, []float64{25, 100}) || !slices.Equal(tk.messages, []string{"reading", "done"}) {
		t.Errorf("progress %v %q", tk.progress, tk.messages)
	}
}

func TestLongStderrLineIsCut(t *testing.T) {
	p := sh(t, `head -c 100000 /dev/zero | tr '\0' x >&2; echo >&2; echo after >&2`)
	tk := newTask(`{}`)
	if err := p.Run(context.Background(), tk); err != nil {
		t.Fatal(err)
	}
	if len(tk.logs) != 2 || len(tk.logs[0]) != execjob.MaxLineBytes || !strings.HasSuffix(tk.logs[0], "[line cut]") ||
		!strings.HasPrefix(tk.logs[0], "xxxx") || tk.logs[1] != "after" {
		t.Fatalf("%d lines, first %d bytes, %q", len(tk.logs), len(tk.logs[0]), tk.logs[len(tk.logs)-1])
	}
}

func TestExitStatusAndLastStderrLine(t *testing.T) {
	for _, tc := range []struct {
		name, script string
		code         int
		signal       string
		permanent    bool
		msg          string
	}{
		{"status 1", `echo one >&2; echo "it broke" >&2; echo "::progress 5" >&2; exit 1`, 1, "", false, "program exited with status 1: it broke"},
		{"status 65", `echo "text is missing" >&2; exit 65`, 65, "", true, "program exited with status 65 (EX_DATAERR: bad input, not retried): text is missing"},
		{"signal", `echo "about to die" >&2; kill -SEGV $$`, -1, "SIGSEGV", false, "program killed by signal SIGSEGV: about to die"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := sh(t, tc.script).Run(context.Background(), newTask(`{}`))
			var xe *execjob.ExitError
			if !errors.As(err, &xe) {
				t.Fatalf("err = %v", err)
			}
			if xe.Code != tc.code || xe.Signal != tc.signal || xe.Permanent() != tc.permanent || xe.Error() != tc.msg {
				t.Fatalf("got %+v %q permanent=%v", xe, xe.Error(), xe.Permanent())
			}
		})
	}
}

func TestEnvironmentIsAllowListPlusTypeEnvPlusJobVariables(t *testing.T) {
	t.Setenv("SECRET_TOKEN", "do-not-pass")
	t.Setenv("LANG", "en_US.UTF-8")
	t.Setenv("TZ", "UTC")
	p := sh(t, `env`)
	p.Env = execjob.Environ(os.Environ(), map[string]string{"TZ": "Europe/Paris", "MODEL": "small", "CLAIMCHECK_JOB_ID": "forged"})
	tk := newTask(`{}`)
	if err := p.Run(context.Background(), tk); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range strings.Split(strings.TrimSpace(tk.resultString()), "\n") {
		k, v, _ := strings.Cut(kv, "=")
		got[k] = v
	}
	for k := range got {
		if k == "PWD" || k == "SHLVL" || k == "_" { // sh sets these itself
			continue
		}
		if !slices.Contains(execjob.AllowedEnv, k) && k != "MODEL" && !strings.HasPrefix(k, "CLAIMCHECK_") {
			t.Errorf("program saw %s", k)
		}
	}
	want := map[string]string{"LANG": "en_US.UTF-8", "TZ": "Europe/Paris", "MODEL": "small", "CLAIMCHECK_JOB_ID": "job-1", "CLAIMCHECK_ATTEMPT": "2", "PATH": os.Getenv("PATH")}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if _, ok := got["SECRET_TOKEN"]; ok {
		t.Error("SECRET_TOKEN was passed")
	}
}

func TestProgramThatIgnoresLargeInput(t *testing.T) {
	tk := newTask(`{"text":"` + strings.Repeat("a", 1<<20) + `"}`) // more than a pipe holds
	if err := sh(t, `echo ok`).Run(context.Background(), tk); err != nil {
		t.Fatal(err)
	}
	if tk.resultString() != "ok\n" {
		t.Fatalf("result %q", tk.resultString())
	}
}

func TestResultIsStreamedAsWritten(t *testing.T) {
	dir := t.TempDir()
	go_ := filepath.Join(dir, "go")
	// The program writes a first chunk, then waits until the test has seen
	// it arrive in the result before it writes the rest.
	p := sh(t, fmt.Sprintf(`printf first; while [ ! -e %q ]; do sleep 0.01; done; printf ' second'`, go_))
	tk := newTask(`{}`)
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background(), tk) }()
	waitfor.True(t, 10*time.Second, func() bool { return tk.resultString() == "first" })
	if err := os.WriteFile(go_, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if tk.resultString() != "first second" {
		t.Fatalf("result %q", tk.resultString())
	}
}

func TestResultOverLimitKillsTheProgram(t *testing.T) {
	tk := newTask(`{}`)
	tk.limit = 1 << 20
	err := sh(t, `yes`).Run(context.Background(), tk) // would write forever
	if !errors.Is(err, errTooLarge) {
		t.Fatalf("err = %v", err)
	}
}

// alive reports whether pid names a process that is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) S ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || !strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
}

// pids waits for the program to write its own and its child's pid to dir.
func pids(t *testing.T, dir string) (int, int) {
	t.Helper()
	var parent, child int
	waitfor.True(t, 10*time.Second, func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "pids"))
		f := strings.Fields(string(b))
		if err != nil || len(f) != 2 {
			return false
		}
		parent, _ = strconv.Atoi(f[0])
		child, _ = strconv.Atoi(f[1])
		return true
	})
	return parent, child
}

// forker starts a child that would run for long, writes "parentpid childpid"
// to dir/pids, then waits; with trapTerm both ignore SIGTERM.
func forker(t *testing.T, trapTerm bool) (*execjob.Program, string) {
	dir := t.TempDir()
	trap := ""
	if trapTerm {
		trap = `trap '' TERM;`
	}
	p := sh(t, trap+`sleep 1000 & echo "$$ $!" > pids.tmp; mv pids.tmp pids; wait`)
	p.Dir = dir
	return p, dir
}

func TestCancelKillsTheWholeProcessGroup(t *testing.T) {
	for _, tc := range []struct {
		name     string
		trapTerm bool
		want     string
	}{
		{"SIGTERM", false, "the program's process group was sent SIGTERM"},
		{"SIGKILL after grace", true, "SIGKILL 200ms later"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, dir := forker(t, tc.trapTerm)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx, newTask(`{}`)) }()
			parent, child := pids(t, dir)
			if !alive(parent) || !alive(child) {
				t.Fatal("the processes are not running")
			}
			cancel()
			err := <-done
			if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v", err)
			}
			waitfor.True(t, 10*time.Second, func() bool { return !alive(parent) && !alive(child) })
		})
	}
}

func TestTimeoutKillsTheProgram(t *testing.T) {
	p, dir := forker(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := p.Run(ctx, newTask(`{}`))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	parent, child := pids(t, dir)
	waitfor.True(t, 10*time.Second, func() bool { return !alive(parent) && !alive(child) })
}

func TestLeftoverProcessesDieWithTheProgram(t *testing.T) {
	dir := t.TempDir()
	// The child keeps stdout open; the program exits at once.
	p := sh(t, `sleep 1000 & echo "$$ $!" > pids.tmp; mv pids.tmp pids; echo done`)
	p.Dir = dir
	tk := newTask(`{}`)
	if err := p.Run(context.Background(), tk); err != nil {
		t.Fatal(err)
	}
	if tk.resultString() != "done\n" {
		t.Fatalf("result %q", tk.resultString())
	}
	parent, child := pids(t, dir)
	waitfor.True(t, 10*time.Second, func() bool { return !alive(parent) && !alive(child) })
}

func TestStartFailure(t *testing.T) {
	p := sh(t, "")
	p.Path = filepath.Join(t.TempDir(), "missing")
	err := p.Run(context.Background(), newTask(`{}`))
	if !errors.Is(err, exec.ErrNotFound) && !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v", err)
	}
	// It becomes the job's error, which the submitter reads.
	if strings.Contains(err.Error(), p.Path) || strings.Contains(err.Error(), "/") {
		t.Fatalf("the error %q names a server path", err)
	}
}

func TestInvalidUTF8IsReplaced(t *testing.T) {
	tk := newTask(`{}`)
	if err := sh(t, `printf 'caf\351\n::progress 10 \377\n' >&2`).Run(context.Background(), tk); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tk.logs, []string{"caf\uFFFD"}) || !slices.Equal(tk.messages, []string{"\uFFFD"}) {
		t.Fatalf("logs %q, progress messages %q", tk.logs, tk.messages)
	}
}

// TestEscapedProcessHoldingStdoutFailsTheAttempt: a process that left the
// job's group can not be killed with it; if it keeps stdout open, the
// result may be cut short, so the attempt fails rather than succeed.
func TestEscapedProcessHoldingStdoutFailsTheAttempt(t *testing.T) {
	// The program exits only once the escapee is in its own session.
	p := sh(t, `setsid sh -c 'echo $$ > escaped.tmp; mv escaped.tmp escaped; exec sleep 1000' &
while [ ! -e escaped ]; do sleep 0.01; done; printf partial`)
	p.DrainTimeout = 200 * time.Millisecond
	tk := newTask(`{}`)
	err := p.Run(context.Background(), tk)
	b, _ := os.ReadFile(filepath.Join(p.Dir, "escaped"))
	if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 1 {
		defer syscall.Kill(pid, syscall.SIGKILL) // it escaped the runner, not the test
	}
	if !errors.Is(err, execjob.ErrEscaped) || tk.resultString() != "partial" {
		t.Fatalf("err = %v, result %q", err, tk.resultString())
	}
}

// TestOrphansAreReapedByASubreaperWorker: a worker that is PID 1 in a
// container (or a subreaper) inherits a job's orphans; once killed they
// must not stay zombies. The test process plays that role.
func TestOrphansAreReapedByASubreaperWorker(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Skipf("cannot become a subreaper: %v", err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	p, dir := forker(t, false)
	p.Args[2] = `sleep 1000 & echo "$$ $!" > pids.tmp; mv pids.tmp pids` // exits, leaving its child
	if err := p.Run(context.Background(), newTask(`{}`)); err != nil {
		t.Fatal(err)
	}
	_, child := pids(t, dir)
	// Not just dead: gone, its zombie collected.
	waitfor.True(t, 10*time.Second, func() bool {
		_, err := os.Stat(fmt.Sprintf("/proc/%d", child))
		return errors.Is(err, os.ErrNotExist)
	})
}

// TestProgressIsCoalesced: a program may print progress per item; each
// report is a Redis write, so at most one goes out per ProgressInterval,
// and the last value always does.
func TestProgressIsCoalesced(t *testing.T) {
	p := sh(t, `i=1; while [ $i -le 2000 ]; do echo "::progress $((i / 20)) item $i" >&2; i=$((i + 1)); done`)
	tk := newTask(`{}`)
	began := time.Now()
	if err := p.Run(context.Background(), tk); err != nil {
		t.Fatal(err)
	}
	most := int(time.Since(began)/execjob.ProgressInterval) + 2
	n := len(tk.progress)
	if n == 0 || n > most {
		t.Fatalf("%d reports, at most %d allowed", n, most)
	}
	if tk.progress[n-1] != 100 || tk.messages[n-1] != "item 2000" {
		t.Fatalf("last report %v %q", tk.progress[n-1], tk.messages[n-1])
	}
	if len(tk.logs) != 0 {
		t.Fatalf("progress lines were logged: %d", len(tk.logs))
	}
}

func TestLongProgressMessageIsCut(t *testing.T) {
	tk := newTask(`{}`)
	if err := sh(t, `printf '::progress 7 %s\n' "$(head -c 3000 /dev/zero | tr '\0' m)" >&2`).Run(context.Background(), tk); err != nil {
		t.Fatal(err)
	}
	if len(tk.messages) != 1 || len(tk.messages[0]) != execjob.MaxProgressMessage || tk.progress[0] != 7 {
		t.Fatalf("progress %v, message lengths %d", tk.progress, len(tk.messages))
	}
}

// TestCheckpointLines: a program finds the job's checkpoint in
// CLAIMCHECK_CHECKPOINT, saves new ones with "::checkpoint" lines
// (coalesced, the last always saved), and on SIGTERM (the worker shutting
// down) writes a last one before it exits. A checkpoint line that cannot
// be kept whole is not saved and the log says why.
func TestCheckpointLines(t *testing.T) {
	t.Run("read, saved, coalesced", func(t *testing.T) {
		p := sh(t, `
echo "started from [$CLAIMCHECK_CHECKPOINT]" >&2
for i in 1 2 3 4 5; do echo "::checkpoint step $i" >&2; done
head -c 5000 /dev/zero | tr '\0' x | sed 's/^/::checkpoint /' >&2; echo >&2`)
		tk := newTask(`{}`)
		tk.checkpoint = []byte("step 0")
		if err := p.Run(context.Background(), tk); err != nil {
			t.Fatal(err)
		}
		if len(tk.logs) < 2 || tk.logs[0] != "started from [step 0]" {
			t.Fatalf("logs %q: the program did not get its checkpoint", tk.logs)
		}
		// "step 1" goes out at once; 2..4 are replaced within the interval
		// by 5, which is flushed when stderr ends.
		if !slices.Equal(tk.saved, []string{"step 1", "step 5"}) {
			t.Errorf("saved %q, want step 1 and step 5", tk.saved)
		}
		if last := tk.logs[len(tk.logs)-1]; !strings.Contains(last, "::checkpoint not saved: the line is longer than") {
			t.Errorf("a cut checkpoint line was not refused in the log: %q", last)
		}
	})
	t.Run("last checkpoint on SIGTERM", func(t *testing.T) {
		dir := t.TempDir()
		p := sh(t, `trap 'echo "::checkpoint at $i" >&2; exit 143' TERM
i=0; : > `+dir+`/ready
while true; do i=$((i+1)); sleep 0.01; done`)
		ctx, cancel := context.WithCancelCause(context.Background())
		tk := newTask(`{}`)
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx, tk) }()
		waitfor.True(t, 10*time.Second, func() bool { _, err := os.Stat(dir + "/ready"); return err == nil })
		cancel(errors.New("worker shutting down"))
		if err := <-done; err == nil {
			t.Fatal("a stopped program's attempt succeeded")
		}
		if len(tk.saved) != 1 || !strings.HasPrefix(tk.saved[0], "at ") {
			t.Fatalf("saved %q, want the checkpoint written on SIGTERM", tk.saved)
		}
	})
}
