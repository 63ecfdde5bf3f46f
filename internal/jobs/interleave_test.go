package jobs_test

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
)

// The running path is a sequence of one-slot steps (doc.go, "Running").
// These tests put another actor, or a crash, between two of them and check
// that the guarantees the single script used to give still hold.

// capped starts attempts of ann's jobs at a cap of one.
func capped(t *testing.T, s *jobs.Store, ctx context.Context, id string, n int, run string) (jobs.Started, error) {
	t.Helper()
	return s.StartAttempt(ctx, jobs.Attempt{ID: id, Owner: "ann", Queue: "default", Number: n, MaxRunning: 1,
		Lease: time.Hour, MayHold: true, Run: run})
}

// A cancel that lands after the start took the owner's slot and before it
// moved the record: the job never starts, its slot and heartbeat entry are
// given back, and the job held back meanwhile by that slot is handed on.
func TestCancelBetweenSlotAndRecordNeverStarts(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Client(t)
	s := jobs.NewStore(rdb, nil)
	queuedJob(t, s, "a")
	queuedJob(t, s, "b")
	var held jobs.Started
	jobs.Interleave(s, func(step, id string) {
		if step != "acquired" || id != "a" {
			return
		}
		if _, err := s.RequestCancel(ctx, "a", jobs.AnyEpoch); err != nil {
			t.Error(err)
		}
		var err error
		if held, err = capped(t, s, ctx, "b", 1, "rb"); err != nil || !held.Held {
			t.Errorf("b while a holds the slot: %+v, %v", held, err)
		}
	})
	st, err := capped(t, s, ctx, "a", 1, "ra")
	if err != nil || st.State != jobs.StateCanceled || st.Held {
		t.Fatalf("start of a = %+v, %v; want canceled", st, err)
	}
	if !slices.Equal(st.Next, []jobs.Waiting{{Queue: "default", ID: "b"}}) {
		t.Fatalf("handed on = %v; want b, held by the slot a gave back", st.Next)
	}
	if j, _ := s.Get(ctx, "a"); j.State != jobs.StateCanceled || j.Attempts != 0 || j.StartedAt != nil {
		t.Fatalf("record of a = %+v", j)
	}
	if err := rdb.ZScore(ctx, jobs.OwnerRunningKey("ann"), "a").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("a still holds a slot: %v", err)
	}
	if err := rdb.ZScore(ctx, jobs.KeyHeartbeats, "a").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("a's heartbeat entry left: %v", err)
	}
	jobs.Interleave(s, nil)
	if st, err := capped(t, s, ctx, "b", 1, "rb"); err != nil || st.State != jobs.StateRunning {
		t.Fatalf("b handed on = %+v, %v", st, err)
	}
}

