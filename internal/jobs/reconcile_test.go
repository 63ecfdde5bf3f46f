package jobs_test

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
)

// RequeueTask takes only a task Asynq would not run again soon: an active
// one is left alone while its lease is live (or, unless asked, expired),
// and put back once it has expired (or without one), stored as retried as
// many times as the attempts spent, with the job's delivery budget, every
// other field of its message intact.
func TestRequeueTaskOnlyTakesUnleasedOrArchived(t *testing.T) {
	rdb := redistest.Client(t)
	s := jobs.NewStore(rdb, nil)
	ctx := context.Background()
	c := asynq.NewClientFromRedisClient(rdb)
	if _, err := c.EnqueueContext(ctx, asynq.NewTask("sleep", []byte(`{"job":"t1"}`)), asynq.TaskID("t1"),
		asynq.MaxRetry(1), asynq.Timeout(time.Minute)); err != nil {
		t.Fatal(err)
	}
	requeue := func(expiredBefore time.Time, want bool) {
		t.Helper()
		if ok, err := s.RequeueTask(ctx, "default", "t1", 2, 3, expiredBefore); err != nil || ok != want {
			t.Fatalf("requeue = %v, %v; want %v", ok, err, want)
		}
	}
	now := time.Now()
	requeue(now, false) // pending: it will run anyway
	// Made active as Asynq's dequeue does, with a live lease.
	if err := rdb.LMove(ctx, "asynq:{default}:pending", "asynq:{default}:active", "RIGHT", "LEFT").Err(); err != nil {
		t.Fatal(err)
	}
	rdb.ZAdd(ctx, "asynq:{default}:lease", redis.Z{Score: float64(now.Add(30 * time.Second).Unix()), Member: "t1"})
	rdb.HSet(ctx, "asynq:{default}:t:t1", "state", "active")
	requeue(now, false)
	requeue(time.Time{}, false)
	// The lease expired: taken only when asked to take an expired one.
	rdb.ZAdd(ctx, "asynq:{default}:lease", redis.Z{Score: float64(now.Add(-time.Minute).Unix()), Member: "t1"})
	requeue(time.Time{}, false)
	requeue(now, true)
	if n, _ := rdb.ZCard(ctx, "asynq:{default}:lease").Result(); n != 0 {
		t.Fatalf("lease left: %d", n)
	}
	if n, _ := rdb.LLen(ctx, "asynq:{default}:active").Result(); n != 0 {
		t.Fatalf("still active: %d", n)
	}
	info, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo("default", "t1")
	if err != nil {
		t.Fatal(err)
	}
	if info.State != asynq.TaskStatePending || info.Retried != 2 || info.MaxRetry != jobs.DeliveryRetries(3) ||
		info.Type != "sleep" || string(info.Payload) != `{"job":"t1"}` || info.Timeout != time.Minute {
		t.Fatalf("task = %+v", info)
	}
	requeue(now, false) // pending again
}
