package jobs_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
)

// TestCheckpoint: only the running attempt may save one; the next attempt
// starts with it; an oversized one is refused; the job's end removes it.
func TestCheckpoint(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Client(t)
	s := jobs.NewStore(rdb, nil)
	queuedJob(t, s, "c1")
	if err := s.SaveCheckpoint(ctx, "c1", 1, []byte("x")); !errors.Is(err, jobs.ErrNotRunning) {
		t.Fatalf("save before the job runs: %v, want ErrNotRunning", err)
	}
	start := func(n int) jobs.Started {
		t.Helper()
		st, err := s.StartAttempt(ctx, jobs.Attempt{ID: "c1", Owner: "ann", Queue: "default", Number: n, Lease: time.Minute})
		if err != nil || st.State != jobs.StateRunning {
			t.Fatalf("start attempt %d: %+v, %v", n, st, err)
		}
		return st
	}
	if st := start(1); st.Checkpoint != nil {
		t.Fatalf("first attempt starts from %q, want nothing", st.Checkpoint)
	}
	if err := s.SaveCheckpoint(ctx, "c1", 1, []byte("page 3")); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveCheckpoint(ctx, "c1", 1, bytes.Repeat([]byte("x"), jobs.MaxCheckpointBytes+1)); err == nil {
		t.Fatal("an oversized checkpoint was saved")
	}
	if _, err := s.Fail(ctx, "c1", 1, "boom", false, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveCheckpoint(ctx, "c1", 1, []byte("late")); !errors.Is(err, jobs.ErrNotRunning) {
		t.Fatalf("save by a failed attempt: %v, want ErrNotRunning", err)
	}
	if st := start(2); string(st.Checkpoint) != "page 3" {
		t.Fatalf("retry starts from %q, want %q", st.Checkpoint, "page 3")
	}
	if _, err := s.Succeed(ctx, "c1", 2, jobs.Result{}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if n := rdb.Exists(ctx, jobs.CheckpointKey("c1")).Val(); n != 0 {
		t.Fatal("the checkpoint outlived the job")
	}
}

// BenchmarkSaveCheckpoint is one checkpoint of 1 KiB (a script that checks
// the attempt, then SET with the record's TTL). Baseline in the same run:
// one progress report (Task.Progress), the other per-step write a handler
// makes.
//
//	go test -run '^$' -bench 'SaveCheckpoint' -count 3 ./internal/jobs/
func BenchmarkSaveCheckpoint(b *testing.B) {
	ctx := context.Background()
	s := jobs.NewStore(redistest.Client(b), nil)
	create(b, s, "b1")
	if _, err := s.StartAttempt(ctx, jobs.Attempt{ID: "b1", Owner: "ann", Queue: "default", Number: 1, Lease: time.Hour}); err != nil {
		b.Fatal(err)
	}
	data := bytes.Repeat([]byte("c"), 1024)
	b.Run("checkpoint-1KiB", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := s.SaveCheckpoint(ctx, "b1", 1, data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("progress-baseline", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Progress(ctx, "b1", 50, "half way"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestCheckpointEndsWithEveryEnd: a job that ends other than by its
// worker's own report (failed "worker lost" by a reconciler, canceled at
// the start of its next attempt) has no next attempt either: its
// checkpoint goes with it, instead of outliving the record by up to the
// record's pre-finish TTL.
func TestCheckpointEndsWithEveryEnd(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Client(t)
	s := jobs.NewStore(rdb, nil)
	exists := func(id string) bool {
		return rdb.Exists(ctx, jobs.CheckpointKey(id)).Val() == 1
	}
	startAndSave := func(id string) {
		t.Helper()
		queuedJob(t, s, id)
		if st, err := s.StartAttempt(ctx, jobs.Attempt{ID: id, Owner: "ann", Queue: "default", Number: 1, Lease: time.Minute}); err != nil || st.State != jobs.StateRunning {
			t.Fatalf("start %s: %+v, %v", id, st, err)
		}
		if err := s.SaveCheckpoint(ctx, id, 1, []byte("page 3")); err != nil {
			t.Fatal(err)
		}
	}

	startAndSave("lost")
	cutoff := time.Now().Add(time.Hour) // every heartbeat is older
	stale, err := s.Stale(ctx, cutoff, 10)
	if err != nil || len(stale) != 1 {
		t.Fatalf("stale = %+v, %v", stale, err)
	}
	if st, err := s.Reconcile(ctx, stale[0], cutoff, jobs.StateFailed, "worker lost", time.Hour); err != nil || st != jobs.StateFailed {
		t.Fatalf("reconcile = %s, %v", st, err)
	}
	if exists("lost") {
		t.Error("the checkpoint of a job failed by the reconciler outlived it")
	}

	startAndSave("cancel")
	if _, _, err := s.HandBack(ctx, "cancel", 1, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RequestCancel(ctx, "cancel", jobs.AnyEpoch); err != nil {
		t.Fatal(err)
	}
	if st, err := s.StartAttempt(ctx, jobs.Attempt{ID: "cancel", Owner: "ann", Queue: "default", Number: 1, Lease: time.Minute}); err != nil || st.State != jobs.StateCanceled {
		t.Fatalf("start of a cancelled job: %+v, %v", st, err)
	}
	if exists("cancel") {
		t.Error("the checkpoint of a job canceled at its start outlived it")
	}
}
