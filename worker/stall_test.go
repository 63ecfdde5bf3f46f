package worker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/worker"
)

// TestRedisStallPastTheLeaseSaysSo: Redis freezes for longer than Asynq's
// 30 s lease while a job runs. Asynq stops the attempt (it cannot renew the
// lease), and the record says why — Redis did not answer — instead of
// "context canceled"; the retry then runs the job to success. (Before: the
// attempt was recorded as "context canceled", with no mention of Redis.)
// It takes over 30 s, Asynq's lease being fixed, so it runs in parallel.
func TestRedisStallPastTheLeaseSaysSo(t *testing.T) {
	t.Parallel()
	h, srv := faultHarness(t)
	rdb := h.rdb
	var err error
	started := make(chan *worker.Task, 2)
	w := h.worker(t, 0, worker.Type{Name: "stalled", Timeout: 5 * time.Minute, InputSchema: anyObject, MaxRetry: 2,
		Handle: func(ctx context.Context, task *worker.Task) error {
			started <- task
			if task.Attempt() > 1 {
				return nil
			}
			<-ctx.Done()
			return ctx.Err()
		}})
	t.Cleanup(w.Shutdown)
	h.submitAsAPI(t, "stalled", "st1", 2)
	waitTask(t, started)
	srv.Pause()
	time.Sleep(32 * time.Second) // the fault: longer than Asynq's 30 s lease
	srv.Resume()
	var j *jobs.Job
	waitfor.True(t, 90*time.Second, func() bool {
		j, err = h.store.Get(context.Background(), "st1")
		return err == nil && j.State.Final()
	})
	if j.State != jobs.StateSucceeded || j.Attempts != 2 {
		t.Fatalf("job %s after %d attempts, want succeeded after 2", j.State, j.Attempts)
	}
	// The first attempt's end was recorded with its reason; the record's
	// event log keeps it.
	evs, err := rdb.XRange(context.Background(), jobs.JobKey("st1")+jobs.KeySuffixEvents, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, e := range evs {
		for _, v := range e.Values {
			if s, ok := v.(string); ok && strings.Contains(s, `"error"`) {
				reasons = append(reasons, s)
			}
		}
	}
	if len(reasons) == 0 || !strings.Contains(strings.Join(reasons, " "), "Redis did not answer") ||
		strings.Contains(strings.Join(reasons, " "), "context canceled") || strings.Contains(strings.Join(reasons, " "), "worker lost") {
		t.Fatalf("the stalled attempt's recorded reasons %q, want one naming Redis, none saying context canceled, and no live worker called lost", reasons)
	}
}
