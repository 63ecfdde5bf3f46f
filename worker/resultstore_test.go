package worker_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/worker"
)

// unstorable is a job type whose result cannot be committed on the
// attempts in failOn: a non-empty directory sits where the result file
// would be renamed to (the store refuses it as it would a full or
// read-only disk, even for root).
func unstorable(root string, failOn map[int]bool) worker.Type {
	return worker.Type{
		Name: "unstorable", Timeout: time.Minute, InputSchema: anyObject,
		Handle: func(ctx context.Context, task *worker.Task) error {
			w, err := task.Result("text/plain")
			if err != nil {
				return err
			}
			if _, err := io.WriteString(w, "result"); err != nil {
				return err
			}
			block := filepath.Join(root, task.ID())
			if failOn[task.Attempt()] {
				return os.MkdirAll(filepath.Join(block, "x"), 0o750)
			}
			return os.RemoveAll(block)
		},
	}
}

// A result that cannot be stored on the last attempt fails the job with a
// reason free of server paths, instead of leaving it running forever.
func TestResultNotStoredFailsJob(t *testing.T) {
	h := newHarness(t)
	t.Cleanup(h.worker(t, 0, unstorable(h.blobs.Root(), map[int]bool{1: true, 2: true})).Shutdown)
	h.submitAs(t, "ann", "unstorable", "j1", 0)
	j := h.waitFinal(t, "j1")
	if j.State != jobs.StateFailed || j.Attempts != 1 {
		t.Fatalf("job = %+v, want failed after 1 attempt", j)
	}
	if j.Error == nil || *j.Error != "result could not be stored" || strings.Contains(*j.Error, "/") {
		t.Fatalf("error = %v", j.Error)
	}
}

// With a retry left, the failed commit is a failed attempt: the job is
// retried, and the next attempt's result is stored.
func TestResultNotStoredRetries(t *testing.T) {
	h := newHarness(t)
	t.Cleanup(h.worker(t, 0, unstorable(h.blobs.Root(), map[int]bool{1: true})).Shutdown)
	h.submitAs(t, "ann", "unstorable", "j1", 1)
	j := h.waitFinal(t, "j1")
	if j.State != jobs.StateSucceeded || j.Attempts != 2 || j.Result == nil || j.Result.Size != int64(len("result")) {
		t.Fatalf("job = %+v, want succeeded on attempt 2", j)
	}
}
