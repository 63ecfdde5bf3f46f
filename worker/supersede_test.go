package worker_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/claimcheck/claimcheck/internal/blob"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/worker"
)

// TestStaleRunDoesNotReplaceTheResult: while an attempt runs, its job moves
// on without it (a reconciler took its worker for lost and put the task
// back; a clock skew, a SIGSTOP'd or partitioned worker), and the next
// attempt runs elsewhere. When the stale attempt's handler then succeeds,
// its bytes must not replace the result the current attempt stored, and
// it must not delete that result: the record and the stored bytes agree.
// (Before: the stale attempt committed over the stored result — the record
// named a sha256 the bytes did not have — or, when the current attempt had
// stored but not yet recorded its result, deleted it.)
func TestStaleRunDoesNotReplaceTheResult(t *testing.T) {
	for _, tc := range []struct {
		name string
		// recorded: the current attempt recorded its success before the
		// stale one finished; else it records it after.
		recorded bool
	}{
		{"current attempt recorded first", true},
		{"current attempt stored but not yet recorded", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			ctx := context.Background()
			var current blob.Finished
			w := h.worker(t, 0, worker.Type{Name: "stale", Timeout: time.Minute, InputSchema: anyObject,
				Handle: func(ctx context.Context, task *worker.Task) error {
					// The current attempt, elsewhere, while this one runs.
					next := task.Attempt() + 1
					if st, err := h.store.StartAttempt(ctx, jobs.Attempt{ID: task.ID(), Owner: "ann", Queue: "default",
						Number: next, MaxRunning: 4, Lease: time.Minute}); err != nil || st.State != jobs.StateRunning {
						return errors.Join(err, errors.New("current attempt not started"))
					}
					bw, err := h.blobs.Create(task.ID(), 0)
					if err != nil {
						return err
					}
					io.WriteString(bw, "the current attempt's bytes")
					if err := bw.Commit(); err != nil {
						return err
					}
					current = blob.Finished{ContentType: "text/plain", Size: bw.Size(), SHA256: bw.SHA256(), Attempt: next}
					if tc.recorded {
						if _, err := h.store.Succeed(ctx, task.ID(), next, jobs.Result{ContentType: "text/plain", Size: current.Size, SHA256: current.SHA256}, time.Hour); err != nil {
							return err
						}
					}
					// The stale attempt's own, different, result.
					out, err := task.Result("text/plain")
					if err != nil {
						return err
					}
					_, err = io.WriteString(out, "the stale attempt's bytes")
					return err
				}})
			t.Cleanup(w.Shutdown)
			h.submitAsAPI(t, "stale", "s1", 3)
			insp := asynq.NewInspectorFromRedisClient(h.rdb)
			waitfor.True(t, 10*time.Second, func() bool { // the stale attempt is over
				_, err := insp.GetTaskInfo("default", "s1")
				return errors.Is(err, asynq.ErrTaskNotFound)
			})
			if !tc.recorded {
				if _, err := h.store.Succeed(ctx, "s1", current.Attempt, jobs.Result{ContentType: "text/plain", Size: current.Size, SHA256: current.SHA256}, time.Hour); err != nil {
					t.Fatal(err)
				}
			}
			j, err := h.store.Get(ctx, "s1")
			if err != nil {
				t.Fatal(err)
			}
			if j.State != jobs.StateSucceeded || j.Result == nil || j.Result.SHA256 != current.SHA256 {
				t.Fatalf("job = %s, result %+v; want succeeded with the current attempt's %s", j.State, j.Result, current.SHA256)
			}
			f, err := h.blobs.Open("s1")
			if err != nil {
				t.Fatalf("the recorded result is gone: %v", err)
			}
			defer f.Close()
			b, _ := io.ReadAll(f)
			sum := sha256.Sum256(b)
			if got := hex.EncodeToString(sum[:]); got != j.Result.SHA256 {
				t.Fatalf("stored bytes %q have sha256 %s; the record says %s", b, got, j.Result.SHA256)
			}
		})
	}
}

// TestStaleAttemptLeavesTheCurrentHeartbeat: an attempt whose job moved on
// to the next attempt while it ran, and which then fails, must not remove
// the heartbeat entry the current attempt's start wrote: without it, a
// reconciler would never find the current attempt if its worker died (a
// task Asynq then archives would leave the record running until it
// expires). (Before: the stale attempt's end removed it.)
func TestStaleAttemptLeavesTheCurrentHeartbeat(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	w := h.worker(t, 0, worker.Type{Name: "stalefail", Timeout: time.Minute, InputSchema: anyObject,
		Handle: func(ctx context.Context, task *worker.Task) error {
			// The next attempt starts elsewhere while this one runs.
			if _, err := h.store.StartAttempt(ctx, jobs.Attempt{ID: task.ID(), Owner: "ann", Queue: "default",
				Number: task.Attempt() + 1, MaxRunning: 4, Lease: time.Minute}); err != nil {
				return err
			}
			return errors.New("the stale attempt fails")
		}})
	t.Cleanup(w.Shutdown)
	h.submitAsAPI(t, "stalefail", "h1", 3)
	insp := asynq.NewInspectorFromRedisClient(h.rdb)
	waitfor.True(t, 10*time.Second, func() bool { // the stale attempt is over
		info, err := insp.GetTaskInfo("default", "h1")
		return err == nil && info.State == asynq.TaskStateRetry
	})
	if j, err := h.store.Get(ctx, "h1"); err != nil || j.State != jobs.StateRunning || j.Attempts != 2 {
		t.Fatalf("h1 = %+v, %v; want running its second attempt", j, err)
	}
	if _, err := h.rdb.ZScore(ctx, jobs.KeyHeartbeats, "h1").Result(); err != nil {
		t.Fatalf("the current attempt's heartbeat entry is gone: %v", err)
	}
}
