package jobs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protowire"
)

// Heartbeats and reconciliation. A record that says running is only true
// while some worker is running the attempt; a worker killed mid-job (or one
// that lost its Asynq lease, asynq #1144) leaves it saying running until it
// expires. So each running attempt has an entry in one sorted set,
// KeyHeartbeats, scored by the last time its worker said it was alive:
//
//	start script (StartAttempt) ──▶ ZADD id now      (in the same script)
//	worker, every heartbeat    ──▶ ZADD XX ids now  (Heartbeat)
//	worker, attempt ended      ──▶ ZREM id          (EndHeartbeat)
//
// A reconciler (package worker) reads the entries whose score is older than
// its cutoff (Stale, a bounded page), asks Asynq what became of each task,
// and moves the record with Reconcile. Reconcile is one script that changes
// the record only if it is still running the attempt the reconciler saw and
// its heartbeat is still older than the cutoff, so a live worker (a fresh
// heartbeat) or a newer attempt always wins, and any number of reconcilers
// may run at once. Entries whose record is no longer running (the worker
// died between recording the end and removing its entry) are dropped.
//
// A job failed this way frees its running-job slot in the same script
// (ReconcileReleasing), as a worker's own end does. A task that Asynq would
// not run again although the job has a retry left (archived, or active
// without a lease) is put back in its queue first (RequeueTask), counted as
// retried once per attempt spent, so the re-run is the next attempt.

// StaleJob is a running job whose worker has not sent a heartbeat since the
// cutoff given to Stale.
type StaleJob struct {
	ID string
	// State is the record's state; StateGone when the record is gone.
	State State
	// Queue is the Asynq queue its task was put in.
	Queue string
	// Owner is the job's owner, whose running-job slot a final verdict
	// releases.
	Owner string
	// Attempt is the record's current attempt (from 1).
	Attempt int
	// MaxRetry is the job's retry budget.
	MaxRetry int
	// Heartbeat is when its worker last said it was alive.
	Heartbeat time.Time
}

// StateGone is the State of a StaleJob whose record no longer exists.
const StateGone State = "gone"

// RetriesLeft says another attempt may follow the current one.
func (j StaleJob) RetriesLeft() bool { return j.Attempt <= j.MaxRetry }

// Heartbeat records that the worker running ids is alive. Only ids that
// still have an entry are touched: one a reconciler has already ended
// stays ended.
//
// Heartbeats are stamped with Redis's clock (redisNowLua), not the
// worker's: every worker's heartbeats, and the reconcilers reading them
// (Heartbeats), then share one clock, so no worker's clock being off can
// make a live worker look lost or a dead one look alive.
func (s *Store) Heartbeat(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	if err := heartbeatScript.Run(ctx, s.rdb, []string{KeyHeartbeats}, args...).Err(); err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	return nil
}

// redisNowLua defines redis_now_ms(): Redis's clock, in Unix ms.
const redisNowLua = `
local function redis_now_ms()
  local t = redis.call("TIME")
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`

var heartbeatScript = redis.NewScript(redisNowLua + `
-- KEYS[1] heartbeats; ARGV the job ids (only those with an entry)
local now = redis_now_ms()
for _, id in ipairs(ARGV) do redis.call("ZADD", KEYS[1], "XX", now, id) end
return 0
`)

var endHeartbeatScript = redis.NewScript(`
-- KEYS[1] heartbeats, KEYS[2] the job; ARGV[1] job id
if redis.call("HGET", KEYS[2], "state") == "running" then return 0 end
return redis.call("ZREM", KEYS[1], ARGV[1])
`)

// EndHeartbeat removes job id's heartbeat entry once its attempt's end has
// been recorded, unless the record says running: then the entry is
// another attempt's (a retry that started already, or the current attempt
// of a job whose stale attempt this was), which still needs it to be
// found if its worker is lost.
func (s *Store) EndHeartbeat(ctx context.Context, id string) error {
	if err := endHeartbeatScript.Run(ctx, s.rdb, []string{KeyHeartbeats, jobKey(id)}, id).Err(); err != nil {
		return fmt.Errorf("end heartbeat of job %s: %w", id, err)
	}
	return nil
}

// Stale returns up to limit jobs whose last heartbeat is older than cutoff,
// oldest first, with what their records say. Two round trips.
func (s *Store) Stale(ctx context.Context, cutoff time.Time, limit int) ([]StaleJob, error) {
	zs, err := s.rdb.ZRangeByScoreWithScores(ctx, KeyHeartbeats, &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(cutoff.UnixMilli(), 10), Count: int64(limit),
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("stale jobs: %w", err)
	}
	return s.staleJobs(ctx, zs)
}

