package worker_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/worker"
)

// submitPending does the api's first two steps (a pending record, its
// task) and leaves the confirm to the test.
func (h *harness) submitPending(t *testing.T, typ, id string, pendingTTL time.Duration) {
	t.Helper()
	ctx := context.Background()
	if _, err := h.store.Create(ctx, jobs.NewJob{ID: id, Type: typ, Owner: "ann", Queue: "default",
		Timeout: 10 * time.Second, TTL: time.Hour, PendingTTL: pendingTTL}); err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(jobs.TaskPayload{Job: id, Owner: "ann", Input: json.RawMessage(`{}`)})
	if _, err := asynq.NewClientFromRedisClient(h.rdb).EnqueueContext(ctx, asynq.NewTask(typ, payload),
		asynq.TaskID(id), asynq.MaxRetry(1), asynq.Timeout(10*time.Second), asynq.Retention(time.Hour)); err != nil {
		t.Fatal(err)
	}
}

func counting(runs *atomic.Int32) worker.Type {
	return worker.Type{Name: "count", Timeout: time.Minute, InputSchema: anyObject,
		Handle: func(context.Context, *worker.Task) error { runs.Add(1); return nil }}
}

// TestPendingJobRunsOnlyOnceConfirmed: a task whose record is still
// pending (its submission not confirmed) is handed back, not run and
// without spending a retry, however often it comes round; once confirmed
// it runs.
func TestPendingJobRunsOnlyOnceConfirmed(t *testing.T) {
	var runs atomic.Int32
	h := start(t, counting(&runs))
	h.submitPending(t, "count", "p1", time.Hour)
	insp := asynq.NewInspectorFromRedisClient(h.rdb)
	// Handed back: the worker has seen it pending.
	waitfor.True(t, 10*time.Second, func() bool {
		info, err := insp.GetTaskInfo("default", "p1")
		return err == nil && info.State == asynq.TaskStateRetry && !info.LastFailedAt.IsZero()
	})
	info, _ := insp.GetTaskInfo("default", "p1")
	j, err := h.store.Get(context.Background(), "p1")
	if err != nil || j.State != jobs.StatePending || runs.Load() != 0 || info.Retried != 0 {
		t.Fatalf("unconfirmed job: %+v %v, ran %d times, retried %d", j, err, runs.Load(), info.Retried)
	}
	if st, err := h.store.Confirm(context.Background(), "p1", "ann", "", time.Hour, 0); err != nil || st != jobs.StateQueued {
		t.Fatalf("confirm: %s %v", st, err)
	}
	if j := h.waitFinal(t, "p1"); j.State != jobs.StateSucceeded || runs.Load() != 1 || j.Attempts != 1 {
		t.Fatalf("confirmed job: %+v, ran %d times", j, runs.Load())
	}
}

// TestUnconfirmedJobIsDropped: a pending record that expires unconfirmed
// (the api died or Redis failed before its confirm) takes its task with
// it: the worker drops the task and never runs the job.
func TestUnconfirmedJobIsDropped(t *testing.T) {
	var runs atomic.Int32
	h := start(t, counting(&runs))
	h.submitPending(t, "count", "p2", 300*time.Millisecond)
	insp := asynq.NewInspectorFromRedisClient(h.rdb)
	waitfor.True(t, 10*time.Second, func() bool {
		info, err := insp.GetTaskInfo("default", "p2")
		return err == nil && info.State == asynq.TaskStateCompleted
	})
	if n, _ := h.rdb.Exists(context.Background(), jobs.JobKey("p2")).Result(); n != 0 || runs.Load() != 0 {
		t.Fatalf("record exists %d, ran %d times", n, runs.Load())
	}
}