// A worker that dies after taking the slot and writing the first
// heartbeat, before the record: the record is untouched (queued), the
// reconciler only drops the entry, the task's re-run is let in on the slot
// it left, and the owner's other job stays within the cap meanwhile.
func TestWorkerDiesBetweenSlotAndRecord(t *testing.T) {
	rdb := redistest.Client(t)
	s := jobs.NewStore(rdb, nil)
	queuedJob(t, s, "a")
	queuedJob(t, s, "b")
	ctx, die := context.WithCancel(context.Background())
	jobs.Interleave(s, func(step, id string) {
		if step == "acquired" && id == "a" {
			die()
		}
	})
	if _, err := capped(t, s, ctx, "a", 1, "r1"); !errors.Is(err, context.Canceled) {
		t.Fatalf("start of a = %v; want it cut short", err)
	}
	jobs.Interleave(s, nil)
	ctx = context.Background()
	before, _ := s.Get(ctx, "a")
	if before.State != jobs.StateQueued || before.Attempts != 0 {
		t.Fatalf("record of a = %+v", before)
	}
	if st, err := capped(t, s, ctx, "b", 1, "rb"); err != nil || !st.Held {
		t.Fatalf("b = %+v, %v; want held, a's slot still counts", st, err)
	}
	cutoff := time.Now().Add(time.Hour)
	stale, err := s.Stale(ctx, cutoff, 10)
	if err != nil || len(stale) != 1 || stale[0].ID != "a" || stale[0].State != jobs.StateQueued || stale[0].Run != "r1" {
		t.Fatalf("stale = %+v, %v", stale, err)
	}
	if _, _, err := s.ReconcileReleasing(ctx, stale[0], cutoff, "", "", time.Hour, 1); err != nil {
		t.Fatal(err)
	}
	if n, _ := rdb.ZCard(ctx, jobs.KeyHeartbeats).Result(); n != 0 {
		t.Fatalf("%d heartbeat entries left", n)
	}
	if j, _ := s.Get(ctx, "a"); j.State != jobs.StateQueued || j.Version != before.Version {
		t.Fatalf("the reconciler changed a's record: %+v", j)
	}
	if st, err := capped(t, s, ctx, "a", 1, "r2"); err != nil || st.State != jobs.StateRunning {
		t.Fatalf("re-run of a = %+v, %v; want it let in on its slot", st, err)
	}
}

// A worker that dies after recording its job's end, before releasing the
// slot: the slot of an ended job is free for the owner's next job at once,
// without waiting for its lease.
func TestWorkerDiesBetweenRecordAndRelease(t *testing.T) {
	rdb := redistest.Client(t)
	s := jobs.NewStore(rdb, nil)
	queuedJob(t, s, "a")
	queuedJob(t, s, "b")
	ctx := context.Background()
	if st, err := capped(t, s, ctx, "a", 1, "r1"); err != nil || st.State != jobs.StateRunning {
		t.Fatalf("a = %+v, %v", st, err)
	}
	dctx, die := context.WithCancel(ctx)
	jobs.Interleave(s, func(step, id string) {
		if step == "recorded" {
			die()
		}
	})
	if _, _, err := s.SucceedReleasing(dctx, "a", 1, jobs.Result{}, time.Hour, &jobs.Slot{Owner: "ann", MaxRunning: 1}); !errors.Is(err, context.Canceled) {
		t.Fatalf("succeed = %v; want the release cut short", err)
	}
	jobs.Interleave(s, nil)
	if j, _ := s.Get(ctx, "a"); j.State != jobs.StateSucceeded {
		t.Fatalf("a = %+v", j)
	}
	if err := rdb.ZScore(ctx, jobs.OwnerRunningKey("ann"), "a").Err(); err != nil {
		t.Fatalf("a's slot: %v; want it left behind", err)
	}
	if st, err := capped(t, s, ctx, "b", 1, "rb"); err != nil || st.State != jobs.StateRunning {
		t.Fatalf("b = %+v, %v; want it running in the slot of ended a", st, err)
	}
	if ids, _ := rdb.ZRange(ctx, jobs.OwnerRunningKey("ann"), 0, -1).Result(); !slices.Equal(ids, []string{"b"}) {
		t.Fatalf("slots = %v", ids)
	}
}

