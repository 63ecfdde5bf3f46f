package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/scripts"
)

// MaxDeliveries is how many webhook delivery attempts a job's record keeps:
// the newest, so a receiver that was down for the whole retry window
// still shows how each event ended.
const MaxDeliveries = 100

// Delivery outcomes.
const (
	DeliveryDelivered = "delivered" // the receiver answered 2xx
	DeliveryRetrying  = "retrying"  // this attempt failed; NextRetryAt says when the next one runs
	DeliveryFailed    = "failed"    // this attempt failed and was the last
	DeliveryDropped   = "dropped"   // not sent: a newer event of its kind superseded it
)

// Delivery is one attempt to deliver one webhook event, as the job-token
// holder sees it (GET /v1/jobs/{id}/deliveries).
type Delivery struct {
	// ID is the event's webhook-id: the same for every attempt of one
	// event, so receivers can deduplicate.
	ID string `json:"id"`
	// Event is started, progress, log or completed.
	Event string `json:"event"`
	// Attempt counts from 1.
	Attempt int `json:"attempt"`
	// At is when the attempt ended.
	At time.Time `json:"at"`
	// Outcome is one of the Delivery* outcomes.
	Outcome string `json:"outcome"`
	// StatusCode is the receiver's HTTP status; 0 when none came (refused
	// address, connection error, timeout, or a dropped event).
	StatusCode int `json:"status_code"`
	// Error says why the attempt failed; empty when it did not. It never
	// quotes the receiver's response body.
	Error string `json:"error,omitempty"`
	// NextRetryAt, for an attempt that will be retried, is when.
	NextRetryAt *time.Time `json:"next_retry_at"`
	// DurationMS is how long the attempt took, in milliseconds.
	DurationMS int64 `json:"duration_ms"`
}

var recordDeliveryScript = scripts.New(`
-- KEYS[1] job record, KEYS[2] its deliveries; ARGV[1] the delivery (JSON), ARGV[2] cap
local ttl = redis.call("PTTL", KEYS[1])
if ttl == -2 then return 0 end
redis.call("RPUSH", KEYS[2], ARGV[1])
redis.call("LTRIM", KEYS[2], -tonumber(ARGV[2]), -1)
if ttl > 0 then redis.call("PEXPIRE", KEYS[2], ttl) end
return 1
`)

// RecordDelivery appends d to job id's delivery attempts, which expire
// with the record. A job whose record is gone keeps nothing (and is not
// an error: its deliveries have no reader left).
func (s *Store) RecordDelivery(ctx context.Context, id string, d Delivery) error {
	raw, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("record delivery for job %s: %w", id, err)
	}
	if err := recordDeliveryScript.Run(ctx, s.rdb, []string{jobKey(id), deliveriesKey(id)}, raw, MaxDeliveries).Err(); err != nil {
		return fmt.Errorf("record delivery for job %s: %w", id, err)
	}
	return nil
}

// Deliveries returns job id's recorded delivery attempts, oldest first.
func (s *Store) Deliveries(ctx context.Context, id string) ([]Delivery, error) {
	raw, err := s.rdb.LRange(ctx, deliveriesKey(id), 0, -1).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("deliveries of job %s: %w", id, err)
	}
	out := make([]Delivery, 0, len(raw))
	for _, r := range raw {
		var d Delivery
		if err := json.Unmarshal([]byte(r), &d); err != nil {
			continue // written by a newer version, or corrupt: skip, never fail the read
		}
		out = append(out, d)
	}
	return out, nil
}