// HeartbeatEntry is one running attempt's entry: its job, and the last
// heartbeat its worker wrote, by that worker's clock.
type HeartbeatEntry struct {
	ID string
	At time.Time
}

// Heartbeats returns every heartbeat entry, oldest first: one round trip,
// as long as the fleet's running jobs are many. A reconciler that must not
// trust other machines' clocks compares each entry with its own earlier
// reading of it instead of with a cutoff (package worker).
//
// It also returns Redis's clock at the read, the clock the heartbeats were
// stamped with (Heartbeat).
func (s *Store) Heartbeats(ctx context.Context) ([]HeartbeatEntry, time.Time, error) {
	pipe := s.rdb.Pipeline()
	clock := pipe.Time(ctx)
	entries := pipe.ZRangeWithScores(ctx, KeyHeartbeats, 0, -1)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, time.Time{}, fmt.Errorf("heartbeats: %w", err)
	}
	zs := entries.Val()
	out := make([]HeartbeatEntry, len(zs))
	for i, z := range zs {
		out[i] = HeartbeatEntry{ID: z.Member.(string), At: time.UnixMilli(int64(z.Score)).UTC()}
	}
	return out, clock.Val().UTC(), nil
}

// StaleJobs is Stale for entries the caller picked (Heartbeats): what
// their records say, each with the heartbeat as read. One round trip.
func (s *Store) StaleJobs(ctx context.Context, entries []HeartbeatEntry) ([]StaleJob, error) {
	zs := make([]redis.Z, len(entries))
	for i, e := range entries {
		zs[i] = redis.Z{Member: e.ID, Score: float64(e.At.UnixMilli())}
	}
	return s.staleJobs(ctx, zs)
}

func (s *Store) staleJobs(ctx context.Context, zs []redis.Z) ([]StaleJob, error) {
	if len(zs) == 0 {
		return nil, nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(zs))
	for i, z := range zs {
		cmds[i] = pipe.HMGet(ctx, jobKey(z.Member.(string)), fState, fQueue, fAttempts, fMaxRetry, fOwner)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("stale jobs: %w", err)
	}
	out := make([]StaleJob, len(zs))
	for i, z := range zs {
		v := cmds[i].Val()
		str := func(k int) string {
			if k < len(v) {
				if s, ok := v[k].(string); ok {
					return s
				}
			}
			return ""
		}
		j := StaleJob{ID: z.Member.(string), State: State(str(0)), Queue: str(1), Owner: str(4),
			Heartbeat: time.UnixMilli(int64(z.Score)).UTC()}
		if j.State == "" {
			j.State = StateGone
		}
		j.Attempt, _ = strconv.Atoi(str(2))
		j.MaxRetry, _ = strconv.Atoi(str(3))
		out[i] = j
	}
	return out, nil
}

var reconcileScript = redis.NewScript(emitLua + releaseLua + `
-- KEYS[1] job, KEYS[2] its events, KEYS[3] its log, KEYS[4] its log's
-- counters, KEYS[5] heartbeats, KEYS[6] its checkpoint, and when the job
-- has an owner KEYS[7] the owner's slots, KEYS[8] the owner's held jobs
-- ARGV[1] job id, ARGV[2] attempt seen, ARGV[3] cutoff ms, ARGV[4] new
-- state ("" to only drop an entry whose record is not running), ARGV[5]
-- error, ARGV[6] now ms, ARGV[7] retention ms, ARGV[8] running-job cap
-- returns {state afterwards ("gone" for none), held members that may
-- start now...}
local st = redis.call("HMGET", KEYS[1], "state", "attempts")
if not st[1] or st[1] ~= "running" then
  redis.call("ZREM", KEYS[5], ARGV[1])
  return {st[1] or "gone"}
end
if st[2] ~= ARGV[2] or ARGV[4] == "" then return {st[1]} end
local hb = redis.call("ZSCORE", KEYS[5], ARGV[1])
if hb and tonumber(hb) > tonumber(ARGV[3]) then return {st[1]} end
local final = ARGV[4] == "failed"
-- A job left retrying keeps its entry, still stale: the next pass looks
-- again, for a task whose lease has expired since (see RequeueTask).
if ARGV[4] ~= "retrying" then redis.call("ZREM", KEYS[5], ARGV[1]) end
redis.call("HSET", KEYS[1], "state", ARGV[4], "error", ARGV[5])
if final then
  redis.call("HSET", KEYS[1], "finished", ARGV[6])
  redis.call("HDEL", KEYS[1], "cancel", "held")
  redis.call("PEXPIRE", KEYS[1], ARGV[7])
  redis.call("PEXPIRE", KEYS[3], ARGV[7])
  redis.call("PEXPIRE", KEYS[4], ARGV[7])
  -- A job that has ended has no next attempt to start from.
  redis.call("DEL", KEYS[6])
end
redis.call("HINCRBY", KEYS[1], "version", 1)
local ev = {state = ARGV[4]}
if ARGV[5] ~= "" then ev.error = ARGV[5] end
if final then emit("done", cjson.encode(ev)) else emit("state", cjson.encode(ev)) end
-- A job that ends here frees its running-job slot now, as the worker's own
-- end would have, rather than when the slot's lease runs out (an hour or
-- more away): the owner's held jobs may start. One that will run again
-- keeps it, as a re-run is let in on its own slot.
local out = {}
if final and #KEYS >= 8 then out = release(KEYS[7], KEYS[8], ARGV[1], tonumber(ARGV[8]), ARGV[6]) end
table.insert(out, 1, ARGV[4])
return out
`)

