package execjob

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"
)

// Defaults of Program's zero fields.
const (
	// DefaultKillGrace is how long a program has between SIGTERM and SIGKILL.
	DefaultKillGrace = 10 * time.Second
	// MaxLineBytes bounds one stderr line as logged, marker included.
	MaxLineBytes = 4096
	// MaxProgressMessage bounds a progress message (it is in the job
	// record every status read returns); a longer one is cut.
	MaxProgressMessage = 512
	// ProgressInterval is the least time between two progress reports: a
	// program may print "::progress" per item, but each report is a Redis
	// write, so intermediate values within it are dropped.
	ProgressInterval = 100 * time.Millisecond
	// DefaultDrainTimeout bounds how long output is read after the program
	// and its process group are gone: only a process that left the group
	// can still hold the pipes open then.
	DefaultDrainTimeout = 5 * time.Second
	// ExitDataErr is the exit status that fails a job without retry
	// (EX_DATAERR in sysexits.h).
	ExitDataErr = 65
)

// AllowedEnv lists the worker's environment variables a program inherits
// (when the worker has them); every other variable is cleared.
var AllowedEnv = []string{"PATH", "HOME", "USER", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"}

// Reserved is the prefix of the variables the runner sets itself
// (CLAIMCHECK_JOB_ID, CLAIMCHECK_ATTEMPT); a type's env may not set them.
const Reserved = "CLAIMCHECK_"

// cutMark ends a stderr line that was longer than MaxLineBytes.
const cutMark = " …[line cut]"

// Task is what a run needs of the job: package worker's *Task, adapted.
// Its methods are only called from the goroutine that called Run.
type Task interface {
	ID() string
	Attempt() int
	// Input is the job's input JSON, written to the program's stdin.
	Input() []byte
	// Progress reports percent in [0, 100] with a message.
	Progress(percent float64, message string)
	// Log keeps one line of the job's log.
	Log(line string)
	// Result opens the result stream.
	Result(contentType string) (io.Writer, error)
	// Checkpoint is the job's last checkpoint, or nil.
	Checkpoint() []byte
	// SaveCheckpoint keeps a new one.
	SaveCheckpoint(data []byte) error
}

// Program is one exec job type's program. Build it with its fields; the
// zero values of KillGrace and Env mean DefaultKillGrace and "allow-list
// only".
type Program struct {
	// Path is the executable, absolute (resolved when the type was loaded).
	Path string
	// Args is the argv, Args[0] included.
	Args []string
	// Dir is the working directory.
	Dir string
	// Env is the environment without CLAIMCHECK_* ("KEY=value" entries);
	// see Environ.
	Env []string
	// ContentType is the result's content type.
	ContentType string
	// KillGrace is the time between SIGTERM and SIGKILL.
	KillGrace time.Duration
	// DrainTimeout is how long stdout and stderr may stay open after the
	// program exited and its group was killed (DefaultDrainTimeout). A
	// stdout still open then fails the attempt: what a process that left
	// the group writes cannot be told from a result cut short.
	DrainTimeout time.Duration
}

// ErrEscaped fails an attempt whose stdout stayed open after the program
// and its process group were gone.
var ErrEscaped = errors.New("stdout still open after the program exited: a process left the job's process group")

// Environ is the environment of a program: the variables of AllowedEnv
// found in base (the worker's os.Environ()), overridden and extended by
// extra, sorted. Keys starting with Reserved are dropped from both.
func Environ(base []string, extra map[string]string) []string {
	m := map[string]string{}
	for _, kv := range base {
		k, v, ok := strings.Cut(kv, "=")
		if ok && slices.Contains(AllowedEnv, k) {
			m[k] = v
		}
	}
	for k, v := range extra {
		m[k] = v
	}
	env := make([]string, 0, len(m))
	for k, v := range m {
		if !strings.HasPrefix(k, Reserved) {
			env = append(env, k+"="+v)
		}
	}
	slices.Sort(env)
	return env
}

// ExitError is a program's end other than exit status 0.
type ExitError struct {
	// Code is the exit status, or -1 when a signal killed the program.
	Code int
	// Signal names the signal that killed it ("SIGKILL"), or is empty.
	Signal string
	// LastLine is the last line the program wrote to stderr (cut to 512
	// bytes), or empty.
	LastLine string
}

func (e *ExitError) Error() string {
	var b strings.Builder
	if e.Signal != "" {
		fmt.Fprintf(&b, "program killed by signal %s", e.Signal)
	} else {
		fmt.Fprintf(&b, "program exited with status %d", e.Code)
		if e.Code == ExitDataErr {
			b.WriteString(" (EX_DATAERR: bad input, not retried)")
		}
	}
	if e.LastLine != "" {
		fmt.Fprintf(&b, ": %s", e.LastLine)
	}
	return b.String()
}

// Permanent reports whether retrying cannot help: the program said its
// input was bad (ExitDataErr).
func (e *ExitError) Permanent() bool { return e.Signal == "" && e.Code == ExitDataErr }

// Run runs one attempt of the program for t and returns when the program
// and everything left in its process group are gone. It returns nil on
// exit status 0; an *ExitError for another exit; ctx's error (wrapped) when
// ctx ended the run; the result writer's error (wrapped) when storing the
// result failed, for instance over its size limit.
func (p *Program) Run(ctx context.Context, t Task) error {
	if !Supported {
		return errUnsupported
	}
	protectWorker()
	result, err := t.Result(p.ContentType)
	if err != nil {
		return fmt.Errorf("open result: %w", err)
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("stdin pipe: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return fmt.Errorf("stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		return fmt.Errorf("stderr pipe: %w", err)
	}
	cmd := &exec.Cmd{
		Path:   p.Path,
		Args:   p.Args,
		Dir:    p.Dir,
		Env:    p.environ(t),
		Stdin:  inR,
		Stdout: outW,
		Stderr: errW,
		// Its own process group, so that a signal reaches every process
		// it starts.
		SysProcAttr: groupLeader(),
	}
	startErr := cmd.Start()
	// The child holds its own copies; the worker keeps only its ends, so
	// EOF comes when the program's side is closed.
	inR.Close()
	outW.Close()
	errW.Close()
	if startErr != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		// The job's error is shown to its submitter: the cause, not the
		// program's path on this server.
		return fmt.Errorf("start the program: %w", pathless(startErr))
	}
	pgid := cmd.Process.Pid
	// Closing unblocks the input writer should a process that left the
	// group hold stdin without reading it.
	defer inW.Close()

	go func() {
		// EPIPE (the program did not read its input, or exited) is fine.
		_, _ = inW.Write(t.Input())
		inW.Close()
	}()
	outDone := make(chan error, 1)
	go func() {
		defer outR.Close()
		_, err := io.CopyBuffer(writerOnly{result}, readerOnly{outR}, make([]byte, 32<<10))
		outDone <- err
	}()
	lines := make(chan string, 64)
	go func() {
		defer errR.Close()
		readLines(errR, lines)
	}()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	// After the SIGKILL that follows the program's exit the group is empty
	// for good (a process with SIGKILL pending cannot fork), and its
	// number may be reused: it is never signalled again.
	groupGone := false
	kill := func(sig syscall.Signal) {
		if !groupGone {
			killGroup(pgid, sig)
		}
	}
	grace := p.KillGrace
	if grace <= 0 {
		grace = DefaultKillGrace
	}
	drain := p.DrainTimeout
	if drain <= 0 {
		drain = DefaultDrainTimeout
	}
	var (
		ctxDone      = ctx.Done()
		killTimer    <-chan time.Time
		stopped      error // why the worker stopped the program
		writeErr     error
		waitErr      error
		exited       bool
		outClosed    bool
		linesClosed  bool
		lastLine     string
		pending      *progressLine
		lastProgress time.Time
		flush        <-chan time.Time
		drained      <-chan time.Time
		// Checkpoints are coalesced like progress: each is a Redis write.
		pendingCkpt *string
		lastCkpt    time.Time
		flushCkpt   <-chan time.Time
	)
	report := func(pl progressLine) {
		t.Progress(pl.percent, pl.message)
		lastProgress = time.Now()
		pending, flush = nil, nil
	}
	save := func(c string) {
		if err := t.SaveCheckpoint([]byte(c)); err != nil {
			t.Log("::checkpoint not saved: " + err.Error())
		}
		lastCkpt = time.Now()
		pendingCkpt, flushCkpt = nil, nil
	}
	for !exited || !outClosed || !linesClosed {
		select {
		case <-ctxDone:
			ctxDone = nil
			if stopped == nil {
				stopped = fmt.Errorf("%w: the program's process group was sent SIGTERM", context.Cause(ctx))
				kill(syscall.SIGTERM)
				killTimer = time.After(grace)
			}
		case <-killTimer:
			killTimer = nil
			kill(syscall.SIGKILL)
			stopped = fmt.Errorf("%w: the program's process group was sent SIGTERM, and SIGKILL %s later", context.Cause(ctx), grace)
		case err := <-outDone:
			outClosed = true
			switch {
			case err == nil || writeErr != nil:
			case errors.Is(err, os.ErrDeadlineExceeded):
				writeErr = ErrEscaped
			default:
				writeErr = fmt.Errorf("store result: %w", err)
				kill(syscall.SIGKILL) // nothing it writes from now on can be kept
			}
		case err := <-waited:
			exited, waitErr, killTimer = true, err, nil
			// No process of the job outlives it; then the pipes close,
			// unless a process left the group.
			kill(syscall.SIGKILL)
			groupGone = true
			drained = time.After(drain)
		case <-drained:
			drained = nil
			_ = outR.SetReadDeadline(time.Now())
			_ = errR.SetReadDeadline(time.Now())
		case line, ok := <-lines:
			if !ok {
				linesClosed = true
				lines = nil
				if pending != nil {
					report(*pending)
				}
				if pendingCkpt != nil {
					save(*pendingCkpt)
				}
				continue
			}
			line = strings.ToValidUTF8(line, "\uFFFD")
			if c, ok, why := parseCheckpoint(line); ok {
				if time.Since(lastCkpt) >= ProgressInterval {
					save(c)
				} else {
					if pendingCkpt == nil {
						flushCkpt = time.After(ProgressInterval - time.Since(lastCkpt))
					}
					pendingCkpt = &c
				}
				continue
			} else if why != "" {
				t.Log("::checkpoint not saved: " + why)
				continue
			}
			if pl, ok := parseProgress(line); ok {
				if time.Since(lastProgress) >= ProgressInterval {
					report(pl)
				} else {
					if pending == nil {
						flush = time.After(ProgressInterval - time.Since(lastProgress))
					}
					pending = &pl
				}
				continue
			}
			t.Log(line)
			if strings.TrimSpace(line) != "" {
				lastLine = line
			}
		case <-flush:
			if pending != nil {
				report(*pending)
			}
		case <-flushCkpt:
			if pendingCkpt != nil {
				save(*pendingCkpt)
			}
		}
	}

	go reapGroup(pgid)

	switch {
	case writeErr != nil:
		return writeErr
	case stopped != nil:
		return stopped
	case waitErr != nil:
		var ee *exec.ExitError
		if !errors.As(waitErr, &ee) {
			return fmt.Errorf("wait for the program: %w", pathless(waitErr))
		}
		xe := &ExitError{Code: ee.ExitCode(), LastLine: clip(lastLine, 512)}
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			xe.Code, xe.Signal = -1, signalName(ws.Signal())
		}
		return xe
	}
	return nil
}

