package jobs

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/scripts"
	"github.com/claimcheck/claimcheck/internal/webhook"
)

// Store reads and writes job records in Redis.
type Store struct {
	rdb redis.Cmdable
	now func() time.Time
	// afterAdmit, when set (by tests), runs between a confirm's admission
	// in the owner's slot and its flip in the job's.
	afterAdmit func(id string)
	// steps, set by tests only, is called between the one-slot steps of a
	// multi-step operation (running.go).
	steps func(step, id string)
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
	// Webhook, when set, is the job's webhook subscription, already
	// normalized and checked (webhook.Spec.Normalize, webhook.Guard).
	Webhook *webhook.Spec
	// IdempotencyKey, when set, makes Create return the job already created
	// under the same owner and key instead of creating another.
	IdempotencyKey string
	// BodyHash identifies the request body that the idempotency key claims.
	BodyHash string
	// MaxActive, when positive, refuses the job if the owner already has
	// this many that have not ended.
	MaxActive int
	// OwnerGate, when set, names a Redis hash whose "blocked" field is "1"
	// while the owner may submit nothing (the api sets it to the owner's
	// user record). It must be in the owner's slot (keyslot.Tag(owner)):
	// the scripts that reserve and admit the job read it beside the
	// owner's keys, so a submission already under way when the owner is
	// blocked is refused, or cancelled by "block --cancel-jobs", rather
	// than slipping past (see the package doc).
	OwnerGate string
	// PendingTTL, when positive, writes the record as StatePending: not
	// listed, not counted toward MaxActive, and gone after PendingTTL
	// unless Confirm makes it queued. The api creates every job this way
	// and confirms it once its task is enqueued (see package enqueue), so
	// a submission that fails half-way leaves nothing anyone can see.
	PendingTTL time.Duration
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

// QuotaError is returned by Create when the owner already has MaxActive
// jobs that have not ended.
type QuotaError struct {
	Active, Limit int
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("%d of %d active jobs: %v", e.Active, e.Limit, ErrQuota)
}

func (e *QuotaError) Unwrap() error { return ErrQuota }

// indexHorizon is how far back the owner index keeps ids: longer than any
// record lives (a job token's lifetime is capped at seven days).
const indexHorizon = 8 * 24 * time.Hour

// idPrefixAt is the smallest UUIDv7 string for a time: its first 48 bits are
// the Unix time in milliseconds, written as "xxxxxxxx-xxxx".
func idPrefixAt(t time.Time) string {
	msec := uint64(t.UnixMilli())
	return fmt.Sprintf("%08x-%04x", msec>>16, msec&0xffff)
}

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}

