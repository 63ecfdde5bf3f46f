package jobs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/claimcheck/claimcheck/internal/scripts"
)

// Heartbeats and reconciliation. A record that says running is only true
// while some worker is running the attempt; a worker killed mid-job (or one
// that lost its Asynq lease, asynq #1144) leaves it saying running until it
// expires. So each running attempt has an entry in one sorted set,
// KeyHeartbeats, scored by the last time its worker said it was alive, and
// the run it belongs to (Attempt.Run) in the hash KeyHeartbeatRuns beside
// it:
//
//	StartAttempt, before the record   ──▶ ZADD id now, runs[id] = run
//	worker, every heartbeat            ──▶ ZADD XX id now, if runs[id] is its run
//	worker, attempt ended and recorded ──▶ ZREM id, if runs[id] is its run
//
// Both keys are in one cluster slot, so on one node, and every script that
// stamps a heartbeat touches only them and reads that node's clock: every
// heartbeat of the fleet, and the reconcilers' reading of them
// (Heartbeats), share one clock. The run check is what lets the entry's
// steps be separate from the record's: the end of a superseded run, or of
// a start that did not run, can only remove its own entry, never that of
// a newer run of the same job.
//
// A reconciler (package worker) reads the entries whose score is older than
// its cutoff (Stale, a bounded page), asks Asynq what became of each task,
// and moves the record with Reconcile, in three one-slot steps:
//
//	1. heartbeat slot: the entry is still this run's, still older than
//	   the cutoff (StillStale; else a live worker or a newer run wins)
//	2. job slot: the record still runs that attempt and run: it moves
//	3. heartbeat slot: the entry is removed (unless left retrying), and,
//	   side by side, owner slot: a failed job's running-job slot is freed
//
// A reconciler that dies after 1 changed nothing; after 2, it leaves an
// entry whose record is not running, which the next pass drops, and a slot
// that frees at its lease end. Any number of reconcilers may run at once:
// each step is conditional on what the one before saw.
//
// A job failed this way frees its running-job slot (ReconcileReleasing),
// as a worker's own end does. A task that Asynq would not run again
// although the job has a retry left (archived, or active without a lease)
// is put back in its queue first (RequeueTask, a script on that queue's
// Asynq keys only), counted as retried once per attempt spent, so the
// re-run is the next attempt: see package worker for that order.

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
	// Run is the run the heartbeat entry belongs to ("": not known, an
	// entry written before entries named their run).
	Run string
	// RecordRun is the run the record says is current.
	RecordRun string
}

// StateGone is the State of a StaleJob whose record no longer exists.
const StateGone State = "gone"

// RetriesLeft says another attempt may follow the current one.
func (j StaleJob) RetriesLeft() bool { return j.Attempt <= j.MaxRetry }

// Superseded says the entry is not the current run's: the record runs
// another run of the job (or the entry's run never got to run). Such an
// entry is only dropped.
func (j StaleJob) Superseded() bool { return j.Run != "" && j.Run != j.RecordRun }

// AttemptRun names one run of a job's attempt, for its heartbeats.
type AttemptRun struct {
	ID, Run string
}

// Heartbeat records that the worker running ids is alive. Only ids that
// still have an entry are touched: one a reconciler has already ended
// stays ended. HeartbeatRuns is the same for named runs.
//
// Heartbeats are stamped with Redis's clock (redisNowLua), not the
// worker's: every worker's heartbeats, and the reconcilers reading them
// (Heartbeats), then share one clock, so no worker's clock being off can
// make a live worker look lost or a dead one look alive.
func (s *Store) Heartbeat(ctx context.Context, ids []string) error {
	runs := make([]AttemptRun, len(ids))
	for i, id := range ids {
		runs[i] = AttemptRun{ID: id}
	}
	return s.heartbeat(ctx, runs, false)
}

// HeartbeatRuns is Heartbeat for the runs given: an entry is touched only
// while it is that run's, so a run that has been superseded (its job runs
// again elsewhere) cannot keep the newer run's entry looking alive.
func (s *Store) HeartbeatRuns(ctx context.Context, runs []AttemptRun) error {
	return s.heartbeat(ctx, runs, true)
}

func (s *Store) heartbeat(ctx context.Context, runs []AttemptRun, check bool) error {
	if len(runs) == 0 {
		return nil
	}
	args := make([]any, 0, 1+2*len(runs))
	args = append(args, check)
	for _, r := range runs {
		args = append(args, r.ID, r.Run)
	}
	if err := heartbeatScript.Run(ctx, s.rdb, beatKeys(), args...).Err(); err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	return nil
}

