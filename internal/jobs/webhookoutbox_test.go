package jobs_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	dto "github.com/prometheus/client_model/go"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/metrics"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/webhook"
)

// outboxAtDelete is the real Asynq inspector, noting what the outbox held
// when the task was deleted.
type outboxAtDelete struct {
	*asynq.Inspector
	s    *jobs.Store
	held int64
}

func (o *outboxAtDelete) DeleteTask(queue, id string) error {
	o.held, _ = o.s.WebhookOutboxLen(context.Background())
	return o.Inspector.DeleteTask(queue, id)
}

// TestCancelJobPushesTheOutboxFirst: a queued job whose webhook wants the
// completed event has its id in the outbox before its task is deleted
// (intent first), and the cancel ends it; a job without one, or whose
// webhook wants other events only, is not pushed.
func TestCancelJobPushesTheOutboxFirst(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Client(t)
	s := jobs.NewStore(rdb, nil)
	client := asynq.NewClientFromRedisClient(rdb)
	ins := &outboxAtDelete{Inspector: asynq.NewInspectorFromRedisClient(rdb), s: s}
	for _, tc := range []struct {
		name   string
		spec   *webhook.Spec
		pushed int64
	}{
		{"completed", &webhook.Spec{URL: "https://example.test/h", Events: []string{webhook.EventCompleted}}, 1},
		{"started only", &webhook.Spec{URL: "https://example.test/h", Events: []string{webhook.EventStarted}}, 0},
		{"no webhook", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rdb.Del(ctx, jobs.KeyWebhookOutbox)
			id := "c-" + tc.name
			if _, err := s.Create(ctx, jobs.NewJob{ID: id, Type: "sleep", Owner: "ann", Queue: "default", Timeout: time.Minute,
				TTL: time.Hour, Webhook: tc.spec}); err != nil {
				t.Fatal(err)
			}
			if _, err := client.Enqueue(asynq.NewTask("sleep", nil), asynq.TaskID(id), asynq.Queue("default")); err != nil {
				t.Fatal(err)
			}
			j, err := jobs.CancelJob(ctx, s, ins, id, jobs.AnyEpoch, time.Hour)
			if err != nil || j.State != jobs.StateCanceled {
				t.Fatalf("cancel: %+v, %v", j, err)
			}
			if ins.held != tc.pushed {
				t.Errorf("the outbox held %d ids when the task was deleted, want %d", ins.held, tc.pushed)
			}
			if tc.pushed > 0 {
				if got, err := s.PeekWebhookOutbox(ctx, time.Second); err != nil || got != id {
					t.Errorf("outbox: %q, %v", got, err)
				}
			}
		})
	}
}

// TestWebhookOutboxOrderAndPeek: ids come out oldest first; a peek leaves
// the id in place (a reader that dies before it is done loses nothing),
// and only Done removes it.
func TestWebhookOutboxOrderAndPeek(t *testing.T) {
	ctx := context.Background()
	s := jobs.NewStore(redistest.Client(t), nil)
	for _, id := range []string{"a", "b"} {
		if dropped, err := s.PushWebhookOutbox(ctx, id); err != nil || dropped != 0 {
			t.Fatalf("push %s: %d, %v", id, dropped, err)
		}
	}
	for range 2 {
		if got, err := s.PeekWebhookOutbox(ctx, time.Second); err != nil || got != "a" {
			t.Fatalf("peek: %q, %v; want a, again", got, err)
		}
	}
	if err := s.DoneWebhookOutbox(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.PeekWebhookOutbox(ctx, time.Second); err != nil || got != "b" {
		t.Fatalf("peek after done: %q, %v", got, err)
	}
	if err := s.DoneWebhookOutbox(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.PeekWebhookOutbox(ctx, time.Second); err != nil || got != "" {
		t.Fatalf("peek of an empty outbox: %q, %v", got, err)
	}
}

// TestWebhookOutboxBounded: an outbox nobody drains stops at
// WebhookOutboxCap; the oldest id goes, the newest stays, and the drop is
// counted.
func TestWebhookOutboxBounded(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Client(t)
	s := jobs.NewStore(rdb, nil)
	batch := make([]any, 0, 10_000)
	for i := range jobs.WebhookOutboxCap {
		batch = append(batch, fmt.Sprintf("old-%06d", i)) // pushed as pushers do: old-000000 ends oldest, at the tail
		if len(batch) == cap(batch) {
			if err := rdb.LPush(ctx, jobs.KeyWebhookOutbox, batch...).Err(); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	before := counter(metrics.WebhookOutboxDropped)
	dropped, err := s.PushWebhookOutbox(ctx, "new")
	if err != nil || dropped != 1 {
		t.Fatalf("push into a full outbox: dropped %d, %v; want 1", dropped, err)
	}
	if n, _ := s.WebhookOutboxLen(ctx); n != jobs.WebhookOutboxCap {
		t.Errorf("outbox length %d, want the cap %d", n, jobs.WebhookOutboxCap)
	}
	if got, _ := s.PeekWebhookOutbox(ctx, time.Second); got != "old-000001" {
		t.Errorf("oldest left %q, want old-000001 (old-000000 dropped)", got)
	}
	if head, _ := rdb.LIndex(ctx, jobs.KeyWebhookOutbox, 0).Result(); head != "new" {
		t.Errorf("newest %q, want new", head)
	}
	if got := counter(metrics.WebhookOutboxDropped) - before; got != 1 {
		t.Errorf("dropped counter rose by %v, want 1", got)
	}
}

func counter(m interface{ Write(*dto.Metric) error }) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		return -1
	}
	return d.GetCounter().GetValue()
}
