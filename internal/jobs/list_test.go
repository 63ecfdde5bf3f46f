package jobs_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/keyslot"
	"github.com/claimcheck/claimcheck/internal/redistest"
)

func newJob(owner string, maxActive int) jobs.NewJob {
	return jobs.NewJob{ID: uuid.Must(uuid.NewV7()).String(), Type: "sleep", Owner: owner, Queue: "default",
		Timeout: time.Minute, TTL: time.Hour, MaxActive: maxActive}
}

func TestListNewestFirstWithCursorAndFilter(t *testing.T) {
	rdb := redistest.Client(t)
	s := jobs.NewStore(rdb, nil)
	ctx := context.Background()
	var ids []string
	for range 7 {
		nj := newJob("ann", 0)
		if _, err := s.Create(ctx, nj); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, nj.ID)
	}
	if _, err := s.Create(ctx, newJob("bob", 0)); err != nil {
		t.Fatal(err)
	}
	// Two of ann's jobs end; one record vanishes (expired) before listing.
	if _, err := s.Succeed(ctx, ids[1], 0, jobs.Result{}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Succeed(ctx, ids[4], 0, jobs.Result{}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Del(ctx, jobs.JobKey(ids[6])).Err(); err != nil {
		t.Fatal(err)
	}

	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		page, err := s.List(ctx, "ann", cursor, 2, "")
		if err != nil || pages > 5 {
			t.Fatalf("page %d: %v", pages, err)
		}
		for _, j := range page.Jobs {
			if j.Owner != "ann" {
				t.Fatalf("bob's job listed for ann: %+v", j)
			}
			got = append(got, j.ID)
		}
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	want := slices.Clone(ids[:6])
	slices.Reverse(want)
	if !slices.Equal(got, want) {
		t.Fatalf("listed %v, want newest first %v", got, want)
	}

	page, err := s.List(ctx, "ann", "", 10, jobs.StateSucceeded)
	if err != nil || len(page.Jobs) != 2 || page.Jobs[0].ID != ids[4] || page.Jobs[1].ID != ids[1] || page.Next != "" {
		t.Fatalf("succeeded filter: %+v %v", page, err)
	}
	if _, err := s.List(ctx, "ann", "nonsense(", 10, ""); !errors.Is(err, jobs.ErrBadCursor) {
		t.Fatalf("bad cursor: %v", err)
	}
	active, err := s.Active(ctx, "ann")
	slices.Sort(active)
	wantActive := []string{ids[0], ids[2], ids[3], ids[5]}
	if err != nil || !slices.Equal(active, wantActive) {
		t.Fatalf("active = %v %v, want %v", active, err, wantActive)
	}
	// Records in as many slots as jobs, looked up in one call.
	exist, err := s.Exist(ctx, []string{ids[0], ids[6], ids[4], "nope"})
	if err != nil || !slices.Equal(exist, []bool{true, false, true, false}) {
		t.Fatalf("exist = %v %v", exist, err)
	}
}

func TestActiveJobQuota(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	first, second := newJob("ann", 2), newJob("ann", 2)
	for _, nj := range []jobs.NewJob{first, second} {
		if _, err := s.Create(ctx, nj); err != nil {
			t.Fatal(err)
		}
	}
	third := newJob("ann", 2)
	third.IdempotencyKey = "k3"
	_, err := s.Create(ctx, third)
	var qe *jobs.QuotaError
	if !errors.As(err, &qe) || qe.Active != 2 || qe.Limit != 2 || !errors.Is(err, jobs.ErrQuota) {
		t.Fatalf("third job: %v", err)
	}
	if _, err := s.Get(ctx, third.ID); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("refused job left a record: %v", err)
	}
	// Another user has their own quota.
	if _, err := s.Create(ctx, newJob("bob", 2)); err != nil {
		t.Fatalf("bob: %v", err)
	}
	// When a job ends its slot frees, and the refused request's
	// idempotency key was not burnt.
	if _, err := s.Cancel(ctx, first.ID, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, third); err != nil {
		t.Fatalf("after a job ended: %v", err)
	}
	if _, err := s.Create(ctx, newJob("ann", 2)); !errors.As(err, &qe) {
		t.Fatalf("quota not enforced again: %v", err)
	}
}

// TestOwnerGate refuses a job, leaving nothing behind, while the hash its
// OwnerGate names says the owner is blocked.
func TestOwnerGate(t *testing.T) {
	rdb := redistest.Client(t)
	s := jobs.NewStore(rdb, nil)
	ctx := context.Background()
	// The gate is in the owner's slot, as the user record is.
	gate := "test:owner:" + keyslot.Tag("ann")
	nj := newJob("ann", 0)
	nj.OwnerGate = gate
	if _, err := s.Create(ctx, nj); err != nil {
		t.Fatalf("gate hash absent: %v", err)
	}
	rdb.HSet(ctx, gate, "blocked", "1")
	refused := newJob("ann", 0)
	refused.OwnerGate, refused.IdempotencyKey = gate, "k1"
	if _, err := s.Create(ctx, refused); !errors.Is(err, jobs.ErrOwnerBlocked) {
		t.Fatalf("blocked owner: %v", err)
	}
	if _, err := s.Get(ctx, refused.ID); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("refused job left a record: %v", err)
	}
	if active, _ := s.Active(ctx, "ann"); len(active) != 1 {
		t.Fatalf("active jobs %v: want only the first", active)
	}
	rdb.HSet(ctx, gate, "blocked", "0")
	if _, err := s.Create(ctx, refused); err != nil {
		t.Fatalf("unblocked (and the idempotency key not burnt): %v", err)
	}
}
