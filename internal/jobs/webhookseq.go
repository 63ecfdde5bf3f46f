package jobs

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/scripts"
)

// Webhook bookkeeping (package delivery): beside the record, in its slot, a
// hash per job (KeySuffixWebhook) that lets a delivery attempt tell whether
// a newer event of its kind, or the completed event, has been enqueued
// since its own, and that remembers a receiver that unsubscribed (410).

// WebhookState is what the webhook hash says of a job's events.
type WebhookState struct {
	// Seq is the newest sequence number enqueued per event kind
	// (progress, log).
	Seq map[string]int64
	// Completed is set once the completed event was enqueued.
	Completed bool
	// Gone is set once the receiver answered 410 Gone.
	Gone bool
}

var webhookNextScript = scripts.New(`
-- KEYS[1] job record, KEYS[2] its webhook hash; ARGV[1] field
-- returns the field's new value; 0 when the record is gone, -1 when the
-- receiver unsubscribed, -2 for completed when the job has not ended
local ttl = redis.call("PTTL", KEYS[1])
if ttl == -2 then return 0 end
if redis.call("HGET", KEYS[2], "gone") == "1" then return -1 end
local n
if ARGV[1] == "completed" then
  local st = redis.call("HGET", KEYS[1], "state")
  if st ~= "succeeded" and st ~= "failed" and st ~= "canceled" then return -2 end
  redis.call("HSET", KEYS[2], "completed", 1)
  n = 1
else
  n = redis.call("HINCRBY", KEYS[2], ARGV[1], 1)
end
if ttl > 0 then redis.call("PEXPIRE", KEYS[2], ttl) end
return n
`)

// ErrWebhookGone is NextWebhookEvent's answer for a job whose receiver
// unsubscribed (answered 410): no further event is sent.
var ErrWebhookGone = errors.New("webhook receiver unsubscribed")

// NextWebhookEvent records that an event of kind (progress, log or
// completed) is being enqueued for job id and returns its sequence number
// (always 1 for completed, which a job that has not ended refuses with
// ErrNotFinished). A record that is gone is ErrGone; a receiver that
// unsubscribed ErrWebhookGone.
func (s *Store) NextWebhookEvent(ctx context.Context, id, kind string) (int64, error) {
	n, err := webhookNextScript.Run(ctx, s.rdb, []string{jobKey(id), webhookKey(id)}, kind).Int64()
	switch {
	case err != nil:
		return 0, fmt.Errorf("webhook event of job %s: %w", id, err)
	case n == 0:
		return 0, fmt.Errorf("webhook event of job %s: %w", id, ErrGone)
	case n == -2:
		return 0, fmt.Errorf("webhook event of job %s: %w", id, ErrNotFinished)
	case n < 0:
		return 0, fmt.Errorf("webhook event of job %s: %w", id, ErrWebhookGone)
	}
	return n, nil
}

// WebhookState reads job id's webhook hash (all zero when there is none).
func (s *Store) WebhookState(ctx context.Context, id string) (WebhookState, error) {
	h, err := s.rdb.HGetAll(ctx, webhookKey(id)).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return WebhookState{}, fmt.Errorf("webhook state of job %s: %w", id, err)
	}
	st := WebhookState{Seq: map[string]int64{}, Completed: h["completed"] == "1", Gone: h["gone"] == "1"}
	for k, v := range h {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && k != "completed" && k != "gone" {
			st.Seq[k] = n
		}
	}
	return st, nil
}

var webhookGoneScript = scripts.New(`
-- KEYS[1] job record, KEYS[2] its webhook hash
local ttl = redis.call("PTTL", KEYS[1])
if ttl == -2 then return 0 end
redis.call("HSET", KEYS[2], "gone", 1)
if ttl > 0 then redis.call("PEXPIRE", KEYS[2], ttl) end
return 1
`)

// MarkWebhookGone remembers that job id's receiver answered 410 Gone, so
// no further event of the job is enqueued or sent.
func (s *Store) MarkWebhookGone(ctx context.Context, id string) error {
	if err := webhookGoneScript.Run(ctx, s.rdb, []string{jobKey(id), webhookKey(id)}).Err(); err != nil {
		return fmt.Errorf("webhook of job %s: %w", id, err)
	}
	return nil
}
