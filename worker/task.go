package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/claimcheck/claimcheck/internal/jobs"
)

// Type is a job type a worker can run: the spec the API validates against,
// and the handler that does the work.
type Type struct {
	jobs.TypeSpec
	Handle Handler
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
}

// ID is the job's id.
func (t *Task) ID() string { return t.id }

// Attempt counts from 1.
func (t *Task) Attempt() int { return t.attempt }

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
