package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
)

// Type is a job type a worker can run: what the API validates a job
// against (the worker announces it; see package doc), where it runs, and
// the handler that does the work. Only Name, Timeout and Handle are
// required.
type Type struct {
	// Name is the type's identifier in requests ("primes"): letters,
	// digits, '.', '_' and '-'.
	Name string
	// Description is one sentence for people reading GET /v1/job-types.
	Description string
	// InputSchema is the JSON Schema (draft 2020-12) of the job's input;
	// nil means any JSON object.
	InputSchema json.RawMessage
	// ContentType is the content type of the result, for documentation
	// (the handler names it again when it opens the result).
	ContentType string
	// Timeout is the default time one attempt may run; a request may ask
	// for less, or for more up to MaxTimeout.
	Timeout time.Duration
	// MaxTimeout caps the timeout a request may ask for; zero means Timeout.
	MaxTimeout time.Duration
	// MaxRetry is how many times a failed attempt is retried.
	MaxRetry int
	// MaxResultBytes caps one result; zero means the worker's limit
	// (Config.MaxResultBytes), which also caps a larger value. A job whose
	// result outgrows it fails, and is not retried.
	MaxResultBytes int64
	// Pool names the workers that run this type ("default" when empty):
	// each pool has its own queues, and a worker takes jobs only from the
	// pools of the types it serves, so a GPU box serving "render" never
	// dequeues a CPU box's "primes".
	Pool string
	// InputLimits bound the input before its schema sees it, at the API
	// and again in Task.Decode; zero fields take their defaults.
	InputLimits InputLimits
	// Handle runs one attempt.
	Handle Handler
	// stopGrace is how long Shutdown waits for this type's handlers after
	// handing their jobs back (an exec type's kill grace: see
	// TypesFromFile); zero: not at all.
	stopGrace time.Duration
}

// InputLimits bound a job's input before schema validation, so that no
// input can cost more to check than it is worth. Zero fields take the
// defaults in parentheses.
type InputLimits struct {
	// MaxBytes bounds the input's JSON text (64 KiB).
	MaxBytes int
	// MaxDepth bounds the nesting of objects and arrays, the input object
	// being depth 1 (32).
	MaxDepth int
	// MaxValues bounds how many JSON values the input holds in all (1024).
	MaxValues int
	// MaxStringBytes bounds one string or member name, unescaped (16 KiB).
	MaxStringBytes int
	// MaxNumberLength bounds one number literal, in characters (24).
	MaxNumberLength int
}

// DefaultPool is the pool of a Type that names none. It must equal the
// job store's default (TestDefaultPoolIsTheStores checks it): its queues
// keep the bare names critical, default and low.
const DefaultPool = "default"

// Validate checks input as the API would on submit: the type's input limits,
// then its schema. It is for a type's own tests; the error lists every
// violation with a JSON Pointer into input.
func (t Type) Validate(input json.RawMessage) error {
	c, err := jobs.NewCatalog(t.spec())
	if err != nil {
		return err
	}
	return c.Validate(t.Name, input)
}

// spec is what the API needs to know of t.
func (t Type) spec() jobs.TypeSpec {
	schema := t.InputSchema
	if len(bytes.TrimSpace(schema)) == 0 {
		schema = json.RawMessage(`{"type":"object"}`)
	}
	pool := t.Pool
	if pool == "" {
		pool = DefaultPool
	}
	return jobs.TypeSpec{
		Name: t.Name, Description: t.Description, Schema: schema,
		Timeout: t.Timeout, MaxTimeout: t.MaxTimeout, MaxRetry: t.MaxRetry,
		ResultType: t.ContentType, MaxResultBytes: t.MaxResultBytes, Pool: pool,
		InputLimits: jobs.InputLimits(t.InputLimits),
	}
}

// Handler runs one attempt of a job. ctx is cancelled when the job is
// cancelled or its attempt times out; a handler must return promptly then.
// Returning an error fails the attempt (it is retried with backoff until the
// type's MaxRetry is used up); wrap it with ErrPermanent to fail at once.
type Handler func(ctx context.Context, t *Task) error

// ErrPermanent marks an error retrying cannot fix (bad input that slipped
// past the schema, a result over its limit). Wrap it: fmt.Errorf("…: %w", ErrPermanent).
var ErrPermanent = errors.New("permanent failure")

// Task is a handler's view of the job it runs: its input, a progress
// reporter and a streaming result writer. It is not safe for concurrent use.
type Task struct {
	id       string
	attempt  int
	input    json.RawMessage
	limits   jobs.InputLimits // the type's; zero fields default
	progress func(percent float64, message string)
	open     func(contentType string) (io.Writer, error)
	result   io.Writer
	// log keeps one line of the job's log; nil drops it.
	log    func(line string)
	logger *slog.Logger
	// checkpoint is what an earlier attempt saved; save stores a new one
	// (nil: checkpoints are not kept, as in RunLocal).
	checkpoint []byte
	save       func(data []byte) error
}

// MaxCheckpointBytes bounds one checkpoint (SaveCheckpoint). It equals the
// job store's limit (TestMaxCheckpointIsTheStores checks it).
const MaxCheckpointBytes = 64 << 10