// A start that takes the slot a release has just freed, between the
// release's two halves: the release hands on nothing, so the owner never
// has more jobs running than the cap, and the job still held keeps its
// place.
func TestSlotTakenBetweenFreeAndHandOn(t *testing.T) {
	rdb := redistest.Client(t)
	s := jobs.NewStore(rdb, nil)
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c"} {
		queuedJob(t, s, id)
	}
	capped(t, s, ctx, "a", 1, "ra")
	if st, _ := capped(t, s, ctx, "b", 1, "rb"); !st.Held {
		t.Fatal("b not held")
	}
	if st, _ := capped(t, s, ctx, "c", 1, "rc"); !st.Held {
		t.Fatal("c not held")
	}
	jobs.Interleave(s, func(step, id string) {
		if step != "freed" || id != "a" {
			return
		}
		if st, err := capped(t, s, ctx, "c", 1, "rc"); err != nil || st.State != jobs.StateRunning {
			t.Errorf("c in the freed slot = %+v, %v", st, err)
		}
	})
	st, next, err := s.SucceedReleasing(ctx, "a", 1, jobs.Result{}, time.Hour, &jobs.Slot{Owner: "ann", MaxRunning: 1})
	if err != nil || st != jobs.StateSucceeded || len(next) != 0 {
		t.Fatalf("succeed a = %s, %v, %v; want nothing handed on", st, next, err)
	}
	if ids, _ := rdb.ZRange(ctx, jobs.OwnerRunningKey("ann"), 0, -1).Result(); !slices.Equal(ids, []string{"c"}) {
		t.Fatalf("slots = %v; want c only", ids)
	}
	if held, _ := rdb.ZRange(ctx, "cc:owner-held:{ann}", 0, -1).Result(); !slices.Equal(held, []string{"default b"}) {
		t.Fatalf("held = %v; want b still waiting", held)
	}
}

// A newer run of the job starts between the reconciler's check of a lost
// run's heartbeat and its move of the record: the record is the newer
// run's and stays running, and so does its heartbeat entry.
func TestReconcileLosesToARunStartedBetweenItsSteps(t *testing.T) {
	rdb := redistest.Client(t)
	s := jobs.NewStore(rdb, nil)
	ctx := context.Background()
	queuedJob(t, s, "a")
	if st, err := capped(t, s, ctx, "a", 1, "r1"); err != nil || st.State != jobs.StateRunning {
		t.Fatalf("a = %+v, %v", st, err)
	}
	cutoff := time.Now().Add(time.Hour)
	stale, err := s.Stale(ctx, cutoff, 10)
	if err != nil || len(stale) != 1 {
		t.Fatalf("stale = %+v, %v", stale, err)
	}
	jobs.Interleave(s, func(step, id string) {
		if step == "checked" {
			if st, err := capped(t, s, ctx, "a", 2, "r2"); err != nil || st.State != jobs.StateRunning {
				t.Errorf("attempt 2 = %+v, %v", st, err)
			}
		}
	})
	st, _, err := s.ReconcileReleasing(ctx, stale[0], cutoff, jobs.StateFailed, "worker lost", time.Hour, 1)
	if err != nil || st != jobs.StateRunning {
		t.Fatalf("reconcile = %s, %v; want the record left running", st, err)
	}
	if j, _ := s.Get(ctx, "a"); j.State != jobs.StateRunning || j.Attempts != 2 {
		t.Fatalf("a = %+v", j)
	}
	if run, err := rdb.HGet(ctx, jobs.KeyHeartbeatRuns, "a").Result(); err != nil || run != "r2" {
		t.Fatalf("heartbeat entry's run = %q, %v; want r2's kept", run, err)
	}
	if err := rdb.ZScore(ctx, jobs.KeyHeartbeats, "a").Err(); err != nil {
		t.Fatalf("r2's heartbeat entry: %v", err)
	}
}

