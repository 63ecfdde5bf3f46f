package jobs_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
)

// TestFinding5KilledWorkersSlotFreesAtLeaseEnd: a worker killed while its
// job runs never releases the job's slot. The slot still counts until its
// lease ends (a re-run of that job, which Asynq recovers, is let in), and
// then frees itself, so the owner's held job starts; the clock is the
// store's, so nothing waits for real time.
func TestFinding5KilledWorkersSlotFreesAtLeaseEnd(t *testing.T) {
	s, now := newStore(t)
	ctx := context.Background()
	for _, id := range []string{"k1", "k2"} {
		queuedJob(t, s, id)
	}
	attempt := func(id string, n int) jobs.Started {
		t.Helper()
		st, err := s.StartAttempt(ctx, jobs.Attempt{ID: id, Owner: "ann", Queue: "default", Number: n, MaxRunning: 1, Lease: time.Minute, MayHold: true})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	if st := attempt("k1", 1); st.State != jobs.StateRunning || st.Held || st.MaxRetry != 2 {
		t.Fatalf("first job: %+v", st)
	}
	// k1's worker is SIGKILLed here: no Release.
	if st := attempt("k2", 1); !st.Held || st.State != jobs.StateQueued {
		t.Fatalf("second job, owner at the cap: %+v", st)
	}
	j, _ := s.Get(ctx, "k2")
	if j.State != jobs.StateQueued || j.HoldReason == nil || j.Attempts != 0 {
		t.Fatalf("held record = %+v", j)
	}
	*now = now.Add(59 * time.Second)
	if st := attempt("k2", 1); !st.Held || st.HeldFor != 59*time.Second {
		t.Fatalf("before the lease ends: %+v", st)
	}
	if st := attempt("k1", 1); st.State != jobs.StateRunning || st.Held {
		t.Fatalf("re-run of the job holding the slot: %+v", st)
	}
	// The re-run renewed k1's lease; its worker dies too. A minute later
	// the slot is free.
	*now = now.Add(time.Minute + time.Millisecond)
	if st := attempt("k2", 1); st.State != jobs.StateRunning || st.Held {
		t.Fatalf("after the lease ended: %+v", st)
	}
	if j, _ := s.Get(ctx, "k2"); j.State != jobs.StateRunning || j.HoldReason != nil || j.Attempts != 1 {
		t.Fatalf("started record = %+v", j)
	}
}

// TestReleaseHandsHeldJobsOn: ending a job frees its slot and names the
// owner's oldest held jobs, as many as may now run, once each; a held job
// cancelled meanwhile is skipped.
func TestReleaseHandsHeldJobsOn(t *testing.T) {
	s, now := newStore(t)
	ctx := context.Background()
	ids := []string{"r1", "r2", "r3", "r4", "r5"}
	for _, id := range ids {
		queuedJob(t, s, id)
	}
	for i, id := range ids {
		*now = now.Add(time.Second) // held in order
		st, err := s.StartAttempt(ctx, jobs.Attempt{ID: id, Owner: "ann", Queue: "default", Number: 1, MaxRunning: 2, Lease: time.Hour, MayHold: true})
		if err != nil || st.Held != (i >= 2) {
			t.Fatalf("%s: %+v %v", id, st, err)
		}
	}
	if _, err := s.RequestCancel(ctx, "r3", jobs.AnyEpoch); err != nil {
		t.Fatal(err)
	}
	next, err := s.Release(ctx, "ann", "r1", 2)
	if err != nil || !slices.Equal(next, []jobs.Waiting{{Queue: "default", ID: "r4"}}) {
		t.Fatalf("release r1: %v %v", next, err)
	}
	if next, _ := s.Release(ctx, "ann", "r1", 2); len(next) != 1 || next[0].ID != "r5" {
		t.Fatalf("second release of r1 (r4 has not started yet): %v", next)
	}
	if next, _ := s.Release(ctx, "ann", "r2", 2); len(next) != 0 {
		t.Fatalf("nothing left held: %v", next)
	}
}

// TestEndingAnAttemptReleasesItsSlot: the script that records an attempt's
// end frees its slot and hands a held job on, in one round trip; a report
// from an attempt that is no longer current leaves the slot to the newer one.
func TestEndingAnAttemptReleasesItsSlot(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	start := func(id string, n int) jobs.Started {
		t.Helper()
		st, err := s.StartAttempt(ctx, jobs.Attempt{ID: id, Owner: "ann", Queue: "low", Number: n, MaxRunning: 1, Lease: time.Hour, MayHold: true})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	queuedJob(t, s, "e1")
	queuedJob(t, s, "e2")
	start("e1", 1)
	if !start("e2", 1).Held {
		t.Fatal("e2 not held")
	}
	slot := &jobs.Slot{Owner: "ann", MaxRunning: 1}
	start("e1", 2) // a newer attempt of e1 took over (its first worker was lost)
	if st, next, err := s.FailReleasing(ctx, "e1", 1, "stale", false, time.Hour, slot); err != nil || st != jobs.StateRunning || len(next) != 0 {
		t.Fatalf("stale report: %s %v %v", st, next, err)
	}
	if !start("e2", 1).Held {
		t.Fatal("a stale report freed the newer attempt's slot")
	}
	st, next, err := s.SucceedReleasing(ctx, "e1", 2, jobs.Result{}, time.Hour, slot)
	if err != nil || st != jobs.StateSucceeded || !slices.Equal(next, []jobs.Waiting{{Queue: "low", ID: "e2"}}) {
		t.Fatalf("succeed: %s %v %v", st, next, err)
	}
	if st := start("e2", 1); st.State != jobs.StateRunning {
		t.Fatalf("e2 after e1 ended: %+v", st)
	}
}

// queuedJob writes job id queued through create (owner ann, queue default,
// max_retry 2, a minute per attempt, an hour to live).
func queuedJob(t testing.TB, s *jobs.Store, id string) {
	t.Helper()
	create(t, s, id)
}