// Checkpoint is what this job last saved with SaveCheckpoint, in this
// attempt or an earlier one, or nil: where a job handed back at shutdown (see
// ErrShuttingDown), or retried after a failure, picks up again.
func (t *Task) Checkpoint() []byte { return t.checkpoint }

// SaveCheckpoint keeps data (at most MaxCheckpointBytes) as where this job
// got to, for its next attempt to read back with Checkpoint; a later save
// replaces it, and it goes when the job ends. Save when a step is done (a
// segment, a page of input) and whenever the context is cancelled with
// ErrShuttingDown; it works after that cancel, for a few seconds. Each call
// is one Redis write. It fails when data is too large, Redis does not
// answer, or this attempt is no longer the job's running one (the job was
// cancelled, or it was given up on as lost and runs elsewhere).
func (t *Task) SaveCheckpoint(data []byte) error {
	if len(data) > MaxCheckpointBytes {
		return fmt.Errorf("checkpoint of %d bytes: at most %d", len(data), MaxCheckpointBytes)
	}
	if t.save != nil {
		if err := t.save(data); err != nil {
			return err
		}
	}
	t.checkpoint = bytes.Clone(data)
	return nil
}

// ID is the job's id.
func (t *Task) ID() string { return t.id }

// Attempt counts from 1.
func (t *Task) Attempt() int { return t.attempt }

// Input is the job's input, the JSON object as the API accepted it ("{}"
// for a task that carries none). Most handlers want Decode, which also
// checks it; Input is for handing it on as it is (an exec type's program
// reads it on stdin).
func (t *Task) Input() json.RawMessage {
	if len(bytes.TrimSpace(t.input)) == 0 {
		return json.RawMessage("{}")
	}
	return t.input
}

// Decode unmarshals the job's input into v, rejecting unknown fields. The API
// validated the input against the type's schema already; Decode is the typed
// second line of defence. It checks the type's input limits first (as the
// API does), so a task that reached the queue some other way cannot hand a
// handler a number or a nesting built to burn its CPU.
func (t *Task) Decode(v any) error {
	in := t.input
	if len(bytes.TrimSpace(in)) == 0 {
		in = json.RawMessage("{}")
	}
	if err := jobs.CheckInput(in, t.limits); err != nil {
		return fmt.Errorf("decode input: %v: %w", err, ErrPermanent)
	}
	dec := json.NewDecoder(bytes.NewReader(in))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode input: %v: %w", err, ErrPermanent)
	}
	return nil
}

// Progress reports how far the job is, percent in [0, 100] (clamped), with a
// short message for people. Each call is one Redis write, so report per
// meaningful step (a segment, a band of rows), not per inner-loop iteration.
// Progress is advisory: a failed write is logged by the runtime, not returned.
func (t *Task) Progress(percent float64, message string) {
	if t.progress == nil {
		return
	}
	t.progress(min(max(percent, 0), 100), message)
}

// Result opens the job's result stream with its content type. It may be
// called once; the bytes go to the blob store as they are written (results
// are never held whole in memory) and become visible only when the handler
// returns nil.
func (t *Task) Result(contentType string) (io.Writer, error) {
	if t.result != nil {
		return nil, errors.New("result already opened")
	}
	w, err := t.open(contentType)
	if err != nil {
		return nil, err
	}
	t.result = w
	return w, nil
}

// Logf adds one line to the job's log, which the job-token holder reads
// from the progress service (GET /v1/jobs/{id}/logs and "log" events).
// Job logs are the user's data, kept with the job and capped (see README,
// "Job logs"); they are not the worker's own logs. A message with
// newlines becomes several lines. Like Progress, Logf never fails the job:
// lines over the cap are dropped and counted.
func (t *Task) Logf(format string, args ...any) {
	if t.log == nil {
		return
	}
	msg := format
	if len(args) > 0 {
		msg = fmt.Sprintf(format, args...)
	}
	for line := range strings.SplitSeq(strings.TrimRight(msg, "\n"), "\n") {
		t.log(line)
	}
}

// Logger is a *slog.Logger writing to the job's log (see Logf) in slog's
// text format, for code that logs through slog.
func (t *Task) Logger() *slog.Logger {
	if t.logger == nil {
		t.logger = slog.New(slog.NewTextHandler(logfWriter{t}, &slog.HandlerOptions{
			ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
				if len(groups) == 0 && a.Key == slog.TimeKey {
					return slog.Attr{} // each line is timed where it is kept
				}
				return a
			},
		}))
	}
	return t.logger
}

// logfWriter feeds slog's output, one record per Write, to Logf.
type logfWriter struct{ t *Task }

func (w logfWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}

// RunLocal runs h outside Asynq, with progress going to onProgress (may be
// nil) and the result to w. It returns the content type the handler declared.
// Tests and the command line use it; it writes nothing to Redis.
func RunLocal(ctx context.Context, h Handler, input json.RawMessage, onProgress func(percent float64, message string), w io.Writer) (contentType string, err error) {
	t := &Task{
		id:       "local",
		attempt:  1,
		input:    input,
		progress: onProgress,
		open: func(ct string) (io.Writer, error) {
			contentType = ct
			return w, nil
		},
	}
	err = h(ctx, t)
	return contentType, err
}
