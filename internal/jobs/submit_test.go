package jobs_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/keyslot"
	"github.com/claimcheck/claimcheck/internal/redistest"
)

// annGate is an owner gate in ann's slot, as her user record is.
var annGate = "test:user:" + keyslot.Tag("ann")

func pendingJob(maxActive int, idem string) jobs.NewJob {
	nj := newJob("ann", maxActive)
	nj.PendingTTL, nj.OwnerGate = time.Minute, annGate
	if idem != "" {
		nj.IdempotencyKey, nj.BodyHash = idem, "h"
	}
	return nj
}

func confirmation(nj jobs.NewJob) jobs.Confirmation {
	return jobs.Confirmation{ID: nj.ID, Owner: nj.Owner, IdempotencyKey: nj.IdempotencyKey, TTL: time.Hour,
		MaxActive: nj.MaxActive, OwnerGate: nj.OwnerGate}
}

// block is what "users block --cancel-jobs" does to ann's jobs: the gate
// first, then every job of hers that has not ended.
func block(t *testing.T, rdb redis.UniversalClient, s *jobs.Store) int {
	t.Helper()
	ctx := context.Background()
	if err := rdb.HSet(ctx, annGate, "blocked", "1").Err(); err != nil {
		t.Fatal(err)
	}
	n, err := jobs.CancelOwnerJobs(ctx, s, deletingCanceler{}, "ann", time.Hour)
	if err != nil {
		t.Fatalf("cancel ann's jobs: %v", err)
	}
	return n
}

// nothingOf checks that job id is nowhere a client or a worker sees it:
// no record that reads, not listed, not active, and a record that is
// left (a refused tombstone) is one no worker runs.
func nothingOf(t *testing.T, rdb redis.UniversalClient, s *jobs.Store, id string) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.Get(ctx, id); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("job %s: Get = %v, want not found", id, err)
	}
	page, err := s.List(ctx, "ann", "", 100, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range page.Jobs {
		if j.ID == id {
			t.Fatalf("job %s listed", id)
		}
	}
	active, _ := s.ActiveOrPending(ctx, "ann")
	for _, a := range active {
		if a == id {
			t.Fatalf("job %s still active", id)
		}
	}
	if st, _ := rdb.HGet(ctx, jobs.JobKey(id), "state").Result(); st != "" && st != string(jobs.StateCanceled) {
		t.Fatalf("job %s left a record in state %q that a worker would run", id, st)
	}
}

