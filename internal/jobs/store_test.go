package jobs_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/webhook"
)

func newStore(t *testing.T) (*jobs.Store, *time.Time) {
	t.Helper()
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	return jobs.NewStore(redistest.Client(t), func() time.Time { return now }), &now
}

func create(t testing.TB, s *jobs.Store, id string) *jobs.Job {
	t.Helper()
	j, err := s.Create(context.Background(), jobs.NewJob{ID: id, Type: "sleep", Owner: "ann", Queue: "default", MaxRetry: 2, Timeout: time.Minute, TTL: time.Hour})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	return j
}

func TestCreateAndGet(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	created := create(t, s, "j1")
	got, err := s.Get(ctx, "j1")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != jobs.StateQueued || got.Owner != "ann" || got.MaxRetry != 2 || got.Timeout != time.Minute || got.Queue != "default" {
		t.Fatalf("record = %+v", got)
	}
	if !got.CreatedAt.Equal(created.CreatedAt) || got.ETag() != created.ETag() {
		t.Fatalf("created %v/%s, read %v/%s", created.CreatedAt, created.ETag(), got.CreatedAt, got.ETag())
	}
	if got.StartedAt != nil || got.FinishedAt != nil || got.Result != nil || got.Error != nil {
		t.Fatalf("new job has lifecycle fields: %+v", got)
	}
	if _, err := s.Create(ctx, jobs.NewJob{ID: "j1", Type: "sleep"}); !errors.Is(err, jobs.ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	if _, err := s.Get(ctx, "nope"); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
}

func TestIdempotencyClaim(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	nj := jobs.NewJob{ID: "a", Type: "sleep", Owner: "ann", IdempotencyKey: "k1", BodyHash: "h1", TTL: time.Hour}
	if _, err := s.Create(ctx, nj); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		owner    string
		hash     string
		replay   bool
		sameBody bool
	}{
		{"same owner same body", "ann", "h1", true, true},
		{"same owner other body", "ann", "h2", true, false},
		{"other owner", "bob", "h1", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n2 := nj
			n2.ID, n2.Owner, n2.BodyHash = "b-"+tc.owner+tc.hash, tc.owner, tc.hash
			_, err := s.Create(ctx, n2)
			var r *jobs.IdempotentReplay
			if got := errors.As(err, &r); got != tc.replay {
				t.Fatalf("replay = %v (err %v), want %v", got, err, tc.replay)
			}
			if tc.replay && (r.JobID != "a" || r.SameBody != tc.sameBody) {
				t.Fatalf("replay = %+v", r)
			}
			if tc.replay {
				if _, err := s.Get(ctx, n2.ID); !errors.Is(err, jobs.ErrNotFound) {
					t.Fatalf("a replayed create wrote a record: %v", err)
				}
			}
		})
	}

	// IdempotencyClaim reads what Create would replay, without writing.
	if id, hash, err := s.IdempotencyClaim(ctx, "ann", "k1"); err != nil || id != "a" || hash != "h1" {
		t.Fatalf("claim of ann's k1 = %q %q %v", id, hash, err)
	}
	for _, who := range [][2]string{{"carl", "k1"}, {"ann", "k2"}} {
		if id, hash, err := s.IdempotencyClaim(ctx, who[0], who[1]); err != nil || id != "" || hash != "" {
			t.Fatalf("claim of %s's %s = %q %q %v, want none", who[0], who[1], id, hash, err)
		}
	}
}

