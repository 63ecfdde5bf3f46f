package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/claimcheck/claimcheck/internal/delivery"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/internal/webhook"
	"github.com/claimcheck/claimcheck/tokens"
	"github.com/claimcheck/claimcheck/tokens/pubkeys"
	"github.com/claimcheck/claimcheck/worker"
)

// submitWebhook is submitAsAPI for a job with a webhook subscription.
func (h *harness) submitWebhook(t *testing.T, typ, id string, spec *webhook.Spec) {
	t.Helper()
	ctx := context.Background()
	if _, err := h.store.Create(ctx, jobs.NewJob{ID: id, Type: typ, Owner: "ann", Queue: "default", Timeout: time.Minute,
		TTL: time.Hour, Webhook: spec}); err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(jobs.TaskPayload{Job: id, Owner: "ann", Input: json.RawMessage(`{}`)})
	if _, err := asynq.NewClientFromRedisClient(h.rdb).EnqueueContext(ctx, asynq.NewTask(typ, payload), asynq.TaskID(id),
		asynq.MaxRetry(jobs.DeliveryRetries(0)), asynq.Timeout(time.Minute)); err != nil {
		t.Fatal(err)
	}
}

// webhookTasks lists the ids of the tasks waiting in the webhook queue
// (no deliverer runs in these tests, and job pools never pull it).
func webhookTasks(t *testing.T, insp *asynq.Inspector) []string {
	t.Helper()
	infos, err := insp.ListPendingTasks(delivery.Queue, asynq.PageSize(1000))
	if err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
		t.Fatal(err)
	}
	var ids []string
	for _, ti := range infos {
		ids = append(ids, ti.ID)
	}
	sort.Strings(ids)
	return ids
}

// TestWebhookEventsEnqueued: a job's subscribed events are enqueued on the
// webhook queue (and only those), which the job pools never pull; a job
// without a webhook enqueues nothing.
func TestWebhookEventsEnqueued(t *testing.T) {
	h := newHarness(t)
	typ := worker.Type{Name: "reporter", Timeout: time.Minute, InputSchema: anyObject,
		Handle: func(ctx context.Context, task *worker.Task) error {
			task.Progress(50, "half")
			task.Logf("a line")
			return nil
		}}
	t.Cleanup(h.worker(t, 0, typ).Shutdown)
	insp := asynq.NewInspectorFromRedisClient(h.rdb)

	h.submitWebhook(t, "reporter", "plain", nil)
	h.waitFinal(t, "plain")
	h.submitWebhook(t, "reporter", "w1", &webhook.Spec{URL: "https://example.org/h", Events: []string{"started", "progress", "completed"}})
	if j := h.waitFinal(t, "w1"); j.State != jobs.StateSucceeded {
		t.Fatalf("job %s", j.State)
	}
	want := []string{"wh:w1_completed", "wh:w1_progress_1", "wh:w1_started_1"}
	var got []string
	waitfor.True(t, 5*time.Second, func() bool { got = webhookTasks(t, insp); return len(got) >= len(want) })
	if len(got) != len(want) {
		t.Fatalf("webhook tasks %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("webhook tasks %v, want %v", got, want)
		}
	}
}

// TestWebhookCompletedEnqueuedByRerun: a worker that died between the
// record's final write and the completed event's enqueue left the job's
// task to run again; the re-run finds the record final, does not run the
// job, and enqueues the event, once however often it runs.
func TestWebhookCompletedEnqueuedByRerun(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	ran := 0
	typ := worker.Type{Name: "once", Timeout: time.Minute, InputSchema: anyObject,
		Handle: func(context.Context, *worker.Task) error { ran++; return nil }}
	spec := &webhook.Spec{URL: "https://example.org/h", Events: []string{"completed"}}
	for _, id := range []string{"r1", "r2"} {
		if _, err := h.store.Create(ctx, jobs.NewJob{ID: id, Type: "once", Owner: "ann", Queue: "default", Timeout: time.Minute, TTL: time.Hour, Webhook: spec}); err != nil {
			t.Fatal(err)
		}
		// The crashed worker's part: the attempt ran and was recorded.
		if st, err := h.store.StartAttempt(ctx, jobs.Attempt{ID: id, Owner: "ann", Queue: "default", Number: 1, Lease: time.Minute}); err != nil || st.State != jobs.StateRunning {
			t.Fatal(st, err)
		}
		if _, err := h.store.Succeed(ctx, id, 1, jobs.Result{}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	// Its task, still there (twice, as if delivered twice).
	c := asynq.NewClientFromRedisClient(h.rdb)
	for _, id := range []string{"r1", "r2"} {
		payload, _ := json.Marshal(jobs.TaskPayload{Job: "r1", Owner: "ann"})
		if _, err := c.EnqueueContext(ctx, asynq.NewTask("once", payload), asynq.TaskID(id), asynq.MaxRetry(1)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(h.worker(t, 0, typ).Shutdown)
	insp := asynq.NewInspectorFromRedisClient(h.rdb)
	waitfor.True(t, 5*time.Second, func() bool {
		_, e1 := insp.GetTaskInfo("default", "r1")
		_, e2 := insp.GetTaskInfo("default", "r2")
		return errors.Is(e1, asynq.ErrTaskNotFound) && errors.Is(e2, asynq.ErrTaskNotFound)
	})
	if got := webhookTasks(t, insp); len(got) != 1 || got[0] != "wh:r1_completed" {
		t.Fatalf("webhook tasks %v, want the completed event of r1 once", got)
	}
	if ran != 0 {
		t.Fatalf("a finished job ran %d times", ran)
	}
}

// TestWebhookKeysRetiredAreWithdrawn: a webhook or webhook-link key
// retired from its directory (after a theft: rotate, restart, retire,
// restart) is withdrawn from Redis when the deliverer starts, so the
// progress service stops taking the links it signed and the api's JWKS
// stops listing it for receivers; the keys still in the directory stay.
func TestWebhookKeysRetiredAreWithdrawn(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	keyDir, linkDir := t.TempDir(), t.TempDir()
	start := func() {
		t.Helper()
		w, err := worker.NewWebhooks(worker.WebhookConfig{KeyDir: keyDir, LinkKeyDir: linkDir, ProgressURL: "http://progress.invalid"}, h.rdb)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		w.Shutdown()
	}
	published := func(kind string) []string {
		t.Helper()
		kids, err := h.rdb.HKeys(ctx, pubkeys.Key(kind)).Result()
		if err != nil {
			t.Fatal(err)
		}
		sort.Strings(kids)
		return kids
	}
	start()
	stolen := map[string]string{}
	for kind, dir := range map[string]string{tokens.KindWebhook: keyDir, tokens.KindLink: linkDir} {
		if kids := published(kind); len(kids) != 1 {
			t.Fatalf("%s keys published: %v", kind, kids)
		}
		stolen[kind] = published(kind)[0]
		if _, _, err := tokens.RotateDir(dir); err != nil {
			t.Fatal(err)
		}
	}
	start()
	for kind, dir := range map[string]string{tokens.KindWebhook: keyDir, tokens.KindLink: linkDir} {
		if kids := published(kind); len(kids) != 2 {
			t.Fatalf("%s keys after a rotation: %v, want the old and the new", kind, kids)
		}
		if err := tokens.RetireKey(dir, stolen[kind]); err != nil {
			t.Fatal(err)
		}
	}
	start()
	for kind := range stolen {
		kids := published(kind)
		if len(kids) != 1 || kids[0] == stolen[kind] {
			t.Fatalf("%s keys after retiring %s: %v, want only the new one", kind, stolen[kind], kids)
		}
	}
}