func beatKeys() []string { return []string{KeyHeartbeats, KeyHeartbeatRuns} }

// redisNowLua defines redis_now_ms(): Redis's clock, in Unix ms.
const redisNowLua = `
local function redis_now_ms()
  local t = redis.call("TIME")
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`

// beatMatchLua defines match(id, run, legacy): whether id's entry is run's;
// an entry with no run (written before entries named one) matches when
// legacy is "1".
const beatMatchLua = `
local function match(id, run, legacy)
  local r = redis.call("HGET", KEYS[2], id)
  if r then return r == run end
  return legacy == "1"
end
`

var heartbeatScript = scripts.New(redisNowLua + `
-- KEYS[1] heartbeats, KEYS[2] their runs; ARGV[1] "1" to check runs,
-- ARGV[2..] pairs of (job id, run); only entries that exist are touched
local now = redis_now_ms()
for i = 2, #ARGV, 2 do
  local r = redis.call("HGET", KEYS[2], ARGV[i])
  if ARGV[1] ~= "1" or not r or r == ARGV[i + 1] then
    redis.call("ZADD", KEYS[1], "XX", now, ARGV[i])
  end
end
return 0
`)

var beatStartScript = scripts.New(redisNowLua + `
-- KEYS[1] heartbeats, KEYS[2] their runs; ARGV[1] job id, ARGV[2] run
redis.call("ZADD", KEYS[1], redis_now_ms(), ARGV[1])
redis.call("HSET", KEYS[2], ARGV[1], ARGV[2])
return 1
`)

var beatDropScript = scripts.New(beatMatchLua + `
-- KEYS[1] heartbeats, KEYS[2] their runs; ARGV[1] job id, ARGV[2] run,
-- ARGV[3] cutoff ms ("+inf": none), ARGV[4] "1" if an entry with no run
-- matches, ARGV[5] "1" to remove, else only check
-- returns 1 if the entry is run's and no newer than the cutoff (and so,
-- with ARGV[5], removed), else 0
if not match(ARGV[1], ARGV[2], ARGV[4]) then return 0 end
local hb = redis.call("ZSCORE", KEYS[1], ARGV[1])
if hb and ARGV[3] ~= "+inf" and tonumber(hb) > tonumber(ARGV[3]) then return 0 end
if ARGV[5] == "1" then
  redis.call("ZREM", KEYS[1], ARGV[1])
  redis.call("HDEL", KEYS[2], ARGV[1])
end
if not hb then return 0 end
return 1
`)

// beatStart is the first heartbeat of run of job id (StartAttempt).
func beatStart(id, run string) scriptCall {
	return scriptCall{beatStartScript, beatKeys(), []any{id, run}}
}

// beatEnd removes run's heartbeat entry of job id, if it is still run's.
func beatEnd(id, run string) scriptCall {
	return scriptCall{beatDropScript, beatKeys(), []any{id, run, "+inf", "0", "1"}}
}

// beatDrop removes (or, unless remove, only checks) the entry of stale
// job j if it is still the run's and no newer than cutoff.
func beatDrop(j StaleJob, cutoff time.Time, remove bool) scriptCall {
	rm := "0"
	if remove {
		rm = "1"
	}
	return scriptCall{beatDropScript, beatKeys(), []any{j.ID, j.Run, cutoff.UnixMilli(), "1", rm}}
}

// EndHeartbeat removes job id's heartbeat entry once its attempt's end has
// been recorded; EndRunHeartbeat is the same for a named run.
func (s *Store) EndHeartbeat(ctx context.Context, id string) error {
	return s.EndRunHeartbeat(ctx, id, "")
}

// EndRunHeartbeat removes the heartbeat entry of run of job id once the
// attempt's end has been recorded, unless the entry is no longer run's:
// then it is another run's (a retry that started already, or the current
// run of a job whose stale run this was), which still needs it to be
// found if its worker is lost. One script on the heartbeat keys only.
func (s *Store) EndRunHeartbeat(ctx context.Context, id, run string) error {
	if err := s.runScript(ctx, beatEnd(id, run)).Err(); err != nil {
		return fmt.Errorf("end heartbeat of job %s: %w", id, err)
	}
	return nil
}

var readBeatsScript = scripts.New(redisNowLua + `
-- KEYS[1] heartbeats, KEYS[2] their runs; ARGV[1] highest score ("+inf":
-- any), ARGV[2] at most this many (0: all)
-- returns {now ms, then (job id, score, run) per entry, oldest first}
local z
if ARGV[2] == "0" then
  z = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1], "WITHSCORES")
else
  z = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1], "WITHSCORES", "LIMIT", 0, ARGV[2])
end
local out = {tostring(redis_now_ms())}
for i = 1, #z, 2 do
  table.insert(out, z[i])
  table.insert(out, z[i + 1])
  table.insert(out, redis.call("HGET", KEYS[2], z[i]) or "")
end
return out
`)