func TestLifecycle(t *testing.T) {
	s, now := newStore(t)
	ctx := context.Background()
	create(t, s, "j")
	v0, _ := s.Get(ctx, "j")

	if st, err := s.Start(ctx, "j", 1); err != nil || st != jobs.StateRunning {
		t.Fatalf("start = %s, %v", st, err)
	}
	*now = now.Add(time.Second)
	if stop, err := s.Progress(ctx, "j", 42.5, "half"); err != nil || stop {
		t.Fatalf("progress = %v, %v", stop, err)
	}
	j, _ := s.Get(ctx, "j")
	if j.Progress.Percent != 42.5 || j.Progress.Message != "half" || j.Attempts != 1 || j.StartedAt == nil || j.ETag() == v0.ETag() {
		t.Fatalf("after progress: %+v", j)
	}
	if st, err := s.Fail(ctx, "j", 1, "boom", false, time.Hour); err != nil || st != jobs.StateRetrying {
		t.Fatalf("fail = %s, %v", st, err)
	}
	if st, _ := s.Start(ctx, "j", 2); st != jobs.StateRunning {
		t.Fatalf("second start = %s", st)
	}
	// Attempt 1 reporting late must not touch attempt 2.
	if st, _ := s.Fail(ctx, "j", 1, "late report", true, time.Hour); st != jobs.StateRunning {
		t.Fatalf("stale fail moved the job to %s", st)
	}
	j, _ = s.Get(ctx, "j")
	if j.Attempts != 2 || j.Progress.Percent != 0 || j.Error == nil || *j.Error != "boom" {
		t.Fatalf("second attempt: %+v", j)
	}
	res := jobs.Result{ContentType: "application/json", Size: 12, SHA256: "abc"}
	if st, err := s.Succeed(ctx, "j", 2, res, time.Hour); err != nil || st != jobs.StateSucceeded {
		t.Fatalf("succeed = %s, %v", st, err)
	}
	j, _ = s.Get(ctx, "j")
	if j.Result == nil || *j.Result != res || j.FinishedAt == nil || j.Progress.Percent != 100 || (j.Error != nil && *j.Error != "") {
		t.Fatalf("succeeded: %+v", j)
	}

	// Final is final: no late write changes it.
	if st, _ := s.Fail(ctx, "j", 2, "late", true, time.Hour); st != jobs.StateSucceeded {
		t.Fatalf("late fail moved a succeeded job to %s", st)
	}
	if stop, _ := s.Progress(ctx, "j", 5, "late"); !stop {
		t.Fatal("progress on a finished job did not say stop")
	}
	if _, err := s.RequestCancel(ctx, "j", jobs.AnyEpoch); !errors.Is(err, jobs.ErrFinished) {
		t.Fatalf("cancel finished: %v", err)
	}
	after, _ := s.Get(ctx, "j")
	if after.ETag() != j.ETag() {
		t.Fatal("refused writes changed the record")
	}
}

func TestCancelRequestStopsWorker(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()

	t.Run("before start", func(t *testing.T) {
		create(t, s, "q")
		if st, err := s.RequestCancel(ctx, "q", jobs.AnyEpoch); err != nil || st != jobs.StateQueued {
			t.Fatalf("request cancel = %s, %v", st, err)
		}
		if st, _ := s.Start(ctx, "q", 1); st != jobs.StateCanceled {
			t.Fatalf("start after cancel request = %s", st)
		}
		j, _ := s.Get(ctx, "q")
		if j.State != jobs.StateCanceled || j.FinishedAt == nil {
			t.Fatalf("record = %+v", j)
		}
	})
	t.Run("while running", func(t *testing.T) {
		create(t, s, "r")
		s.Start(ctx, "r", 1)
		if _, err := s.RequestCancel(ctx, "r", jobs.AnyEpoch); err != nil {
			t.Fatal(err)
		}
		if stop, _ := s.Progress(ctx, "r", 10, "x"); !stop {
			t.Fatal("progress after cancel request did not say stop")
		}
		if st, _ := s.Cancel(ctx, "r", time.Hour); st != jobs.StateCanceled {
			t.Fatalf("cancel = %s", st)
		}
		if st, _ := s.Succeed(ctx, "r", 1, jobs.Result{ContentType: "x"}, time.Hour); st != jobs.StateCanceled {
			t.Fatalf("late succeed moved a canceled job to %s", st)
		}
	})
	t.Run("gone", func(t *testing.T) {
		if _, err := s.RequestCancel(ctx, "missing", jobs.AnyEpoch); !errors.Is(err, jobs.ErrNotFound) {
			t.Fatalf("cancel missing: %v", err)
		}
		if _, err := s.Start(ctx, "missing", 1); !errors.Is(err, jobs.ErrGone) {
			t.Fatalf("start missing: %v", err)
		}
	})
}

