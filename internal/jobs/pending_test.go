package jobs_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
)

// TestPendingJobIsInvisibleUntilConfirmed: a pending record is neither
// listed nor counted toward the quota; Confirm makes it both, once.
func TestPendingJobIsInvisibleUntilConfirmed(t *testing.T) {
	rdb := redistest.Client(t)
	s := jobs.NewStore(rdb, nil)
	ctx := context.Background()
	nj := newJob("ann", 1)
	nj.PendingTTL = time.Minute
	if j, err := s.Create(ctx, nj); err != nil || j.State != jobs.StatePending {
		t.Fatalf("create: %+v %v", j, err)
	}
	if ttl, _ := rdb.PTTL(ctx, jobs.JobKey(nj.ID)).Result(); ttl > time.Minute || ttl <= 0 {
		t.Fatalf("pending record lives %v", ttl)
	}
	page, _ := s.List(ctx, "ann", "", 10, "")
	active, _ := s.Active(ctx, "ann")
	if len(page.Jobs) != 0 || len(active) != 0 {
		t.Fatalf("pending job listed %v or active %v", page.Jobs, active)
	}
	// Another pending job fits under a quota of one: pending ones do not count.
	other := newJob("ann", 1)
	other.PendingTTL = time.Minute
	if _, err := s.Create(ctx, other); err != nil {
		t.Fatalf("second pending job: %v", err)
	}
	for range 2 { // a second confirm (a replay's) changes nothing
		if st, err := s.Confirm(ctx, nj.ID, "ann", "", time.Hour, 1); err != nil || st != jobs.StateQueued {
			t.Fatalf("confirm: %s %v", st, err)
		}
	}
	page, _ = s.List(ctx, "ann", "", 10, "")
	active, _ = s.Active(ctx, "ann")
	if len(page.Jobs) != 1 || page.Jobs[0].ID != nj.ID || !slices.Equal(active, []string{nj.ID}) {
		t.Fatalf("confirmed job: listed %v, active %v", page.Jobs, active)
	}
	if ttl, _ := rdb.PTTL(ctx, jobs.JobKey(nj.ID)).Result(); ttl <= time.Minute {
		t.Fatalf("confirmed record lives %v", ttl)
	}
	// The other one, confirmed now, is over the quota: refused and removed.
	if _, err := s.Confirm(ctx, other.ID, "ann", "", time.Hour, 1); !errors.Is(err, jobs.ErrQuota) {
		t.Fatalf("confirm over quota: %v", err)
	}
	if n, _ := rdb.Exists(ctx, jobs.JobKey(other.ID)).Result(); n != 0 {
		t.Fatal("a job refused at confirm left its record")
	}
	if _, err := s.Confirm(ctx, other.ID, "ann", "", time.Hour, 1); !errors.Is(err, jobs.ErrGone) {
		t.Fatalf("confirm of a gone record: %v", err)
	}
}

// TestDiscardRemovesOnlyPending: Discard deletes a pending record and its
// idempotency claim, but reports and keeps a confirmed one.
func TestDiscardRemovesOnlyPending(t *testing.T) {
	rdb := redistest.Client(t)
	s := jobs.NewStore(rdb, nil)
	ctx := context.Background()
	nj := newJob("ann", 0)
	nj.PendingTTL, nj.IdempotencyKey, nj.BodyHash = time.Minute, "k", "h"
	if _, err := s.Create(ctx, nj); err != nil {
		t.Fatal(err)
	}
	if st, err := s.Discard(ctx, nj.ID, "ann", "k"); err != nil || st != "" {
		t.Fatalf("discard pending: %q %v", st, err)
	}
	if keys := redistest.Keys(t, rdb, "cc:*"); len(keys) != 0 {
		t.Fatalf("left behind: %v", keys)
	}
	nj2 := newJob("ann", 0)
	nj2.PendingTTL, nj2.IdempotencyKey, nj2.BodyHash = time.Minute, "k", "h"
	if _, err := s.Create(ctx, nj2); err != nil {
		t.Fatalf("the key is free again: %v", err)
	}
	if _, err := s.Confirm(ctx, nj2.ID, "ann", "k", time.Hour, 0); err != nil {
		t.Fatal(err)
	}
	if st, err := s.Discard(ctx, nj2.ID, "ann", "k"); err != nil || st != jobs.StateQueued {
		t.Fatalf("discard confirmed: %q %v", st, err)
	}
	var replay *jobs.IdempotentReplay
	if _, err := s.Create(ctx, newJobWithKey("ann", "k")); !errors.As(err, &replay) || replay.JobID != nj2.ID {
		t.Fatalf("claim of the confirmed job: %v", err)
	}
}

func newJobWithKey(owner, key string) jobs.NewJob {
	nj := newJob(owner, 0)
	nj.IdempotencyKey, nj.BodyHash = key, "h"
	return nj
}