// Exist reports, for each id, whether its record exists, in one round trip.
func (s *Store) Exist(ctx context.Context, ids []string) ([]bool, error) {
	cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, id := range ids {
			p.Exists(ctx, jobKey(id))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("check job records: %w", err)
	}
	out := make([]bool, len(ids))
	for i, c := range cmds {
		out[i] = c.(*redis.IntCmd).Val() == 1
	}
	return out, nil
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

var progressScript = scripts.New(emitLua + `
-- KEYS[1] job, KEYS[2] its events; ARGV[1] percent, ARGV[2] message, ARGV[3] now ms
-- returns 1 when the job should stop (cancel requested, ended or gone), else 0
local st = redis.call("HMGET", KEYS[1], "state", "cancel")
if st[1] ~= "running" or st[2] == "1" then return 1 end
redis.call("HSET", KEYS[1], "pct", ARGV[1], "msg", ARGV[2], "progress_at", ARGV[3])
redis.call("HINCRBY", KEYS[1], "version", 1)
emit("progress", cjson.encode({percent = tonumber(ARGV[1]), message = ARGV[2]}))
return 0
`)

// Progress records a running job's progress. stop is true when the worker
// should abandon the attempt: a cancel was requested, or the job is no longer
// running.
func (s *Store) Progress(ctx context.Context, id string, percent float64, message string) (stop bool, err error) {
	n, err := progressScript.Run(ctx, s.rdb, []string{jobKey(id), eventsKey(id)},
		strconv.FormatFloat(percent, 'f', -1, 64), message, ms(s.now())).Int()
	if err != nil {
		return false, fmt.Errorf("progress job %s: %w", id, err)
	}
	return n == 1, nil
}

var finishScript = scripts.New(emitLua + `
-- KEYS[1] job, KEYS[2] its events, KEYS[3] its log, KEYS[4] its log's
-- counters, KEYS[5] its checkpoint, KEYS[6] its receipt
-- ARGV[1] new state, ARGV[2] now ms, ARGV[3] error ("" for none),
-- ARGV[4] retention ms (final states), ARGV[5] attempt ("" = any),
-- ARGV[6] the receipt to store with a success ("" for none),
-- ARGV[7..] extra field/value pairs
-- returns {state, "1" when the attempt's running-job slot is to be
-- released, else "0"}
local st = redis.call("HMGET", KEYS[1], "state", "attempts")
if not st[1] then return {"gone", "1"} end
if st[1] == "succeeded" or st[1] == "failed" or st[1] == "canceled" then return {st[1], "1"} end
-- A worker reporting on an attempt that is no longer the current one (a
-- retry already started) changes nothing, and leaves the slot to that one.
if ARGV[5] ~= "" and st[2] ~= ARGV[5] then return {st[1], "0"} end
local final = ARGV[1] ~= "retrying" and ARGV[1] ~= "queued"
redis.call("HSET", KEYS[1], "state", ARGV[1], "error", ARGV[3])
if final then
  redis.call("HSET", KEYS[1], "finished", ARGV[2])
  redis.call("HDEL", KEYS[1], "cancel", "held")
  redis.call("PEXPIRE", KEYS[1], ARGV[4])
  -- The log expires with the record (a no-op for a job that logged nothing).
  redis.call("PEXPIRE", KEYS[3], ARGV[4])
  redis.call("PEXPIRE", KEYS[4], ARGV[4])
  -- A job that has ended has no next attempt to start from.
  redis.call("DEL", KEYS[5])
  -- The receipt is written with the success it states, never apart from
  -- it, and expires with the record.
  if ARGV[1] == "succeeded" and ARGV[6] ~= "" then
    redis.call("SET", KEYS[6], ARGV[6], "PX", ARGV[4])
  end
end
if #ARGV > 6 then redis.call("HSET", KEYS[1], unpack(ARGV, 7)) end
redis.call("HINCRBY", KEYS[1], "version", 1)
local ev = {state = ARGV[1]}
if ARGV[3] ~= "" then ev.error = ARGV[3] end
if ARGV[1] == "succeeded" then
  local r = redis.call("HMGET", KEYS[1], "result_type", "result_size", "result_sha")
  ev.result = {content_type = r[1], size = tonumber(r[2]), sha256 = r[3]}
end
if final then emit("done", cjson.encode(ev)) else emit("state", cjson.encode(ev)) end
return {ARGV[1], "1"}
`)

// anyAttempt lets a finish apply whatever attempt the record is on.
const anyAttempt = 0

// finish moves job id to state to. With a slot it then releases the slot
// (the record first: see "Running" in the package doc) and returns the
// owner's held jobs that may start now.
func (s *Store) finish(ctx context.Context, id string, attempt int, to State, errMsg string, retention time.Duration, slot *Slot, extra ...any) (State, []Waiting, error) {
	return s.finishWith(ctx, id, attempt, to, errMsg, retention, slot, nil, extra...)
}

// finishWith is finish that, for a success, stores rc beside the record
// in the same script, and dates the end rc.At (nil: no receipt, ended now).
func (s *Store) finishWith(ctx context.Context, id string, attempt int, to State, errMsg string, retention time.Duration, slot *Slot, rc *Receipt, extra ...any) (State, []Waiting, error) {
	att := ""
	if attempt != anyAttempt {
		att = strconv.Itoa(attempt)
	}
	at, receipt := s.now(), ""
	if rc != nil {
		at, receipt = rc.At, rc.Token
	}
	keys := []string{jobKey(id), eventsKey(id), logKey(id), logMetaKey(id), checkpointKey(id), receiptKey(id)}
	args := append([]any{string(to), ms(at), errMsg, retention.Milliseconds(), att, receipt}, extra...)
	res, err := finishScript.Run(ctx, s.rdb, keys, args...).StringSlice()
	if err != nil {
		return "", nil, fmt.Errorf("job %s to %s: %w", id, to, err)
	}
	if len(res) != 2 {
		return "", nil, fmt.Errorf("job %s to %s: unexpected reply %q", id, to, res)
	}
	var next []Waiting
	if slot != nil {
		s.hook("recorded", id)
		// A worker that dies here leaves the slot to free at its lease
		// end, or at the next start that finds the owner's slots full and
		// reads this job's record ended; and the heartbeat entry of a
		// record that no longer runs this run, which a reconciler drops.
		// The entry goes whether or not this attempt was current: a
		// superseded run's removal only ever removes its own.
		var also []scriptCall
		if slot.Run != "" {
			also = append(also, beatEnd(id, slot.Run))
		}
		if slot.Owner != "" && res[1] == "1" {
			next, err = s.release(ctx, slot.Owner, id, "", slot.MaxRunning, also...)
		} else {
			err = firstErr(s.runScripts(ctx, also...))
		}
		if err != nil {
			return "", nil, fmt.Errorf("job %s to %s: %w", id, to, err)
		}
	}
	if res[0] == "gone" {
		return "", next, fmt.Errorf("job %s to %s: %w", id, to, ErrGone)
	}
	return State(res[0]), next, nil
}

// Succeed records attempt's result and ends the job. It returns the state
// the job is in afterwards: a job cancelled meanwhile stays canceled, and a
// report from an attempt that is no longer current changes nothing.
func (s *Store) Succeed(ctx context.Context, id string, attempt int, r Result, retention time.Duration) (State, error) {
	st, _, err := s.SucceedReleasing(ctx, id, attempt, r, retention, nil)
	return st, err
}

// SucceedReleasing is Succeed for an attempt that holds slot (nil: none):
// once the end is recorded the slot is released, as Release does, and the
// run's heartbeat entry removed (Slot.Run).
func (s *Store) SucceedReleasing(ctx context.Context, id string, attempt int, r Result, retention time.Duration, slot *Slot) (State, []Waiting, error) {
	return s.SucceedWithReceipt(ctx, id, attempt, r, retention, slot, nil)
}

// Receipt is a result receipt to store with a success (SucceedWithReceipt).
type Receipt struct {
	// Token is the receipt, a compact JWS (tokens.ReceiptMinter).
	Token string
	// At is when the job finished as the receipt states it: the record's
	// finished_at is set to it (to the millisecond), so the two agree.
	At time.Time
}

// SucceedWithReceipt is SucceedReleasing that stores rc (nil: none) beside
// the record, in the script that records the success: a succeeded record
// whose worker minted a receipt is never seen without it, and the receipt
// expires with the record. A success that is not recorded (the job was
// cancelled meanwhile, or the attempt is stale) stores no receipt either.
func (s *Store) SucceedWithReceipt(ctx context.Context, id string, attempt int, r Result, retention time.Duration, slot *Slot, rc *Receipt) (State, []Waiting, error) {
	return s.finishWith(ctx, id, attempt, StateSucceeded, "", retention, slot, rc,
		fResultType, r.ContentType, fResultSize, r.Size, fResultSHA, r.SHA256, fPercent, 100)
}

// ErrNoReceipt is Receipt's answer for a job with no receipt: it did not
// succeed, its worker held no receipt keys, or its record has expired.
var ErrNoReceipt = errors.New("no receipt")

// Receipt reads job id's result receipt (a compact JWS).
func (s *Store) Receipt(ctx context.Context, id string) (string, error) {
	tok, err := s.rdb.Get(ctx, receiptKey(id)).Result()
	if errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("job %s: %w", id, ErrNoReceipt)
	}
	if err != nil {
		return "", fmt.Errorf("job %s receipt: %w", id, err)
	}
	return tok, nil
}

