package app_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/internal/delivery"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/internal/webhook"
	"github.com/claimcheck/claimcheck/worker"
)

// idlePool's queue is served by no worker of the stack, so a job there
// stays queued until a test starts one for it.
const idlePool = "idle"

var idleQueue = jobs.QueueName(idlePool, "default")

func completedOnly(rc *receiver) *webhook.Spec {
	return &webhook.Spec{URL: rc.srv.URL + "/hook", Events: []string{webhook.EventCompleted}}
}

func (s *stack) cancel(t *testing.T, sub submitted) {
	t.Helper()
	resp := do(t, "POST", s.progress.URL+"/v1/jobs/"+sub.ID+"/cancel", sub.Token, nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		t.Fatalf("cancel: %d", resp.StatusCode)
	}
}

// oneCanceledEvent waits for the completed event of job id and checks it
// is the only request the receiver got for it: verified by node against
// the api's JWKS, webhook-id msg_<id>_completed, state canceled.
func oneCanceledEvent(t *testing.T, rc *receiver, id string) {
	t.Helper()
	waitfor.True(t, 20*time.Second, func() bool { return len(forJob(rc, id)) > 0 })
	reqs := forJob(rc, id)
	allVerified(t, reqs)
	if len(reqs) != 1 || reqs[0].ID != "msg_"+id+"_completed" || reqs[0].Payload.Type != "job.completed" ||
		reqs[0].Payload.Data.Job.State != jobs.StateCanceled {
		t.Fatalf("requests for %s: %v, want one job.completed of a canceled job: %+v", id, ids(reqs), reqs[0].Payload)
	}
}

func forJob(rc *receiver, id string) []*hookRequest {
	var out []*hookRequest
	for _, r := range rc.requests() {
		if r.Payload.Data.Job.ID == id {
			out = append(out, r)
		}
	}
	return out
}

// settled waits until nothing of job id is left in the outbox or the
// webhook queue but its (retained) completed task, so that a count taken
// afterwards is final.
func (s *stack) settled(t *testing.T, id string) {
	t.Helper()
	ins := asynq.NewInspectorFromRedisClient(s.rdb)
	store := jobs.NewStore(s.rdb, nil)
	waitfor.True(t, 20*time.Second, func() bool {
		n, err := store.WebhookOutboxLen(context.Background())
		if err != nil || n != 0 {
			return false
		}
		_, err = ins.GetTaskInfo(delivery.Queue, "whs:"+id)
		if !errors.Is(err, asynq.ErrTaskNotFound) {
			return false
		}
		info, err := ins.GetTaskInfo(delivery.Queue, "wh:"+id+"_completed")
		return err == nil && info.State == asynq.TaskStateCompleted
	})
}

// TestWebhookCanceledWhileQueued: a job canceled while no worker holds it
// (the progress service ends it, and may not enqueue tasks) gets its
// signed completed event, state canceled, once a deliverer runs: the id
// waited in the outbox meanwhile.
func TestWebhookCanceledWhileQueued(t *testing.T) {
	s := newStack(t, webhookOpts(false, nil))
	// A deliverer that ran once published the webhook keys the verifier
	// needs; none runs while the job is canceled.
	s.startDeliverer(t).Shutdown()
	rc := newReceiver(t, startNodeVerifier(t, s.api.URL+"/.well-known/jwks.json"), nil)
	sub := s.submitJobOn(t, idleQueue, 0, "wh-report", `{"n":1}`, completedOnly(rc))
	none := s.submitJobOn(t, idleQueue, 0, "wh-report", `{"n":1}`, nil)
	s.cancel(t, sub)
	s.cancel(t, none)
	if n, err := jobs.NewStore(s.rdb, nil).WebhookOutboxLen(context.Background()); err != nil || n != 1 {
		t.Fatalf("outbox holds %d ids (%v), want 1: the job without a webhook is not pushed", n, err)
	}

	// Two deliverers read the same outbox: still one event.
	s.startDeliverer(t)
	s.startDeliverer(t)
	oneCanceledEvent(t, rc, sub.ID)
	s.settled(t, sub.ID)
	if got := forJob(rc, sub.ID); len(got) != 1 {
		t.Errorf("%d requests after the outbox settled, want 1", len(got))
	}
	if d := s.deliveries(t, sub); len(d) != 1 || d[0].Outcome != jobs.DeliveryDelivered || d[0].Event != webhook.EventCompleted {
		t.Errorf("deliveries: %+v", d)
	}
}

// TestWebhookCanceledWhileRetrying: the same for a job waiting between
// attempts (its task in Asynq's retry set, no worker holding it).
func TestWebhookCanceledWhileRetrying(t *testing.T) {
	s, _ := webhookStack(t, false, func(c *app.Config) {
		c.Worker.RetryDelay = func(int, error) time.Duration { return time.Hour }
	})
	rc := newReceiver(t, startNodeVerifier(t, s.api.URL+"/.well-known/jwks.json"), nil)
	sub := s.submitJobOn(t, "default", 2, "flaky", `{}`, completedOnly(rc))
	s.waitState(t, sub, jobs.StateRetrying)
	if got := forJob(rc, sub.ID); len(got) != 0 {
		t.Fatalf("a completed event before the job ended: %v", ids(got))
	}
	s.cancel(t, sub)
	oneCanceledEvent(t, rc, sub.ID)
	s.settled(t, sub.ID)
	if got := forJob(rc, sub.ID); len(got) != 1 {
		t.Errorf("%d requests after the outbox settled, want 1", len(got))
	}
}