// The end of a superseded run (its job runs again elsewhere) neither
// removes nor refreshes the newer run's heartbeat entry, so a reconciler
// still finds the newer run if its worker is lost.
func TestSupersededRunLeavesTheNewerRunsHeartbeat(t *testing.T) {
	rdb := redistest.Client(t)
	s := jobs.NewStore(rdb, nil)
	ctx := context.Background()
	queuedJob(t, s, "a")
	capped(t, s, ctx, "a", 1, "r1")
	capped(t, s, ctx, "a", 1, "r2") // a hand-back's re-run of the same attempt
	rdb.ZAdd(ctx, jobs.KeyHeartbeats, redis.Z{Score: 1, Member: "a"})
	if err := s.HeartbeatRuns(ctx, []jobs.AttemptRun{{ID: "a", Run: "r1"}}); err != nil {
		t.Fatal(err)
	}
	if sc, _ := rdb.ZScore(ctx, jobs.KeyHeartbeats, "a").Result(); sc != 1 {
		t.Fatalf("score = %v; the superseded run refreshed the newer run's entry", sc)
	}
	if err := s.EndRunHeartbeat(ctx, "a", "r1"); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ZScore(ctx, jobs.KeyHeartbeats, "a").Err(); err != nil {
		t.Fatalf("the superseded run's end removed the newer run's entry: %v", err)
	}
	if err := s.HeartbeatRuns(ctx, []jobs.AttemptRun{{ID: "a", Run: "r2"}}); err != nil {
		t.Fatal(err)
	}
	if sc, _ := rdb.ZScore(ctx, jobs.KeyHeartbeats, "a").Result(); sc <= 1 {
		t.Fatalf("score = %v; the current run's heartbeat was not written", sc)
	}
	if err := s.EndRunHeartbeat(ctx, "a", "r2"); err != nil {
		t.Fatal(err)
	}
	if n, _ := rdb.ZCard(ctx, jobs.KeyHeartbeats).Result(); n != 0 {
		t.Fatalf("%d entries after the current run ended", n)
	}
	if n, _ := rdb.HLen(ctx, jobs.KeyHeartbeatRuns).Result(); n != 0 {
		t.Fatalf("%d runs after the current run ended", n)
	}
}

// roundTrips counts a client's round trips: one per command, one per
// pipeline however many commands it carries (on a cluster, a pipeline's
// nodes are asked side by side).
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { r.n.Add(1); return next(ctx, cmd) }
}
func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { r.n.Add(1); return next(ctx, cmds) }
}

// The steps cost what the running path can afford: a start two round
// trips (the slot and the first heartbeat side by side, then the record)
// and an end two (the record, then the slot and the heartbeat entry side
// by side), when nothing is held; commands are counted too.
func TestRunningPathRoundTrips(t *testing.T) {
	redistest.Client(t) // flushed
	rdb := redistest.NewClient(t)
	var rt roundTrips
	var cmds redistest.Counter
	rdb.AddHook(&rt)
	rdb.AddHook(&cmds)
	s := jobs.NewStore(rdb, nil)
	ctx := context.Background()
	slot := &jobs.Slot{Owner: "ann", MaxRunning: 2, Run: "r"}
	run := func(id string) (start, end [2]int64) {
		t.Helper()
		queuedJob(t, s, id)
		measure := func(f func()) [2]int64 {
			rt.n.Store(0)
			cmds.Reset()
			f()
			return [2]int64{rt.n.Load(), int64(cmds.Count())}
		}
		start = measure(func() {
			if st, err := s.StartAttempt(ctx, jobs.Attempt{ID: id, Owner: "ann", Queue: "default", Number: 1, MaxRunning: 2, Lease: time.Hour, MayHold: true, Run: "r"}); err != nil || st.State != jobs.StateRunning {
				t.Fatalf("start %s: %+v, %v", id, st, err)
			}
		})
		end = measure(func() {
			if st, _, err := s.SucceedReleasing(ctx, id, 1, jobs.Result{}, time.Hour, slot); err != nil || st != jobs.StateSucceeded {
				t.Fatalf("succeed %s: %s, %v", id, st, err)
			}
		})
		return start, end
	}
	// The first run loads the scripts on the nodes that hold them; the
	// same job again, its record deleted, runs on the same nodes.
	run("j")
	if err := rdb.Del(ctx, jobs.JobKey("j")).Err(); err != nil {
		t.Fatal(err)
	}
	start, end := run("j")
	t.Logf("round trips (commands): start %d (%d), end %d (%d)", start[0], start[1], end[0], end[1])
	if start[0] != 2 || end[0] != 2 {
		t.Fatalf("round trips: start %d, end %d; want 2 and 2", start[0], end[0])
	}
	if n, _ := rdb.ZCard(ctx, jobs.KeyHeartbeats).Result(); n != 0 {
		t.Fatalf("%d heartbeat entries after the end", n)
	}
	if n, _ := rdb.ZCard(ctx, jobs.OwnerRunningKey("ann")).Result(); n != 0 {
		t.Fatalf("%d slots held after the end", n)
	}
}

