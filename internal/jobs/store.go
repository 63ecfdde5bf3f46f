package jobs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Store reads and writes job records in Redis.
type Store struct {
	rdb redis.Cmdable
	now func() time.Time
}

// NewStore returns a store on rdb (a client, or an auto-pipeliner in front
// of one). now may be nil (time.Now).
func NewStore(rdb redis.Cmdable, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{rdb: rdb, now: now}
}

// NewJob describes a job about to be created.
type NewJob struct {
	ID       string
	Type     string
	Owner    string
	Queue    string
	MaxRetry int
	Timeout  time.Duration
	// TTL bounds how long the record lives if the job never finishes; a
	// finished job's record lives for the retention given to Finish.
	TTL time.Duration
	// IdempotencyKey, when set, makes Create return the job already created
	// under the same owner and key instead of creating another.
	IdempotencyKey string
	// BodyHash identifies the request body that the idempotency key claims.
	BodyHash string
}

// IdempotentReplay is returned by Create when the owner already used the
// idempotency key; Job is that earlier job, SameBody whether the request
// bodies matched.
type IdempotentReplay struct {
	JobID    string
	SameBody bool
}

func (r *IdempotentReplay) Error() string {
	return "idempotency key already used for job " + r.JobID
}

var createScript = redis.NewScript(`
-- KEYS[1] job record, KEYS[2] idempotency claim (optional)
-- ARGV[1] ttl ms, ARGV[2] claim value, ARGV[3..] record field/value pairs
if #KEYS == 2 then
  local prev = redis.call("GET", KEYS[2])
  if prev then return prev end
  redis.call("SET", KEYS[2], ARGV[2], "PX", ARGV[1])
end
if redis.call("EXISTS", KEYS[1]) == 1 then
  return redis.error_reply("EXISTS job record")
end
redis.call("HSET", KEYS[1], unpack(ARGV, 3))
redis.call("PEXPIRE", KEYS[1], ARGV[1])
return false
`)

// Create writes a queued job record, claiming the idempotency key in the same
// round trip. It returns *IdempotentReplay when the key was used before.
func (s *Store) Create(ctx context.Context, nj NewJob) (*Job, error) {
	now := s.now()
	keys := []string{jobKey(nj.ID)}
	if nj.IdempotencyKey != "" {
		keys = append(keys, idempotencyKey(nj.Owner, nj.IdempotencyKey))
	}
	ttl := nj.TTL
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	args := []any{
		ttl.Milliseconds(), nj.ID + " " + nj.BodyHash,
		fID, nj.ID, fType, nj.Type, fOwner, nj.Owner, fQueue, nj.Queue,
		fState, string(StateQueued), fCreated, ms(now), fAttempts, 0,
		fMaxRetry, nj.MaxRetry, fTimeout, nj.Timeout.Milliseconds(), fVersion, 1,
	}
	res, err := createScript.Run(ctx, s.rdb, keys, args...).Text()
	switch {
	case errors.Is(err, redis.Nil):
		j := &Job{
			ID: nj.ID, Type: nj.Type, Owner: nj.Owner, Queue: nj.Queue, State: StateQueued,
			CreatedAt: time.UnixMilli(now.UnixMilli()).UTC(), MaxRetry: nj.MaxRetry, Timeout: nj.Timeout, Version: 1,
		}
		return j, nil
	case err != nil && strings.Contains(err.Error(), "EXISTS job record"):
		return nil, fmt.Errorf("create job %s: %w", nj.ID, ErrExists)
	case err != nil:
		return nil, fmt.Errorf("create job %s: %w", nj.ID, err)
	}
	prevID, prevHash, _ := strings.Cut(res, " ")
	return nil, &IdempotentReplay{JobID: prevID, SameBody: prevHash == nj.BodyHash}
}