// Reconcile moves stale job j, whose worker is lost, to state to
// (StateFailed, StateRetrying or StateQueued) with errMsg as its error, if
// its record still runs attempt j.Attempt and its heartbeat is still older
// than cutoff; a record that is not running only loses its entry. A job
// moved to StateRetrying keeps its entry, still stale, so that the next
// pass looks at its task again (RequeueTask). It
// returns the state the record is in afterwards (StateGone: no record).
func (s *Store) Reconcile(ctx context.Context, j StaleJob, cutoff time.Time, to State, errMsg string, retention time.Duration) (State, error) {
	st, _, err := s.ReconcileReleasing(ctx, j, cutoff, to, errMsg, retention, 0)
	return st, err
}

// ReconcileReleasing is Reconcile for a fleet with a running-job cap of
// maxRunning (zero or less: none). When it fails the job it also frees the
// slot the lost attempt took in StartAttempt, and returns the owner's held
// jobs that may start now (as Release does), for the caller to move to the
// front of their queues.
func (s *Store) ReconcileReleasing(ctx context.Context, j StaleJob, cutoff time.Time, to State, errMsg string, retention time.Duration, maxRunning int) (State, []Waiting, error) {
	keys := []string{jobKey(j.ID), eventsKey(j.ID), logKey(j.ID), logMetaKey(j.ID), KeyHeartbeats, checkpointKey(j.ID)}
	if j.Owner != "" {
		keys = append(keys, ownerRunningKey(j.Owner), ownerHeldKey(j.Owner))
	}
	res, err := reconcileScript.Run(ctx, s.rdb, keys, j.ID, j.Attempt, cutoff.UnixMilli(), string(to), errMsg,
		ms(s.now()), retention.Milliseconds(), max(maxRunning, 0)).StringSlice()
	if err != nil {
		return "", nil, fmt.Errorf("reconcile job %s: %w", j.ID, err)
	}
	if len(res) == 0 {
		return "", nil, fmt.Errorf("reconcile job %s: empty reply", j.ID)
	}
	return State(res[0]), parseWaiting(res[1:]), nil
}

var restoreLeaseScript = redis.NewScript(`
-- KEYS[1] the queue's active list, KEYS[2] its lease set; ARGV[1] task id
-- returns 1 if the task is active and had no lease (it has an expired one now)
if not redis.call("LPOS", KEYS[1], ARGV[1]) then return 0 end
return redis.call("ZADD", KEYS[2], "NX", 0, ARGV[1])
`)

// RestoreLease gives an active Asynq task that has lost its lease (asynq
// #1144: it would stay active forever) an expired one, so that Asynq's own
// recoverer retries or archives it as it does for a dead worker's task.
// It reports whether the lease was missing.
func (s *Store) RestoreLease(ctx context.Context, queue, id string) (bool, error) {
	n, err := restoreLeaseScript.Run(ctx, s.rdb, []string{asynqActiveKey(queue), asynqLeaseKey(queue)}, id).Int()
	if err != nil {
		return false, fmt.Errorf("restore lease of task %s: %w", id, err)
	}
	return n == 1, nil
}

