package jobs_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
)

// TestReceiptIsWrittenWithTheSuccess: the receipt is stored by the script
// that records the success, expires with the record, and the record's
// finished_at is the instant the receipt states.
func TestReceiptIsWrittenWithTheSuccess(t *testing.T) {
	rdb := redistest.Client(t)
	s := jobs.NewStore(rdb, nil)
	ctx := context.Background()
	create(t, s, "r1")
	s.Start(ctx, "r1", 1)
	if _, err := s.Receipt(ctx, "r1"); !errors.Is(err, jobs.ErrNoReceipt) {
		t.Fatalf("receipt of a running job: %v", err)
	}
	at := time.Date(2026, 12, 1, 12, 0, 1, 234_000_000, time.UTC)
	st, _, err := s.SucceedWithReceipt(ctx, "r1", 1, jobs.Result{ContentType: "text/plain", Size: 3, SHA256: "abc"}, 90*time.Second, nil,
		&jobs.Receipt{Token: "a.b.c", At: at})
	if err != nil || st != jobs.StateSucceeded {
		t.Fatalf("succeed: %v %v", st, err)
	}
	tok, err := s.Receipt(ctx, "r1")
	if err != nil || tok != "a.b.c" {
		t.Fatalf("receipt = %q, %v", tok, err)
	}
	j, _ := s.Get(ctx, "r1")
	if j.FinishedAt == nil || !j.FinishedAt.Equal(at) {
		t.Fatalf("finished_at = %v, want %v", j.FinishedAt, at)
	}
	recTTL, _ := rdb.PTTL(ctx, jobs.JobKey("r1")).Result()
	rcTTL, _ := rdb.PTTL(ctx, jobs.JobKey("r1")+jobs.KeySuffixReceipt).Result()
	if rcTTL <= 80*time.Second || rcTTL > 90*time.Second || rcTTL > recTTL+time.Second || recTTL > rcTTL+time.Second {
		t.Fatalf("receipt ttl %v, record ttl %v: want both the retention", rcTTL, recTTL)
	}
}

// TestNoReceiptWithoutTheSuccess: a success that is not recorded (a stale
// attempt, a job cancelled meanwhile) stores no receipt, and a failure
// never does.
func TestNoReceiptWithoutTheSuccess(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	rc := &jobs.Receipt{Token: "a.b.c", At: time.Now()}

	create(t, s, "stale")
	s.Start(ctx, "stale", 1)
	s.Start(ctx, "stale", 2)
	if st, _, err := s.SucceedWithReceipt(ctx, "stale", 1, jobs.Result{}, time.Hour, nil, rc); err != nil || st != jobs.StateRunning {
		t.Fatalf("stale attempt: %v %v", st, err)
	}

	create(t, s, "canceled")
	s.Start(ctx, "canceled", 1)
	if _, err := s.Cancel(ctx, "canceled", time.Hour); err != nil {
		t.Fatal(err)
	}
	if st, _, err := s.SucceedWithReceipt(ctx, "canceled", 1, jobs.Result{}, time.Hour, nil, rc); err != nil || st != jobs.StateCanceled {
		t.Fatalf("canceled: %v %v", st, err)
	}

	create(t, s, "failed")
	s.Start(ctx, "failed", 1)
	if _, _, err := s.FailReleasing(ctx, "failed", 1, "boom", true, time.Hour, nil); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"stale", "canceled", "failed", "never-was"} {
		if tok, err := s.Receipt(ctx, id); !errors.Is(err, jobs.ErrNoReceipt) {
			t.Errorf("%s: receipt %q, %v; want ErrNoReceipt", id, tok, err)
		}
	}
}