func TestFinishedRecordExpiresAfterRetention(t *testing.T) {
	rdb := redistest.Client(t)
	s := jobs.NewStore(rdb, nil)
	ctx := context.Background()
	create(t, s, "e")
	s.Start(ctx, "e", 1)
	if _, err := s.Fail(ctx, "e", 1, "x", true, 90*time.Second); err != nil {
		t.Fatal(err)
	}
	ttl, err := rdb.PTTL(ctx, jobs.JobKey("e")).Result()
	if err != nil || ttl <= 80*time.Second || ttl > 90*time.Second {
		t.Fatalf("ttl after final state = %v, %v; want the retention", ttl, err)
	}
}

// TestWebhookIsKeptButNeverShown: the record keeps the job's webhook for
// the deliverer, and its JSON (what a job-token holder reads) never holds
// the URL, which may carry the receiver's own secret.
func TestWebhookIsKeptButNeverShown(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	spec := &webhook.Spec{URL: "https://hooks.example.org/in?secret=s3cr3t", Events: []string{webhook.EventCompleted}}
	created, err := s.Create(ctx, jobs.NewJob{ID: "wh1", Type: "sleep", Owner: "ann", Queue: "default", Webhook: spec})
	if err != nil {
		t.Fatal(err)
	}
	if created.Webhook != spec {
		t.Fatalf("Create returned webhook %+v, want the one it stored", created.Webhook)
	}
	got, err := s.Get(ctx, "wh1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Webhook == nil || got.Webhook.URL != spec.URL || !got.Webhook.Wants(webhook.EventCompleted) {
		t.Fatalf("webhook read back as %+v, want %+v", got.Webhook, spec)
	}
	raw, _ := json.Marshal(got)
	if strings.Contains(string(raw), "s3cr3t") || strings.Contains(string(raw), "hooks.example.org") {
		t.Fatalf("record JSON shows the webhook: %s", raw)
	}
	if plain, _ := s.Get(ctx, "nope-wh"); plain != nil {
		t.Fatal("unexpected record")
	}
}

// TestDeliveriesAreCappedAndExpireWithTheRecord: attempts are kept newest
// last, at most MaxDeliveries, with the record's TTL; a job whose record
// is gone records nothing.
func TestDeliveriesAreCappedAndExpireWithTheRecord(t *testing.T) {
	rdb := redistest.Client(t)
	s := jobs.NewStore(rdb, nil)
	ctx := context.Background()
	create(t, s, "d1")
	for i := range jobs.MaxDeliveries + 5 {
		d := jobs.Delivery{ID: "msg_d1_completed", Event: webhook.EventCompleted, Attempt: i + 1, Outcome: jobs.DeliveryRetrying, StatusCode: 500, At: time.Unix(int64(i), 0).UTC()}
		if err := s.RecordDelivery(ctx, "d1", d); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Deliveries(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != jobs.MaxDeliveries || got[0].Attempt != 6 || got[len(got)-1].Attempt != jobs.MaxDeliveries+5 {
		t.Fatalf("kept %d attempts, first %d last %d; want the newest %d", len(got), got[0].Attempt, got[len(got)-1].Attempt, jobs.MaxDeliveries)
	}
	recTTL, _ := rdb.PTTL(ctx, jobs.JobKey("d1")).Result()
	delTTL, _ := rdb.PTTL(ctx, jobs.JobKey("d1")+jobs.KeySuffixDeliveries).Result()
	if recTTL <= 0 || delTTL <= 0 || delTTL > recTTL {
		t.Fatalf("deliveries TTL %v, record TTL %v: want the record's", delTTL, recTTL)
	}
	if err := s.RecordDelivery(ctx, "gone", jobs.Delivery{ID: "x"}); err != nil {
		t.Fatal(err)
	}
	if n, _ := rdb.Exists(ctx, jobs.JobKey("gone")+jobs.KeySuffixDeliveries).Result(); n != 0 {
		t.Fatal("a delivery of a job with no record was kept")
	}
	if none, err := s.Deliveries(ctx, "gone"); err != nil || len(none) != 0 {
		t.Fatalf("deliveries of a missing job: %v, %v", none, err)
	}
}