// TestWebhookUsersBlockCancelJobs: `users block --cancel-jobs` (run by
// the admin CLI, which enqueues nothing either) sends each canceled job's
// completed event.
func TestWebhookUsersBlockCancelJobs(t *testing.T) {
	s := newStack(t, webhookOpts(false, nil))
	// A deliverer that ran once published the webhook keys the verifier
	// needs; none runs while the job is canceled.
	s.startDeliverer(t).Shutdown()
	rc := newReceiver(t, startNodeVerifier(t, s.api.URL+"/.well-known/jwks.json"), nil)
	a := s.submitJobOn(t, idleQueue, 0, "wh-report", `{"n":1}`, completedOnly(rc))
	b := s.submitJobOn(t, idleQueue, 0, "wh-report", `{"n":1}`, completedOnly(rc))
	n, err := app.CancelUserJobs(context.Background(), s.cfg, s.rdb, "ann")
	if err != nil || n != 2 {
		t.Fatalf("CancelUserJobs: %d, %v", n, err)
	}
	s.startDeliverer(t)
	oneCanceledEvent(t, rc, a.ID)
	oneCanceledEvent(t, rc, b.ID)
}

// TestWebhookCancelCrashBeforeDelete: a cancel that dies after pushing
// the id and before deleting the task leaves a queued job with the cancel
// requested. The settle task waits (the job has not ended); a worker for
// its pool then starts it, finds the cancel, ends it and enqueues the
// completed event itself; the settle task's enqueue of the same event is
// the same TaskID. One request, one webhook-id: nothing to deduplicate.
func TestWebhookCancelCrashBeforeDelete(t *testing.T) {
	s, _ := webhookStack(t, false, nil)
	rc := newReceiver(t, startNodeVerifier(t, s.api.URL+"/.well-known/jwks.json"), nil)
	sub := s.submitJobOn(t, idleQueue, 0, "wh-idle", `{}`, completedOnly(rc))
	ctx := context.Background()
	store := jobs.NewStore(s.rdb, nil)
	// jobs.CancelJob's steps up to the crash.
	if _, err := store.RequestCancel(ctx, sub.ID, jobs.AnyEpoch); err != nil {
		t.Fatal(err)
	}
	if _, err := store.PushWebhookOutbox(ctx, sub.ID); err != nil {
		t.Fatal(err)
	}
	// The deliverer takes the id and its settle task waits for the job.
	ins := asynq.NewInspectorFromRedisClient(s.rdb)
	waitfor.True(t, 20*time.Second, func() bool {
		info, err := ins.GetTaskInfo(delivery.Queue, "whs:"+sub.ID)
		return err == nil && info.Retried > 0
	})
	if j, err := store.Get(ctx, sub.ID); err != nil || j.State != jobs.StateQueued || len(forJob(rc, sub.ID)) != 0 {
		t.Fatalf("before a worker runs it: %+v, %v, requests %v", j, err, ids(forJob(rc, sub.ID)))
	}

	cfg := s.cfg
	cfg.Types = []worker.Type{{Name: "wh-idle", Pool: idlePool, Timeout: time.Minute,
		Handle: func(context.Context, *worker.Task) error {
			t.Error("a canceled job ran")
			return nil
		}}}
	startWorker(t, cfg, s.rdb)
	s.waitState(t, sub, jobs.StateCanceled)
	oneCanceledEvent(t, rc, sub.ID)
	s.settled(t, sub.ID)
	if got := forJob(rc, sub.ID); len(got) != 1 {
		t.Errorf("requests %v after the outbox settled, want one", ids(got))
	}
}

// TestWebhookOutboxLeavesARunningJobToItsWorker: an id in the outbox whose
// job is running (a cancel that found it queued, and lost the race to a
// worker) sends nothing while it runs; the job's own worker sends the one
// completed event when it ends, with the state it ended in.
func TestWebhookOutboxLeavesARunningJobToItsWorker(t *testing.T) {
	s, _ := webhookStack(t, false, nil)
	rc := newReceiver(t, startNodeVerifier(t, s.api.URL+"/.well-known/jwks.json"), nil)
	sub := s.submitJob(t, "stepper", `{"steps":1}`, completedOnly(rc))
	s.waitState(t, sub, jobs.StateRunning)
	if _, err := jobs.NewStore(s.rdb, nil).PushWebhookOutbox(context.Background(), sub.ID); err != nil {
		t.Fatal(err)
	}
	ins := asynq.NewInspectorFromRedisClient(s.rdb)
	waitfor.True(t, 20*time.Second, func() bool {
		n, _ := jobs.NewStore(s.rdb, nil).WebhookOutboxLen(context.Background())
		_, err := ins.GetTaskInfo(delivery.Queue, "whs:"+sub.ID)
		return n == 0 && errors.Is(err, asynq.ErrTaskNotFound) // taken, looked at, left
	})
	if got := forJob(rc, sub.ID); len(got) != 0 {
		t.Fatalf("requests while the job runs: %v", ids(got))
	}
	if _, err := ins.GetTaskInfo(delivery.Queue, "wh:"+sub.ID+"_completed"); !errors.Is(err, asynq.ErrTaskNotFound) {
		t.Fatalf("a completed task while the job runs: %v", err)
	}
	s.step <- struct{}{}
	s.waitState(t, sub, jobs.StateSucceeded)
	waitfor.True(t, 20*time.Second, func() bool { return len(forJob(rc, sub.ID)) > 0 })
	s.settled(t, sub.ID)
	if got := forJob(rc, sub.ID); len(got) != 1 || got[0].Payload.Data.Job.State != jobs.StateSucceeded {
		t.Fatalf("requests %v, want one completed of the succeeded job", ids(got))
	}
}