// readBeats reads heartbeat entries scored up to max (at most limit of
// them; 0: all), with the clock of the node that holds them, in one
// script: on a cluster TIME alone would go to any node.
func (s *Store) readBeats(ctx context.Context, max string, limit int) ([]HeartbeatEntry, time.Time, error) {
	res, err := readBeatsScript.Run(ctx, s.rdb, beatKeys(), max, limit).StringSlice()
	if err != nil {
		return nil, time.Time{}, err
	}
	if len(res) == 0 || (len(res)-1)%3 != 0 {
		return nil, time.Time{}, fmt.Errorf("unexpected reply of %d values", len(res))
	}
	now, _ := strconv.ParseInt(res[0], 10, 64)
	out := make([]HeartbeatEntry, 0, (len(res)-1)/3)
	for i := 1; i < len(res); i += 3 {
		score, _ := strconv.ParseFloat(res[i+1], 64)
		out = append(out, HeartbeatEntry{ID: res[i], At: time.UnixMilli(int64(score)).UTC(), Run: res[i+2]})
	}
	return out, time.UnixMilli(now).UTC(), nil
}

// Stale returns up to limit jobs whose last heartbeat is older than cutoff,
// oldest first, with what their records say. Two round trips.
func (s *Store) Stale(ctx context.Context, cutoff time.Time, limit int) ([]StaleJob, error) {
	entries, _, err := s.readBeats(ctx, strconv.FormatInt(cutoff.UnixMilli(), 10), max(limit, 1))
	if err != nil {
		return nil, fmt.Errorf("stale jobs: %w", err)
	}
	return s.StaleJobs(ctx, entries)
}

// HeartbeatEntry is one running attempt's entry: its job, and the last
// heartbeat its worker wrote, by that worker's clock.
type HeartbeatEntry struct {
	ID string
	At time.Time
	// Run is the run the entry belongs to ("": not known).
	Run string
}

// Heartbeats returns every heartbeat entry, oldest first: one round trip,
// as long as the fleet's running jobs are many. A reconciler that must not
// trust other machines' clocks compares each entry with its own earlier
// reading of it instead of with a cutoff (package worker).
//
// It also returns Redis's clock at the read, the clock the heartbeats were
// stamped with (Heartbeat): that of the node holding them.
func (s *Store) Heartbeats(ctx context.Context) ([]HeartbeatEntry, time.Time, error) {
	entries, now, err := s.readBeats(ctx, "+inf", 0)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("heartbeats: %w", err)
	}
	return entries, now, nil
}

// StaleJobs is Stale for entries the caller picked (Heartbeats): what
// their records say, each with the heartbeat as read. One round trip,
// pipelined over the records' slots.
func (s *Store) StaleJobs(ctx context.Context, entries []HeartbeatEntry) ([]StaleJob, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(entries))
	for i, e := range entries {
		cmds[i] = pipe.HMGet(ctx, jobKey(e.ID), fState, fQueue, fAttempts, fMaxRetry, fOwner, fRun)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("stale jobs: %w", err)
	}
	out := make([]StaleJob, len(entries))
	for i, e := range entries {
		v := cmds[i].Val()
		str := func(k int) string {
			if k < len(v) {
				if s, ok := v[k].(string); ok {
					return s
				}
			}
			return ""
		}
		j := StaleJob{ID: e.ID, State: State(str(0)), Queue: str(1), Owner: str(4),
			Heartbeat: e.At, Run: e.Run, RecordRun: str(5)}
		if j.State == "" {
			j.State = StateGone
		}
		j.Attempt, _ = strconv.Atoi(str(2))
		j.MaxRetry, _ = strconv.Atoi(str(3))
		out[i] = j
	}
	return out, nil
}

// StillStale reports whether stale job j's heartbeat entry is still its
// run's and no newer than cutoff: the first step of a reconcile, which the
// reconciler takes before it acts on the job's task. One script on the
// heartbeat keys only.
func (s *Store) StillStale(ctx context.Context, j StaleJob, cutoff time.Time) (bool, error) {
	n, err := s.runScript(ctx, beatDrop(j, cutoff, false)).Int()
	if err != nil {
		return false, fmt.Errorf("reconcile job %s: %w", j.ID, err)
	}
	return n == 1, nil
}