var requeueScript = redis.NewScript(`
-- KEYS[1] the task, KEYS[2] the queue's active list, KEYS[3] its lease
-- set, KEYS[4] its archive, KEYS[5] its pending list
-- ARGV[1] task id, ARGV[2] its message as read, ARGV[3] the message to
-- store, ARGV[4] now ns, ARGV[5] an active task's lease must have expired
-- before this (Unix s; 0: it must have none)
-- returns 1 if the task was put back in its queue
local t = redis.call("HMGET", KEYS[1], "msg", "state")
-- Anything that touched the task since it was read (its worker, Asynq's
-- recoverer, another reconciler) wins.
if t[1] ~= ARGV[2] then return 0 end
if t[2] == "archived" then
  if redis.call("ZREM", KEYS[4], ARGV[1]) == 0 then return 0 end
elseif t[2] == "active" then
  -- A task whose lease may still be extended is its worker's.
  local lease = redis.call("ZSCORE", KEYS[3], ARGV[1])
  if lease and (ARGV[5] == "0" or tonumber(lease) >= tonumber(ARGV[5])) then return 0 end
  if redis.call("LREM", KEYS[2], 0, ARGV[1]) == 0 then return 0 end
  redis.call("ZREM", KEYS[3], ARGV[1])
else
  return 0
end
redis.call("HSET", KEYS[1], "msg", ARGV[3], "state", "pending", "pending_since", ARGV[4])
redis.call("LPUSH", KEYS[5], ARGV[1])
return 1
`)

// RequeueTask puts back in its queue the Asynq task of a job whose worker
// was lost, when Asynq itself would not run it again, or not soon: an
// archived task, an active one without a lease (asynq #1144: Asynq's
// recoverer only looks at leases), or, when expiredBefore is not zero, an
// active one whose lease expired before then (Asynq's recoverer takes it
// only 30 s after that, at its next look, once a minute). spent is how
// many attempts the job has used (its record's attempt) and maxRetry its
// retry budget: the task is stored as retried spent times, with the
// delivery budget of DeliveryRetries(maxRetry), so the next run is attempt
// spent+1 and the job gets exactly its budget, as if Asynq had retried it. It reports whether
// the task was put back; false (with no error) when it is in any other
// state or changed while being looked at.
//
// Asynq has no call for this: Inspector.RunTask takes no active task, and
// keeps an archived one's retry count, so its re-run would repeat the lost
// attempt's number and be its last. So this edits Asynq's task message
// (asynq v0.26 internal/proto TaskMessage, fields retry and retried) and
// moves the task as Asynq's own scripts do, in one script that applies only
// if the message is still the one read.
func (s *Store) RequeueTask(ctx context.Context, queue, id string, spent, maxRetry int, expiredBefore time.Time) (bool, error) {
	key := asynqTaskKey(queue, id)
	msg, err := s.rdb.HGet(ctx, key, "msg").Result()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("requeue task %s: %w", id, err)
	}
	updated, err := setRetries([]byte(msg), DeliveryRetries(maxRetry), spent)
	if err != nil {
		return false, fmt.Errorf("requeue task %s: %w", id, err)
	}
	keys := []string{key, asynqActiveKey(queue), asynqLeaseKey(queue), asynqArchivedKey(queue), asynqPendingKey(queue)}
	var before int64
	if !expiredBefore.IsZero() {
		before = expiredBefore.Unix()
	}
	n, err := requeueScript.Run(ctx, s.rdb, keys, id, msg, updated, s.now().UnixNano(), before).Int()
	if err != nil {
		return false, fmt.Errorf("requeue task %s: %w", id, err)
	}
	return n == 1, nil
}

// Field numbers of asynq's TaskMessage (v0.26 internal/proto/asynq.proto).
const (
	taskMsgRetry   protowire.Number = 5
	taskMsgRetried protowire.Number = 6
)

// setRetries returns Asynq task message msg with retried set to retried and
// its retry budget raised to at least retry; every other field is kept
// byte for byte.
func setRetries(msg []byte, retry, retried int) ([]byte, error) {
	out := make([]byte, 0, len(msg)+12)
	for b := msg; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("task message: %w", protowire.ParseError(n))
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, fmt.Errorf("task message: %w", protowire.ParseError(m))
		}
		switch {
		case (num == taskMsgRetry || num == taskMsgRetried) && typ != protowire.VarintType:
			return nil, fmt.Errorf("task message: field %d is not a varint", num)
		case num == taskMsgRetry:
			v, _ := protowire.ConsumeVarint(b[n:])
			retry = max(retry, int(int32(v)))
		case num == taskMsgRetried:
		default:
			out = append(out, b[:n+m]...)
		}
		b = b[n+m:]
	}
	// proto3 leaves zero out; a later field of the same number would win.
	for _, f := range []struct {
		num protowire.Number
		v   int
	}{{taskMsgRetry, retry}, {taskMsgRetried, retried}} {
		if f.v != 0 {
			out = protowire.AppendTag(out, f.num, protowire.VarintType)
			out = protowire.AppendVarint(out, uint64(int64(int32(f.v))))
		}
	}
	return out, nil
}