// Fail records a failed attempt: StateRetrying when another attempt follows,
// StateFailed when none does. Like Succeed, it ignores a stale attempt.
func (s *Store) Fail(ctx context.Context, id string, attempt int, errMsg string, final bool, retention time.Duration) (State, error) {
	st, _, err := s.FailReleasing(ctx, id, attempt, errMsg, final, retention, nil)
	return st, err
}

// FailReleasing is Fail for an attempt that holds slot (nil: none).
func (s *Store) FailReleasing(ctx context.Context, id string, attempt int, errMsg string, final bool, retention time.Duration, slot *Slot) (State, []Waiting, error) {
	to := StateRetrying
	if final {
		to = StateFailed
	}
	return s.finish(ctx, id, attempt, to, errMsg, retention, slot)
}

// HandBack records that attempt was handed back to its queue unfinished
// (its worker is shutting down): the job is queued again, spends no retry,
// and the attempt's slot (nil: none) is released for whoever runs next. Like
// Succeed, it ignores a stale attempt and a job that has ended.
func (s *Store) HandBack(ctx context.Context, id string, attempt int, slot *Slot) (State, []Waiting, error) {
	return s.finish(ctx, id, attempt, StateQueued, "", 0, slot)
}

// Cancel ends a job as canceled (its task was removed from the queue, or its
// handler stopped after a cancel request).
func (s *Store) Cancel(ctx context.Context, id string, retention time.Duration) (State, error) {
	st, _, err := s.CancelReleasing(ctx, id, retention, nil)
	return st, err
}