// A reconciler that dies after putting a lost attempt's task back in its
// queue (Asynq's slot) and before moving the record (the job's slot): the
// task runs once, as the next attempt, and takes the record over; a
// reconciler acting on the old reading changes nothing and cannot put the
// task back a second time.
func TestReconcilerDiesBetweenRequeueAndRecord(t *testing.T) {
	rdb := redistest.Client(t)
	s := jobs.NewStore(rdb, nil)
	ctx := context.Background()
	queuedJob(t, s, "o") // max_retry 2
	if _, err := asynq.NewClientFromRedisClient(rdb).EnqueueContext(ctx, asynq.NewTask("sleep", []byte(`{"job":"o"}`)),
		asynq.TaskID("o"), asynq.MaxRetry(jobs.DeliveryRetries(2))); err != nil {
		t.Fatal(err)
	}
	if st, err := capped(t, s, ctx, "o", 1, "r1"); err != nil || st.State != jobs.StateRunning {
		t.Fatalf("attempt 1 = %+v, %v", st, err)
	}
	// The attempt's worker is lost and its task archived (an operator, or
	// Asynq's delivery budget).
	insp := asynq.NewInspectorFromRedisClient(rdb)
	if err := insp.ArchiveTask("default", "o"); err != nil {
		t.Fatal(err)
	}
	cutoff := time.Now().Add(time.Hour)
	stale, err := s.Stale(ctx, cutoff, 10)
	if err != nil || len(stale) != 1 || stale[0].Run != "r1" {
		t.Fatalf("stale = %+v, %v", stale, err)
	}
	if ok, err := s.StillStale(ctx, stale[0], cutoff); err != nil || !ok {
		t.Fatalf("still stale = %v, %v", ok, err)
	}
	if ok, err := s.RequeueTask(ctx, "default", "o", stale[0].Attempt, stale[0].MaxRetry, time.Now()); err != nil || !ok {
		t.Fatalf("requeue = %v, %v", ok, err)
	}
	// The reconciler dies here. The task runs as attempt 2, on the slot
	// attempt 1 kept.
	info, err := insp.GetTaskInfo("default", "o")
	if err != nil || info.State != asynq.TaskStatePending || info.Retried != 1 {
		t.Fatalf("task = %+v, %v; want pending, retried once", info, err)
	}
	if st, err := capped(t, s, ctx, "o", info.Retried+1, "r2"); err != nil || st.State != jobs.StateRunning {
		t.Fatalf("attempt 2 = %+v, %v", st, err)
	}
	// Another reconciler, on the reading from before.
	if st, _, err := s.ReconcileReleasing(ctx, stale[0], cutoff, jobs.StateRetrying, "worker lost", time.Hour, 1); err != nil || st != "" {
		t.Fatalf("reconcile on the old reading = %q, %v; want nothing done", st, err)
	}
	if ok, err := s.RequeueTask(ctx, "default", "o", stale[0].Attempt, stale[0].MaxRetry, time.Now()); err != nil || ok {
		t.Fatalf("second requeue = %v, %v; want none", ok, err)
	}
	if j, _ := s.Get(ctx, "o"); j.State != jobs.StateRunning || j.Attempts != 2 || j.Error != nil {
		t.Fatalf("record = %+v; want attempt 2 running", j)
	}
	if n, _ := rdb.LLen(ctx, "asynq:{default}:pending").Result(); n != 1 {
		t.Fatalf("%d tasks pending; want the one re-run", n)
	}
}