// Discard removes a record (and its idempotency claim) that was created for a
// job whose enqueue failed, so the client's retry starts clean.
func (s *Store) Discard(ctx context.Context, id, owner, idempotencyKeyValue string) error {
	keys := []string{jobKey(id)}
	if idempotencyKeyValue != "" {
		keys = append(keys, idempotencyKey(owner, idempotencyKeyValue))
	}
	if err := s.rdb.Del(ctx, keys...).Err(); err != nil {
		return fmt.Errorf("discard job %s: %w", id, err)
	}
	return nil
}

// Get reads a job record.
func (s *Store) Get(ctx context.Context, id string) (*Job, error) {
	h, err := s.rdb.HGetAll(ctx, jobKey(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("get job %s: %w", id, err)
	}
	j, err := fromHash(h)
	if err != nil {
		return nil, fmt.Errorf("get job %s: %w", id, err)
	}
	return j, nil
}

var startScript = redis.NewScript(`
-- KEYS[1] job; ARGV[1] now ms, ARGV[2] attempt number
local st = redis.call("HMGET", KEYS[1], "state", "cancel")
if not st[1] then return "gone" end
if st[1] == "succeeded" or st[1] == "failed" or st[1] == "canceled" then return st[1] end
if st[2] == "1" then
  redis.call("HSET", KEYS[1], "state", "canceled", "finished", ARGV[1])
  redis.call("HINCRBY", KEYS[1], "version", 1)
  return "canceled"
end
redis.call("HSET", KEYS[1], "state", "running", "attempts", ARGV[2], "pct", 0, "msg", "", "progress_at", ARGV[1])
redis.call("HSETNX", KEYS[1], "started", ARGV[1])
redis.call("HINCRBY", KEYS[1], "version", 1)
return "running"
`)

// ErrGone is returned to a worker whose job record no longer exists (it
// expired or was deleted): there is nobody left to run it for.
var ErrGone = errors.New("job record gone")

// Start moves a job to running for the given attempt (from 1). It returns the
// state found instead when the job must not run: StateCanceled when a cancel
// was requested (the record is moved to canceled), a final state when the job
// already ended, or ErrGone.
func (s *Store) Start(ctx context.Context, id string, attempt int) (State, error) {
	res, err := startScript.Run(ctx, s.rdb, []string{jobKey(id)}, ms(s.now()), attempt).Text()
	if err != nil {
		return "", fmt.Errorf("start job %s: %w", id, err)
	}
	if res == "gone" {
		return "", fmt.Errorf("start job %s: %w", id, ErrGone)
	}
	return State(res), nil
}

var progressScript = redis.NewScript(`
-- KEYS[1] job; ARGV[1] percent, ARGV[2] message, ARGV[3] now ms
-- returns 1 when the job should stop (cancel requested, ended or gone), else 0
local st = redis.call("HMGET", KEYS[1], "state", "cancel")
if st[1] ~= "running" or st[2] == "1" then return 1 end
redis.call("HSET", KEYS[1], "pct", ARGV[1], "msg", ARGV[2], "progress_at", ARGV[3])
redis.call("HINCRBY", KEYS[1], "version", 1)
return 0
`)

// Progress records a running job's progress. stop is true when the worker
// should abandon the attempt: a cancel was requested, or the job is no longer
// running.
func (s *Store) Progress(ctx context.Context, id string, percent float64, message string) (stop bool, err error) {
	n, err := progressScript.Run(ctx, s.rdb, []string{jobKey(id)},
		strconv.FormatFloat(percent, 'f', -1, 64), message, ms(s.now())).Int()
	if err != nil {
		return false, fmt.Errorf("progress job %s: %w", id, err)
	}
	return n == 1, nil
}

var finishScript = redis.NewScript(`
-- KEYS[1] job; ARGV[1] new state, ARGV[2] now ms, ARGV[3] error ("" for none),
-- ARGV[4] retention ms (final states), ARGV[5] attempt ("" = any),
-- ARGV[6..] extra field/value pairs
local st = redis.call("HMGET", KEYS[1], "state", "attempts")
if not st[1] then return "gone" end
if st[1] == "succeeded" or st[1] == "failed" or st[1] == "canceled" then return st[1] end
-- A worker reporting on an attempt that is no longer the current one (a
-- retry already started) changes nothing.
if ARGV[5] ~= "" and st[2] ~= ARGV[5] then return st[1] end
local final = ARGV[1] ~= "retrying"
redis.call("HSET", KEYS[1], "state", ARGV[1], "error", ARGV[3])
if final then
  redis.call("HSET", KEYS[1], "finished", ARGV[2])
  redis.call("HDEL", KEYS[1], "cancel")
  redis.call("PEXPIRE", KEYS[1], ARGV[4])
end
if #ARGV > 5 then redis.call("HSET", KEYS[1], unpack(ARGV, 6)) end
redis.call("HINCRBY", KEYS[1], "version", 1)
return ARGV[1]
`)

// anyAttempt lets a finish apply whatever attempt the record is on.
const anyAttempt = 0

func (s *Store) finish(ctx context.Context, id string, attempt int, to State, errMsg string, retention time.Duration, extra ...any) (State, error) {
	att := ""
	if attempt != anyAttempt {
		att = strconv.Itoa(attempt)
	}
	args := append([]any{string(to), ms(s.now()), errMsg, retention.Milliseconds(), att}, extra...)
	res, err := finishScript.Run(ctx, s.rdb, []string{jobKey(id)}, args...).Text()
	if err != nil {
		return "", fmt.Errorf("job %s to %s: %w", id, to, err)
	}
	if res == "gone" {
		return "", fmt.Errorf("job %s to %s: %w", id, to, ErrGone)
	}
	return State(res), nil
}

// Succeed records attempt's result and ends the job. It returns the state
// the job is in afterwards: a job cancelled meanwhile stays canceled, and a
// report from an attempt that is no longer current changes nothing.
func (s *Store) Succeed(ctx context.Context, id string, attempt int, r Result, retention time.Duration) (State, error) {
	return s.finish(ctx, id, attempt, StateSucceeded, "", retention,
		fResultType, r.ContentType, fResultSize, r.Size, fResultSHA, r.SHA256, fPercent, 100)
}

// Fail records a failed attempt: StateRetrying when another attempt follows,
// StateFailed when none does. Like Succeed, it ignores a stale attempt.
func (s *Store) Fail(ctx context.Context, id string, attempt int, errMsg string, final bool, retention time.Duration) (State, error) {
	to := StateRetrying
	if final {
		to = StateFailed
	}
	return s.finish(ctx, id, attempt, to, errMsg, retention)
}

// Cancel ends a job as canceled (its task was removed from the queue, or its
// handler stopped after a cancel request).
func (s *Store) Cancel(ctx context.Context, id string, retention time.Duration) (State, error) {
	return s.finish(ctx, id, anyAttempt, StateCanceled, "", retention)
}

var requestCancelScript = redis.NewScript(`
-- KEYS[1] job
local st = redis.call("HGET", KEYS[1], "state")
if not st then return "gone" end
if st == "succeeded" or st == "failed" or st == "canceled" then return st end
redis.call("HSET", KEYS[1], "cancel", 1)
return st
`)

// RequestCancel flags a job for cancellation and returns its current state.
// A job that already ended answers ErrFinished with that state.
func (s *Store) RequestCancel(ctx context.Context, id string) (State, error) {
	res, err := requestCancelScript.Run(ctx, s.rdb, []string{jobKey(id)}).Text()
	if err != nil {
		return "", fmt.Errorf("cancel job %s: %w", id, err)
	}
	switch st := State(res); {
	case res == "gone":
		return "", fmt.Errorf("cancel job %s: %w", id, ErrNotFound)
	case st.Final():
		return st, fmt.Errorf("cancel job %s (%s): %w", id, st, ErrFinished)
	default:
		return st, nil
	}
}