// TestBlockLandsBetweenSubmitSteps blocks the owner, with --cancel-jobs, at
// each gap of a submission: before it, between the reservation and the
// admission, between the admission and the commit (the record's flip), and
// after the commit. The submission is refused, or its job is cancelled;
// it never ends up queued.
func TestBlockLandsBetweenSubmitSteps(t *testing.T) {
	ctx := context.Background()
	t.Run("before create", func(t *testing.T) {
		rdb := redistest.Client(t)
		s := jobs.NewStore(rdb, nil)
		block(t, rdb, s)
		nj := pendingJob(0, "k")
		if _, err := s.Create(ctx, nj); !errors.Is(err, jobs.ErrOwnerBlocked) {
			t.Fatalf("create: %v, want ErrOwnerBlocked", err)
		}
		nothingOf(t, rdb, s, nj.ID)
	})
	t.Run("between create and confirm", func(t *testing.T) {
		rdb := redistest.Client(t)
		s := jobs.NewStore(rdb, nil)
		nj := pendingJob(0, "k")
		if _, err := s.Create(ctx, nj); err != nil {
			t.Fatal(err)
		}
		if n := block(t, rdb, s); n != 0 {
			t.Fatalf("cancelled %d jobs; the pending one is no job yet", n)
		}
		if _, err := s.ConfirmJob(ctx, confirmation(nj)); !errors.Is(err, jobs.ErrOwnerBlocked) {
			t.Fatalf("confirm: %v, want ErrOwnerBlocked", err)
		}
		nothingOf(t, rdb, s, nj.ID)
		// The claim went with it: once unblocked, the key starts afresh.
		rdb.HSet(ctx, annGate, "blocked", "0")
		again := pendingJob(0, "k")
		if _, err := s.Create(ctx, again); err != nil {
			t.Fatalf("the key after the refusal: %v", err)
		}
	})
	t.Run("between admit and flip", func(t *testing.T) {
		rdb := redistest.Client(t)
		s := jobs.NewStore(rdb, nil)
		nj := pendingJob(0, "k")
		if _, err := s.Create(ctx, nj); err != nil {
			t.Fatal(err)
		}
		landed := false
		jobs.SetAfterAdmit(s, func(id string) {
			landed = true
			if n := block(t, rdb, s); n != 0 {
				t.Errorf("cancelled %d jobs; the admitted one is not confirmed", n)
			}
		})
		if _, err := s.ConfirmJob(ctx, confirmation(nj)); !errors.Is(err, jobs.ErrOwnerBlocked) || !landed {
			t.Fatalf("confirm: %v (block landed: %v), want ErrOwnerBlocked", err, landed)
		}
		nothingOf(t, rdb, s, nj.ID)
	})
	t.Run("after confirm", func(t *testing.T) {
		rdb := redistest.Client(t)
		s := jobs.NewStore(rdb, nil)
		nj := pendingJob(0, "k")
		if _, err := s.Create(ctx, nj); err != nil {
			t.Fatal(err)
		}
		if st, err := s.ConfirmJob(ctx, confirmation(nj)); err != nil || st != jobs.StateQueued {
			t.Fatalf("confirm: %s %v", st, err)
		}
		if n := block(t, rdb, s); n != 1 {
			t.Fatalf("cancelled %d jobs, want the confirmed one", n)
		}
		if j, err := s.Get(ctx, nj.ID); err != nil || j.State != jobs.StateCanceled {
			t.Fatalf("the confirmed job after the block: %+v %v", j, err)
		}
	})
}

// TestQuotaHoldsUnderConcurrentSubmits: many submissions at once, each
// creating and confirming, at a quota of two: exactly two are accepted,
// the others refused for the quota, and nothing of the refused remains.
func TestQuotaHoldsUnderConcurrentSubmits(t *testing.T) {
	rdb := redistest.Client(t)
	s := jobs.NewStore(rdb, nil)
	ctx := context.Background()
	const n, limit = 12, 2
	var wg sync.WaitGroup
	errs := make([]error, n)
	njs := make([]jobs.NewJob, n)
	for i := range n {
		njs[i] = pendingJob(limit, "")
		wg.Go(func() {
			if _, err := s.Create(ctx, njs[i]); err != nil {
				errs[i] = err
				return
			}
			_, errs[i] = s.ConfirmJob(ctx, confirmation(njs[i]))
		})
	}
	wg.Wait()
	accepted := 0
	for i, err := range errs {
		switch {
		case err == nil:
			accepted++
		case errors.Is(err, jobs.ErrQuota):
			nothingOf(t, rdb, s, njs[i].ID)
		default:
			t.Fatalf("submission %d: %v", i, err)
		}
	}
	active, err := s.Active(ctx, "ann")
	if accepted != limit || err != nil || len(active) != limit {
		t.Fatalf("accepted %d, active %v (%v), want %d", accepted, active, err, limit)
	}
}

