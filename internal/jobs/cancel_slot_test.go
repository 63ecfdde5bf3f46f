package jobs_test

import (
	"context"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
)

// deletingCanceler is an Asynq whose task is waiting: DeleteTask takes it.
type deletingCanceler struct{}

func (deletingCanceler) DeleteTask(queue, id string) error { return nil }
func (deletingCanceler) CancelProcessing(id string) error  { return nil }

// TestCancelWhileWaitingFreesTheSlot: a job that keeps its running-job slot
// while it waits to run again (a reconciler made it retrying after its
// worker was lost; a shutdown handed it back when its grace ran out) and
// is then cancelled before it runs — by the progress service, whose Redis
// user may not touch the slots — no longer holds the owner's other jobs
// back until the slot's lease ends (the attempt's time limit and a minute
// later): the next start finds the slot of an ended job free.
func TestCancelWhileWaitingFreesTheSlot(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Client(t)
	s := jobs.NewStore(rdb, nil)
	queuedJob(t, s, "w1")
	if st, err := s.StartAttempt(ctx, jobs.Attempt{ID: "w1", Owner: "ann", Queue: "default", Number: 1, MaxRunning: 4, Lease: time.Hour}); err != nil || st.State != jobs.StateRunning {
		t.Fatalf("start: %+v, %v", st, err)
	}
	cutoff := time.Now().Add(time.Hour)
	stale, err := s.Stale(ctx, cutoff, 10)
	if err != nil || len(stale) != 1 {
		t.Fatalf("stale = %+v, %v", stale, err)
	}
	if st, _, err := s.ReconcileReleasing(ctx, stale[0], cutoff, jobs.StateRetrying, "worker lost", time.Hour, 4); err != nil || st != jobs.StateRetrying {
		t.Fatalf("reconcile = %s, %v", st, err)
	}
	if rdb.ZScore(ctx, jobs.OwnerRunningKey("ann"), "w1").Err() != nil {
		t.Fatal("the slot was not kept for the re-run")
	}
	j, err := jobs.CancelJob(ctx, s, deletingCanceler{}, "w1", jobs.AnyEpoch, time.Hour)
	if err != nil || j.State != jobs.StateCanceled {
		t.Fatalf("cancel = %+v, %v", j, err)
	}
	// The owner's next job finds the slot free, at a cap of one.
	queuedJob(t, s, "w2")
	if st, err := s.StartAttempt(ctx, jobs.Attempt{ID: "w2", Owner: "ann", Queue: "default", Number: 1, MaxRunning: 1, MayHold: true, Lease: time.Hour}); err != nil || st.State != jobs.StateRunning || st.Held {
		t.Fatalf("the owner's next job: %+v, %v; want it running, the cancelled job's slot free", st, err)
	}
	if err := rdb.ZScore(ctx, jobs.OwnerRunningKey("ann"), "w1").Err(); err == nil {
		t.Fatal("the cancelled job still holds a running-job slot")
	}
}
