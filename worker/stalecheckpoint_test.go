package worker_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/worker"
)

// TestHandedBackRunCannotOverwriteTheNextRunsCheckpoint: a handler that
// ignores the shutdown's cancel outlives its grace period; Asynq hands its
// task back and another worker runs it, as the same attempt number (a
// hand-back spends no retry). When the old handler then saves a
// checkpoint, it must be refused: it would replace the one the current run
// saved, and the run after that would start from the stale one.
// (Before: the attempt number matched, so it was saved.)
func TestHandedBackRunCannotOverwriteTheNextRunsCheckpoint(t *testing.T) {
	h := newHarness(t)
	release := make(chan struct{})
	staleSave := make(chan error, 1)
	current := make(chan struct{}, 1)
	var runs atomic.Int32
	typ := worker.Type{Name: "ckpt", Timeout: time.Minute, InputSchema: anyObject,
		Handle: func(ctx context.Context, task *worker.Task) error {
			if runs.Add(1) == 1 { // the first run: ignores the cancel
				<-release
				staleSave <- task.SaveCheckpoint([]byte("stale"))
				return nil
			}
			// The next run, elsewhere.
			if err := task.SaveCheckpoint([]byte("current")); err != nil {
				return err
			}
			current <- struct{}{}
			<-ctx.Done()
			return ctx.Err()
		}}
	first := h.worker(t, 200*time.Millisecond, typ)
	h.submitAsAPI(t, "ckpt", "c1", 0)
	h.waitState(t, "c1", jobs.StateRunning)
	first.Shutdown() // returns once Asynq has handed the task back
	second := h.worker(t, 0, typ)
	t.Cleanup(second.Shutdown)
	select {
	case <-current:
	case <-time.After(10 * time.Second):
		t.Fatal("the handed-back job was not run again")
	}
	close(release)
	if err := <-staleSave; err == nil {
		t.Error("the handed-back run's checkpoint was accepted")
	}
	got, err := h.rdb.Get(context.Background(), jobs.CheckpointKey("c1")).Result()
	if err != nil || got != "current" {
		t.Fatalf("checkpoint = %q, %v; want the current run's", got, err)
	}
}