// TestTentativeJobRacesTheNextAdmission: a job admitted but not yet
// flipped (under way, or left so by a crash) is voided by the next
// submission that would go over the quota because of it; whichever of the
// two reaches the voided job's slot first wins, and only one is queued.
func TestTentativeJobRacesTheNextAdmission(t *testing.T) {
	ctx := context.Background()
	t.Run("left by a crash", func(t *testing.T) {
		rdb := redistest.Client(t)
		s := jobs.NewStore(rdb, nil)
		crashed := pendingJob(1, "k1")
		if _, err := s.Create(ctx, crashed); err != nil {
			t.Fatal(err)
		}
		// The api dies after the admission: its flip never leaves.
		cctx, cancel := context.WithCancel(ctx)
		jobs.SetAfterAdmit(s, func(string) { cancel() })
		if _, err := s.ConfirmJob(cctx, confirmation(crashed)); err == nil || errors.Is(err, jobs.ErrNotConfirmed) {
			t.Fatalf("confirm cut before its flip: %v, want the flip's own error", err)
		}
		jobs.SetAfterAdmit(s, nil)
		next := pendingJob(1, "")
		if _, err := s.Create(ctx, next); err != nil {
			t.Fatalf("the next job's create: %v", err)
		}
		if st, err := s.ConfirmJob(ctx, confirmation(next)); err != nil || st != jobs.StateQueued {
			t.Fatalf("the next job, over a crashed submission's leftover: %s %v", st, err)
		}
		// The crashed one, retried with its key, is refused: the quota
		// went to the next job.
		if _, err := s.ConfirmJob(ctx, confirmation(crashed)); !errors.Is(err, jobs.ErrQuota) && !errors.Is(err, jobs.ErrGone) {
			t.Fatalf("the crashed job confirmed again: %v", err)
		}
		nothingOf(t, rdb, s, crashed.ID)
		again := pendingJob(1, "k1")
		if _, err := s.Create(ctx, again); !errors.Is(err, jobs.ErrQuota) {
			t.Fatalf("the crashed job's key, now over quota: %v (its claim must be released, not replayed)", err)
		}
	})
	t.Run("under way", func(t *testing.T) {
		rdb := redistest.Client(t)
		first, second := jobs.NewStore(rdb, nil), jobs.NewStore(rdb, nil)
		a, b := pendingJob(1, ""), pendingJob(1, "")
		for _, nj := range []jobs.NewJob{a, b} {
			if _, err := first.Create(ctx, nj); err != nil {
				t.Fatal(err)
			}
		}
		var bState jobs.State
		var bErr error
		jobs.SetAfterAdmit(first, func(string) {
			bState, bErr = second.ConfirmJob(ctx, confirmation(b))
		})
		_, aErr := first.ConfirmJob(ctx, confirmation(a))
		if bErr != nil || bState != jobs.StateQueued || !errors.Is(aErr, jobs.ErrQuota) {
			t.Fatalf("a = %v; b = %s %v: want b queued over a's admission, a refused", aErr, bState, bErr)
		}
		nothingOf(t, rdb, first, a.ID)
		if active, _ := first.Active(ctx, "ann"); len(active) != 1 || active[0] != b.ID {
			t.Fatalf("active %v, want only b", active)
		}
	})
}

// TestCancelRequestAndRevocationTouchOnlyTheRecord: RevokeTokens and
// RequestCancel are scripts on the job's record alone (they run on a
// cluster), and a token revoked by the one cannot use the other.
func TestCancelRequestAndRevocationTouchOnlyTheRecord(t *testing.T) {
	rdb := redistest.Client(t)
	s := jobs.NewStore(rdb, nil)
	ctx := context.Background()
	create(t, s, "rv")
	epoch, err := s.RevokeTokens(ctx, "rv")
	if err != nil || epoch != 1 {
		t.Fatalf("revoke: %d %v", epoch, err)
	}
	if _, err := s.RequestCancel(ctx, "rv", 0); !errors.Is(err, jobs.ErrTokenRevoked) {
		t.Fatalf("cancel with a revoked token: %v", err)
	}
	if j, _ := s.Get(ctx, "rv"); j.CancelRequested || j.TokenEpoch != 1 {
		t.Fatalf("after the refused cancel: %+v", j)
	}
	if st, err := s.RequestCancel(ctx, "rv", epoch); err != nil || st != jobs.StateQueued {
		t.Fatalf("cancel with the fresh token: %s %v", st, err)
	}
	if j, _ := s.Get(ctx, "rv"); !j.CancelRequested {
		t.Fatalf("cancel flag not set: %+v", j)
	}
	if _, err := s.RevokeTokens(ctx, "missing"); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("revoke of no job: %v", err)
	}
}