// writerOnly and readerOnly hide ReaderFrom and WriterTo, so that io.Copy
// uses its bounded buffer and each chunk reaches the writer as it arrives.
type (
	writerOnly struct{ io.Writer }
	readerOnly struct{ io.Reader }
)

// readLines sends r's lines to out, each cut to MaxLineBytes (marker
// included), without ever holding more than one cut line, then closes out.
func readLines(r io.Reader, out chan<- string) {
	defer close(out)
	br := bufio.NewReaderSize(r, MaxLineBytes)
	for {
		chunk, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			out <- strings.TrimSuffix(strings.TrimSuffix(string(chunk), "\n"), "\r")
		case errors.Is(err, bufio.ErrBufferFull):
			out <- clip(string(chunk), MaxLineBytes-len(cutMark)) + cutMark
			// Skip the rest of the line.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err != nil {
				return
			}
		default: // EOF, a read error, or the drain deadline
			if len(chunk) > 0 {
				out <- strings.TrimSuffix(string(chunk), "\r")
			}
			return
		}
	}
}

// pathless is err without the file name that os and os/exec errors carry
// (fork/exec /opt/models/run: permission denied → permission denied), still
// matching errors.Is on the cause.
func pathless(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var ee *exec.Error
	if errors.As(err, &ee) {
		return ee.Err
	}
	return err
}