var reconcileScript = scripts.New(emitLua + `
-- KEYS[1] job, KEYS[2] its events, KEYS[3] its log, KEYS[4] its log's
-- counters, KEYS[5] its checkpoint
-- ARGV[1] attempt seen, ARGV[2] run seen ("": any), ARGV[3] new state,
-- ARGV[4] error, ARGV[5] now ms, ARGV[6] retention ms
-- returns {state afterwards ("gone" for none), "1" if it moved}
local st = redis.call("HMGET", KEYS[1], "state", "attempts", "run")
if not st[1] then return {"gone", "0"} end
if st[1] ~= "running" or st[2] ~= ARGV[1] then return {st[1], "0"} end
if ARGV[2] ~= "" and st[3] ~= ARGV[2] then return {st[1], "0"} end
local final = ARGV[3] == "failed"
redis.call("HSET", KEYS[1], "state", ARGV[3], "error", ARGV[4])
if final then
  redis.call("HSET", KEYS[1], "finished", ARGV[5])
  redis.call("HDEL", KEYS[1], "cancel", "held")
  redis.call("PEXPIRE", KEYS[1], ARGV[6])
  redis.call("PEXPIRE", KEYS[3], ARGV[6])
  redis.call("PEXPIRE", KEYS[4], ARGV[6])
  -- A job that has ended has no next attempt to start from.
  redis.call("DEL", KEYS[5])
end
redis.call("HINCRBY", KEYS[1], "version", 1)
local ev = {state = ARGV[3]}
if ARGV[4] ~= "" then ev.error = ARGV[4] end
if final then emit("done", cjson.encode(ev)) else emit("state", cjson.encode(ev)) end
return {ARGV[3], "1"}
`)

// Reconcile moves stale job j, whose worker is lost, to state to
// (StateFailed, StateRetrying or StateQueued) with errMsg as its error, if
// its heartbeat entry is still its run's and no newer than cutoff and its
// record still runs attempt j.Attempt; with to "", or for a record that is
// not running it, the entry is only dropped. A job moved to StateRetrying
// keeps its entry, still stale, so that the next pass looks at its task
// again (RequeueTask). It returns the state the record is in afterwards
// (StateGone: no record); "" when the entry was no longer stale (or no
// longer j.Run's) and nothing was done.
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
	if to == "" {
		// Only the entry of a record not running this run is dropped.
		if _, err := s.runScript(ctx, beatDrop(j, cutoff, true)).Int(); err != nil {
			return "", nil, fmt.Errorf("reconcile job %s: %w", j.ID, err)
		}
		return j.State, nil, nil
	}
	// 1. The entry is still the lost run's, and still stale.
	if ok, err := s.StillStale(ctx, j, cutoff); err != nil || !ok {
		return "", nil, err
	}
	s.hook("checked", j.ID)
	// 2. The record, if it still runs the attempt seen.
	keys := []string{jobKey(j.ID), eventsKey(j.ID), logKey(j.ID), logMetaKey(j.ID), checkpointKey(j.ID)}
	res, err := s.runScript(ctx, scriptCall{reconcileScript, keys, []any{j.Attempt, j.Run, string(to), errMsg,
		ms(s.now()), retention.Milliseconds()}}).StringSlice()
	if err != nil {
		return "", nil, fmt.Errorf("reconcile job %s: %w", j.ID, err)
	}
	if len(res) != 2 {
		return "", nil, fmt.Errorf("reconcile job %s: unexpected reply %q", j.ID, res)
	}
	st, moved := State(res[0]), res[1] == "1"
	s.hook("reconciled", j.ID)
	// 3. The entry goes, unless the job was left retrying: the next pass
	// looks again, for a task whose lease has expired since (see
	// RequeueTask). A record that did not move is not running this run
	// (or is gone): its entry is a leftover.
	if !moved || to != StateRetrying {
		if err := s.runScript(ctx, beatDrop(j, cutoff, true)).Err(); err != nil && !errors.Is(err, redis.Nil) {
			return st, nil, fmt.Errorf("reconcile job %s: %w", j.ID, err)
		}
	}
	// A job that ends here frees its running-job slot now, as the
	// worker's own end would have, rather than when the slot's lease runs
	// out (an hour or more away): the owner's held jobs may start. One
	// that will run again keeps it, as a re-run is let in on its own slot.
	var next []Waiting
	if moved && to == StateFailed && j.Owner != "" {
		if next, err = s.release(ctx, j.Owner, j.ID, "", max(maxRunning, 0)); err != nil {
			return st, nil, fmt.Errorf("reconcile job %s: %w", j.ID, err)
		}
	}
	return st, next, nil
}

var restoreLeaseScript = scripts.New(`
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

var requeueScript = scripts.New(`
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
