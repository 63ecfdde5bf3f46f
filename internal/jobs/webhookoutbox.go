package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/metrics"
	"github.com/claimcheck/claimcheck/internal/webhook"
)

// The webhook outbox (KeyWebhookOutbox): how a job ended by the progress
// service or the admin CLI, which may not enqueue Asynq tasks, still gets
// its completed webhook event. The cancelling process pushes the job's id
// before it deletes the job's task (intent first: a crash in between costs
// an extra look, never the event); a worker's deliverer reads the outbox
// and enqueues, for each id, a task that enqueues the completed event once
// the record is final (package delivery). Only LPUSH and LTRIM of that one
// key are asked of the pushers' Redis users.

// WebhookOutboxCap bounds the outbox: while no worker delivers webhooks
// (every worker at --webhook-concurrency 0) it would grow with every
// cancel. Past the cap the oldest ids are dropped (their jobs get no
// completed event), counted in claimcheck_webhook_outbox_dropped_total and
// logged by the pusher.
const WebhookOutboxCap = 100_000

// PushWebhookOutbox records that job id, whose webhook wants the completed
// event, is being ended where that event cannot be enqueued. It returns how
// many older ids the cap dropped (0 but for an outbox nobody drains).
func (s *Store) PushWebhookOutbox(ctx context.Context, id string) (int64, error) {
	var push *redis.IntCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		push = p.LPush(ctx, KeyWebhookOutbox, id)
		p.LTrim(ctx, KeyWebhookOutbox, 0, WebhookOutboxCap-1)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("webhook outbox, job %s: %w", id, err)
	}
	dropped := max(push.Val()-WebhookOutboxCap, 0)
	if dropped > 0 {
		metrics.WebhookOutboxDropped.Add(float64(dropped))
	}
	return dropped, nil
}

// WebhookOutboxLen is how many ids wait in the outbox.
func (s *Store) WebhookOutboxLen(ctx context.Context) (int64, error) {
	n, err := s.rdb.LLen(ctx, KeyWebhookOutbox).Result()
	if err != nil {
		return 0, fmt.Errorf("webhook outbox: %w", err)
	}
	return n, nil
}

// PeekWebhookOutbox waits up to wait for an id in the outbox and returns
// the oldest without removing it ("" when none came): a blocking peek
// (BLMOVE of the tail onto itself leaves the list as it was), so that an
// id leaves the outbox only once the reader is done with it
// (DoneWebhookOutbox). Readers may race for the same id; what they do with
// it must be idempotent.
func (s *Store) PeekWebhookOutbox(ctx context.Context, wait time.Duration) (string, error) {
	id, err := s.rdb.BLMove(ctx, KeyWebhookOutbox, KeyWebhookOutbox, "RIGHT", "RIGHT", wait).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("webhook outbox: %w", err)
	}
	return id, nil
}

// DoneWebhookOutbox removes one occurrence of id, the oldest, from the
// outbox.
func (s *Store) DoneWebhookOutbox(ctx context.Context, id string) error {
	if err := s.rdb.LRem(ctx, KeyWebhookOutbox, -1, id).Err(); err != nil {
		return fmt.Errorf("webhook outbox, job %s: %w", id, err)
	}
	return nil
}

// wantsCompletedFromOutbox says whether ending j where no task can be
// enqueued must go through the outbox: it has a webhook that wants the
// completed event and has not ended yet.
func wantsCompletedFromOutbox(j *Job) bool {
	return j.Webhook.Wants(webhook.EventCompleted) && !j.State.Final()
}