// clip cuts s to at most n bytes on a UTF-8 boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

type progressLine struct {
	percent float64
	message string
}

// environ is the program's environment for t: p.Env, then the variables
// the runner sets.
func (p *Program) environ(t Task) []string {
	env := append(slices.Clip(p.Env), Reserved+"JOB_ID="+t.ID(), Reserved+"ATTEMPT="+strconv.Itoa(t.Attempt()))
	if c := t.Checkpoint(); c != nil {
		env = append(env, Reserved+"CHECKPOINT="+string(c))
	}
	return env
}

// checkpointPrefix starts a stderr line that saves a checkpoint.
const checkpointPrefix = "::checkpoint "

// parseCheckpoint parses "::checkpoint <text>". A checkpoint line that
// cannot be kept whole (cut for length, or holding a NUL, which no
// environment variable can carry) is not ok, and why says so.
func parseCheckpoint(line string) (text string, ok bool, why string) {
	text, ok = strings.CutPrefix(line, checkpointPrefix)
	switch {
	case !ok:
		return "", false, ""
	case strings.HasSuffix(line, cutMark):
		return "", false, fmt.Sprintf("the line is longer than %d bytes", MaxLineBytes)
	case strings.ContainsRune(text, 0):
		return "", false, "it holds a NUL byte"
	}
	return text, true, ""
}

// parseProgress parses "::progress <percent> [message]".
func parseProgress(line string) (progressLine, bool) {
	rest, ok := strings.CutPrefix(line, "::progress ")
	if !ok {
		return progressLine{}, false
	}
	rest = strings.TrimLeft(rest, " \t")
	num, msg, _ := strings.Cut(rest, " ")
	pct, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(pct) || math.IsInf(pct, 0) {
		return progressLine{}, false
	}
	return progressLine{percent: min(max(pct, 0), 100), message: clip(strings.TrimSpace(msg), MaxProgressMessage)}, true
}