// CancelReleasing is Cancel for an attempt that holds slot (nil: none).
func (s *Store) CancelReleasing(ctx context.Context, id string, retention time.Duration, slot *Slot) (State, []Waiting, error) {
	return s.finish(ctx, id, anyAttempt, StateCanceled, "", retention, slot)
}

var requestCancelScript = scripts.New(`
-- KEYS[1] job; ARGV[1] the token's epoch
local st = redis.call("HMGET", KEYS[1], "state", "epoch")
if not st[1] then return "gone" end
if tonumber(st[2] or "0") > tonumber(ARGV[1]) then return "revoked" end
if st[1] == "succeeded" or st[1] == "failed" or st[1] == "canceled" then return st[1] end
redis.call("HSET", KEYS[1], "cancel", 1)
return st[1]
`)

// AnyEpoch passes every epoch check: for operators, who hold no job token.
const AnyEpoch = math.MaxInt64

// RequestCancel flags a job for cancellation and returns its current state.
// tokenEpoch is the epoch of the job token asking (AnyEpoch for an
// operator): a revoked token is ErrTokenRevoked, checked in the same script
// so it can never change the job. A job that already ended answers
// ErrFinished with that state.
func (s *Store) RequestCancel(ctx context.Context, id string, tokenEpoch int64) (State, error) {
	res, err := requestCancelScript.Run(ctx, s.rdb, []string{jobKey(id)}, strconv.FormatInt(tokenEpoch, 10)).Text()
	if err != nil {
		return "", fmt.Errorf("cancel job %s: %w", id, err)
	}
	switch st := State(res); {
	case res == "gone":
		return "", fmt.Errorf("cancel job %s: %w", id, ErrNotFound)
	case res == "revoked":
		return "", fmt.Errorf("cancel job %s: %w", id, ErrTokenRevoked)
	case st.Final():
		return st, fmt.Errorf("cancel job %s (%s): %w", id, st, ErrFinished)
	default:
		return st, nil
	}
}

var revokeTokensScript = scripts.New(`
-- KEYS[1] job
if redis.call("EXISTS", KEYS[1]) == 0 then return false end
local e = redis.call("HINCRBY", KEYS[1], "epoch", 1)
redis.call("HINCRBY", KEYS[1], "version", 1)
-- Not logged (no client replays it), only published: progress processes
-- drop their cached record and end event streams of revoked tokens.
` + publishLua + `publish(` + jobIDLua + ` .. " 0-0 ` + EventRevoked + ` {\"epoch\":" .. e .. "}")
return e
`)

// RevokeTokens raises the job's token epoch, so every job token minted
// before is refused from the next request on, and returns the new epoch to
// mint a fresh token at. It costs readers nothing: they read the record
// anyway.
func (s *Store) RevokeTokens(ctx context.Context, id string) (int64, error) {
	e, err := revokeTokensScript.Run(ctx, s.rdb, []string{jobKey(id)}).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, fmt.Errorf("revoke tokens of job %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("revoke tokens of job %s: %w", id, err)
	}
	return e, nil
}
