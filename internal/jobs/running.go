package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/scripts"
	"github.com/claimcheck/claimcheck/internal/webhook"
)

// Running-job cap. However many jobs a user queues, only so many of them
// hold a worker slot at once, fleet-wide, so one user cannot take every
// slot from everybody else. It is enforced in the owner's slot, in the
// first step of an attempt's start (see "Running" in the package doc for
// the steps and why their order keeps the cap):
//
//	worker dequeues a task ──▶ owner's slot: acquire
//	    ├─ owner under the cap (or this job already holds a slot: a re-run)
//	    │      ──▶ take a slot (cc:owner-running:{owner}, scored by lease
//	    │          end); job's slot: record → running
//	    └─ owner at the cap ──▶ "<queue> <id>" joins cc:owner-held:{owner};
//	           job's slot: the record stays queued/retrying with "held" =
//	           reason; the worker hands the task back to Asynq without
//	           spending a retry
//	attempt ends ──▶ job's slot: the record (SucceedReleasing,
//	    FailReleasing, CancelReleasing; Release when none could run); then
//	    owner's slot: the slot is freed and the owner's oldest held jobs
//	    that may start, as many as slots are now free, are returned for
//	    the worker to move to the front of their queues
//
// The slot set is authoritative and self-healing: a slot is leased until
// the attempt's deadline plus leaseGrace, so a worker killed without
// releasing it (SIGKILL, a lost machine) frees it when the lease ends. A held
// job whose hand-off is missed (its worker died, or the hand-off raced with
// the hold) still checks again on its own after the worker's hold delay.

// Attempt describes an attempt a worker is about to start.
type Attempt struct {
	ID    string
	Owner string
	// Queue is the Asynq queue the task came from.
	Queue string
	// Number counts from 1.
	Number int
	// MaxRunning caps the owner's jobs that hold a slot; zero or less
	// means no cap (and no slot is taken).
	MaxRunning int
	// Lease is how long the slot is held if it is never released: the
	// attempt's time limit and some grace.
	Lease time.Duration
	// MayHold says the job may be held back. A task that Asynq would not
	// re-queue (its delivery retries are used up) must run over the cap
	// rather than be lost.
	MayHold bool
	// Run, when set, names this run of the attempt: a job handed back at
	// shutdown runs again as the same attempt number, and only the newest
	// run may save checkpoints (SaveRunCheckpoint).
	Run string
}

// Started is the outcome of StartAttempt.
type Started struct {
	// State is StateRunning when the attempt may run. Otherwise the job
	// must not run now: a final state (ended, or canceled just now),
	// StatePending (its submission is not confirmed yet: ask again
	// shortly; an unconfirmed record expires and is then ErrGone), or, when
	// Held, the state it waits in (queued or retrying).
	State State
	// MaxRetry is the job's own retry budget, from its record.
	MaxRetry int
	// Held says the owner is at the cap: hand the task back.
	Held bool
	// HeldFor is how long the job has been held, this time included.
	HeldFor time.Duration
	// Checkpoint is the job's last checkpoint (SaveCheckpoint) when it
	// runs now; nil when it has none.
	Checkpoint []byte
	// Webhook is the job's webhook subscription (nil: none), read in the
	// same script, so the worker's webhook hooks cost no extra round trip.
	Webhook *webhook.Spec
	// Next, when the job does not run (it ended, was cancelled, or is not
	// confirmed yet), are the owner's held jobs that may take the slot it
	// gave back, for the caller to move to the front of their queues.
	Next []Waiting
}

// fRun is the record's field naming the run of its current attempt
// (Attempt.Run).
const fRun = "run"

// acquireScript is the owner's side of a start: it takes a slot, or holds
// the job back. It touches only the owner's keys (one slot); what it needs
// to know of other jobs (whether a slot's job has ended) the caller reads
// in Go and passes in.
var acquireScript = scripts.New(`
-- KEYS[1] owner's slots, KEYS[2] owner's held jobs
-- ARGV[1] now ms, ARGV[2] cap, ARGV[3] lease ms, ARGV[4] job id,
-- ARGV[5] held member "<queue> <id>", ARGV[6] "1" if it may be held,
-- ARGV[7..] slot members whose job the caller found ended (dropped first)
-- returns {"slot"} when the job holds a slot now, else {"held", held
-- since ms, jobs holding slots, the slot members...}
local now = tonumber(ARGV[1])
for i = 7, #ARGV do redis.call("ZREM", KEYS[1], ARGV[i]) end
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", now)
if not redis.call("ZSCORE", KEYS[1], ARGV[4]) then
  local n = redis.call("ZCARD", KEYS[1])
  if n >= tonumber(ARGV[2]) and ARGV[6] == "1" then
    redis.call("ZADD", KEYS[2], "NX", now, ARGV[5])
    redis.call("PEXPIRE", KEYS[2], ` + strconv.FormatInt(indexHorizon.Milliseconds(), 10) + `)
    local out = {"held", redis.call("ZSCORE", KEYS[2], ARGV[5]), tostring(n)}
    for _, m in ipairs(redis.call("ZRANGE", KEYS[1], 0, -1)) do table.insert(out, m) end
    return out
  end
end
redis.call("ZADD", KEYS[1], now + tonumber(ARGV[3]), ARGV[4])
if redis.call("PTTL", KEYS[1]) < tonumber(ARGV[3]) then redis.call("PEXPIRE", KEYS[1], ARGV[3]) end
-- Taken off the held set as it takes a slot: no release hands it on now.
redis.call("ZREM", KEYS[2], ARGV[5])
return {"slot"}
`)

// enterScript is the job's side of a start: it moves the record to
// running, or, for a job held back, notes why it waits. It touches only
// the job's keys (one slot), and checks everything that may have changed
// since the owner's side ran: a cancel, an end, a record gone.
var enterScript = scripts.New(emitLua + `
-- KEYS[1] job, KEYS[2] its events, KEYS[3] its checkpoint
-- ARGV[1] now ms, ARGV[2] attempt, ARGV[3] the run's name ("" for none),
-- ARGV[4] hold reason ("": the job runs now)
-- returns {state, max_retry, checkpoint, webhook}; checkpoint is "" unless
-- the job runs now and has one; webhook is the record's subscription ("" for none)
local st = redis.call("HMGET", KEYS[1], "state", "cancel", "max_retry", "held", "wh")
if not st[1] then return {"gone", "0", "", ""} end
local wh = st[5] or ""
local mr = st[3] or "0"
-- A pending job's submission may yet fail: it must not run until confirmed.
if st[1] == "pending" then return {"pending", mr, "", wh} end
if st[1] == "succeeded" or st[1] == "failed" or st[1] == "canceled" then return {st[1], mr, "", wh} end
if st[2] == "1" then
  redis.call("HSET", KEYS[1], "state", "canceled", "finished", ARGV[1])
  redis.call("HDEL", KEYS[1], "held")
  -- A job that has ended has no next attempt to start from.
  redis.call("DEL", KEYS[3])
  redis.call("HINCRBY", KEYS[1], "version", 1)
  emit("done", cjson.encode({state = "canceled"}))
  return {"canceled", mr, "", wh}
end
if ARGV[4] ~= "" then
  local state = st[1]
  if st[4] ~= ARGV[4] then
    -- A record left running by a worker that died now waits again.
    if state == "running" then state = "queued" end
    redis.call("HSET", KEYS[1], "state", state, "held", ARGV[4])
    redis.call("HINCRBY", KEYS[1], "version", 1)
    emit("state", cjson.encode({state = state, hold_reason = ARGV[4]}))
  end
  return {state, mr, "", wh}
end
redis.call("HDEL", KEYS[1], "held")
redis.call("HSET", KEYS[1], "state", "running", "attempts", ARGV[2], "pct", 0, "msg", "", "progress_at", ARGV[1], "run", ARGV[3])
redis.call("HSETNX", KEYS[1], "started", ARGV[1])
redis.call("HINCRBY", KEYS[1], "version", 1)
emit("state", cjson.encode({state = "running", attempts = tonumber(ARGV[2])}))
return {"running", mr, redis.call("GET", KEYS[3]) or "", wh}
`)

// ErrGone is returned to a worker whose job record no longer exists (it
// expired or was deleted): there is nobody left to run it for.
var ErrGone = errors.New("job record gone")

// StartAttempt moves a job to running for attempt a, taking one of its
// owner's slots, unless the job must not run now: see Started. A job whose
// record is gone is ErrGone.
//
// It is a sequence of one-slot steps (see "Running" in the package doc):
// the owner's slot and the attempt's first heartbeat side by side in one
// round trip, then the record in another. Only a job that does not run
// costs more: its slot and heartbeat are given back, and a held job whose
// owner's slots are all taken has those slots' jobs read first.
func (s *Store) StartAttempt(ctx context.Context, a Attempt) (Started, error) {
	capacity := a.MaxRunning
	if a.Owner == "" {
		capacity = 0 // nobody to count against
	}
	now := s.now()
	held := heldMember(a.Queue, a.ID)
	acquire := func(drop []string) scriptCall {
		mayHold := "0"
		if a.MayHold {
			mayHold = "1"
		}
		args := []any{ms(now), capacity, max(a.Lease, time.Millisecond).Milliseconds(), a.ID, held, mayHold}
		for _, m := range drop {
			args = append(args, m)
		}
		return scriptCall{acquireScript, []string{ownerRunningKey(a.Owner), ownerHeldKey(a.Owner)}, args}
	}
	// Step 1: the slot, and the first heartbeat, which must exist before
	// the record says running (a worker that dies right after is then
	// found by a reconciler). They are in different slots, so each is its
	// own script; pipelined, they cost one round trip.
	calls := []scriptCall{beatStart(a.ID, a.Run)}
	if capacity > 0 {
		calls = append(calls, acquire(nil))
	}
	cmds := s.runScripts(ctx, calls...)
	if err := firstErr(cmds); err != nil {
		return Started{}, fmt.Errorf("start job %s: %w", a.ID, err)
	}
	var reason string
	var heldFor time.Duration
	if capacity > 0 {
		acq, _ := cmds[1].StringSlice()
		if len(acq) >= 3 && acq[0] == "held" {
			// Every slot is taken. A slot whose job has ended is free,
			// whoever ended it (a job cancelled while it waited to run
			// again, its slot kept for that re-run, is ended by a process
			// that may not touch the slots): read those jobs, and ask
			// again without the ended ones.
			ended, err := s.endedJobs(ctx, acq[3:])
			if err != nil {
				return Started{}, fmt.Errorf("start job %s: %w", a.ID, err)
			}
			if len(ended) > 0 {
				if acq, err = s.runScript(ctx, acquire(ended)).StringSlice(); err != nil {
					return Started{}, fmt.Errorf("start job %s: %w", a.ID, err)
				}
			}
		}
		if len(acq) >= 3 && acq[0] == "held" {
			since, _ := strconv.ParseInt(acq[1], 10, 64)
			heldFor = time.Duration(now.UnixMilli()-since) * time.Millisecond
			reason = "waiting: " + acq[2] + " of your jobs are running, and at most " + strconv.Itoa(capacity) + " run at once"
		}
	}
	s.hook("acquired", a.ID)
	// Step 2: the record, which has the last word: a cancel, an end or an
	// unconfirmed submission seen here wins over the slot just taken.
	enter := scriptCall{enterScript, []string{jobKey(a.ID), eventsKey(a.ID), checkpointKey(a.ID)}, []any{ms(now), a.Number, a.Run, reason}}
	calls = []scriptCall{enter}
	if reason != "" {
		calls = append(calls, beatEnd(a.ID, a.Run)) // a held job does not run
	}
	cmds = s.runScripts(ctx, calls...)
	res, err := cmds[0].StringSlice()
	if err != nil {
		return Started{}, fmt.Errorf("start job %s: %w", a.ID, err)
	}
	if len(res) != 4 {
		return Started{}, fmt.Errorf("start job %s: unexpected reply %q", a.ID, res)
	}
	s.hook("entered", a.ID)
	out := Started{State: State(res[0])}
	out.MaxRetry, _ = strconv.Atoi(res[1])
	if res[3] != "" {
		// A subscription that does not decode is no subscription: the job
		// runs either way (the api wrote it, so this is corruption).
		var spec webhook.Spec
		if json.Unmarshal([]byte(res[3]), &spec) == nil {
			out.Webhook = &spec
		}
	}
	if out.State == StateRunning {
		if res[2] != "" {
			out.Checkpoint = []byte(res[2])
		}
		return out, nil
	}
	if reason != "" && (out.State == StateQueued || out.State == StateRetrying) {
		out.Held, out.HeldFor = true, heldFor
		return out, nil
	}
	// Step 3: the job does not run (ended, cancelled, gone, or not
	// confirmed yet): its slot and its heartbeat entry are given back, and
	// a held job of the owner may take the slot. A worker that dies before
	// this leaves a slot that frees at its lease end (or at the next
	// start that finds the owner's slots full and this job ended) and an
	// entry a reconciler drops, as the record is not running this run.
	var also []scriptCall
	if reason == "" {
		also = append(also, beatEnd(a.ID, a.Run)) // a held start's went with step 2
	}
	if a.Owner != "" {
		next, err := s.release(ctx, a.Owner, a.ID, held, capacity, also...)
		if err != nil {
			return Started{}, fmt.Errorf("start job %s: %w", a.ID, err)
		}
		out.Next = next
	} else if err := firstErr(s.runScripts(ctx, also...)); err != nil {
		return Started{}, fmt.Errorf("start job %s: %w", a.ID, err)
	}
	if out.State == StateGone {
		return out, fmt.Errorf("start job %s: %w", a.ID, ErrGone)
	}
	return out, nil
}

// endedJobs returns those of ids whose record has ended or is gone, read
// in one pipelined round trip (the records are in as many slots as jobs).
func (s *Store) endedJobs(ctx context.Context, ids []string) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGet(ctx, jobKey(id), fState)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read jobs holding slots: %w", err)
	}
	var out []string
	for i, c := range cmds {
		if st, err := c.Result(); errors.Is(err, redis.Nil) || State(st).Final() {
			out = append(out, ids[i])
		}
	}
	return out, nil
}

// Start moves a job to running for the given attempt (from 1), with no
// running-job cap. It returns the state found instead when the job must not
// run: StateCanceled when a cancel was requested (the record is moved to
// canceled), a final state when the job already ended, or ErrGone.
func (s *Store) Start(ctx context.Context, id string, attempt int) (State, error) {
	st, err := s.StartAttempt(ctx, Attempt{ID: id, Number: attempt})
	return st.State, err
}

func heldMember(queue, id string) string { return queue + " " + id }

// Waiting is a held job that may start now.
type Waiting struct {
	Queue, ID string
}

// releaseScan bounds how many held entries one release looks at beyond the
// free slots, skipping those whose job has ended meanwhile (a held job
// cancelled while waiting leaves its entry behind until then).
const releaseScan = 16

// freeScript is the first half of a release, in the owner's slot: it frees
// the job's slot (and forgets the job as held, when given its member) and
// returns how many slots are free and the oldest held members that might
// take them, for the caller to read those jobs' records.
var freeScript = scripts.New(`
-- KEYS[1] owner's slots, KEYS[2] owner's held jobs; ARGV[1] job id,
-- ARGV[2] cap, ARGV[3] now ms, ARGV[4] its held member ("" for none)
-- returns {} when no slot is free or nothing is held, else {free, members...}
redis.call("ZREM", KEYS[1], ARGV[1])
if ARGV[4] ~= "" then redis.call("ZREM", KEYS[2], ARGV[4]) end
local cap = tonumber(ARGV[2])
if cap <= 0 then return {} end
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", ARGV[3])
local free = cap - redis.call("ZCARD", KEYS[1])
if free <= 0 then return {} end
local held = redis.call("ZRANGE", KEYS[2], 0, free + ` + strconv.Itoa(releaseScan-1) + `)
if #held == 0 then return {} end
table.insert(held, 1, tostring(free))
return held
`)

// handOnScript is the second half, in the owner's slot again: given the
// held members read in between, each marked "1" if its job may start
// (queued or retrying, no cancel requested), it takes off the held set the
// ended ones and as many startable ones as slots are free now, oldest
// first, and returns the latter. Only a member this script removes is
// returned, so two releases never hand the same job on, and the free
// slots are counted again, so a slot taken meanwhile is not given twice.
var handOnScript = scripts.New(`
-- KEYS[1] owner's slots, KEYS[2] owner's held jobs; ARGV[1] cap,
-- ARGV[2] now ms, ARGV[3..] pairs of (member, "1" may start | "0" ended)
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", ARGV[2])
local free = tonumber(ARGV[1]) - redis.call("ZCARD", KEYS[1])
local out = {}
for i = 3, #ARGV, 2 do
  if ARGV[i + 1] == "0" then
    redis.call("ZREM", KEYS[2], ARGV[i])
  elseif #out < free and redis.call("ZREM", KEYS[2], ARGV[i]) == 1 then
    table.insert(out, ARGV[i])
  end
end
return out
`)

// release frees the slot job id of owner took (and its held member, when
// heldMember is not ""), and returns the owner's held jobs that may start
// now: one round trip when no slot is free or nothing is held, else three
// (the held jobs' records are read in Go between the two owner-slot
// scripts, as no script may read another slot's keys).
//
// also are scripts of other slots to run side by side with the first
// round trip (a heartbeat entry's removal); their errors come first.
func (s *Store) release(ctx context.Context, owner, id, heldMember string, maxRunning int, also ...scriptCall) ([]Waiting, error) {
	keys := []string{ownerRunningKey(owner), ownerHeldKey(owner)}
	now := ms(s.now())
	cmds := s.runScripts(ctx, append(also, scriptCall{freeScript, keys, []any{id, maxRunning, now, heldMember}})...)
	if err := firstErr(cmds[:len(also)]); err != nil {
		return nil, err
	}
	cands, err := cmds[len(also)].StringSlice()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("release slot of job %s: %w", id, err)
	}
	if len(cands) < 2 {
		return nil, nil
	}
	s.hook("freed", id)
	members := cands[1:]
	pipe := s.rdb.Pipeline()
	reads := make([]*redis.SliceCmd, len(members))
	for i, m := range members {
		_, jid, _ := strings.Cut(m, " ")
		reads[i] = pipe.HMGet(ctx, jobKey(jid), fState, fCancel)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("release slot of job %s: read held jobs: %w", id, err)
	}
	args := []any{maxRunning, now}
	for i, m := range members {
		v := reads[i].Val()
		st, _ := v[0].(string)
		cancel, _ := v[1].(string)
		may := "0"
		if (State(st) == StateQueued || State(st) == StateRetrying) && cancel != "1" {
			may = "1"
		}
		args = append(args, m, may)
	}
	out, err := s.runScript(ctx, scriptCall{handOnScript, keys, args}).StringSlice()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("release slot of job %s: %w", id, err)
	}
	return parseWaiting(out), nil
}

// Slot names the running-job slot an attempt took in StartAttempt, for the
// call that ends the attempt (SucceedReleasing, FailReleasing,
// CancelReleasing) to release once the end is recorded.
type Slot struct {
	// Owner is the job's owner; "" when the attempt took no slot (no cap).
	Owner string
	// MaxRunning is the cap StartAttempt was given.
	MaxRunning int
	// Run, when set, is the attempt's run (Attempt.Run): once the end is
	// recorded its heartbeat entry is removed too (EndRunHeartbeat), in
	// the same round trip as the slot's release.
	Run string
}

// Release frees the slot job id of owner took in StartAttempt, for an
// attempt that ends without one of the *Releasing calls, and returns the owner's held jobs that may start
// now (as many as slots are free, oldest first), for the caller to move to
// the front of their queues. maxRunning is the cap StartAttempt was given.
// Releasing a slot that is not held is harmless.
func (s *Store) Release(ctx context.Context, owner, id string, maxRunning int) ([]Waiting, error) {
	if owner == "" {
		return nil, nil
	}
	return s.release(ctx, owner, id, "", maxRunning)
}

func parseWaiting(members []string) []Waiting {
	var out []Waiting
	for _, m := range members {
		if q, id, ok := strings.Cut(m, " "); ok {
			out = append(out, Waiting{Queue: q, ID: id})
		}
	}
	return out
}

// Owner reads a job's owner from its record, for a task queued before task
// payloads carried it. A missing record is ErrGone.
func (s *Store) Owner(ctx context.Context, id string) (string, error) {
	owner, err := s.rdb.HGet(ctx, jobKey(id), fOwner).Result()
	if errors.Is(err, redis.Nil) {
		if n, _ := s.rdb.Exists(ctx, jobKey(id)).Result(); n == 0 {
			return "", fmt.Errorf("owner of job %s: %w", id, ErrGone)
		}
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("owner of job %s: %w", id, err)
	}
	return owner, nil
}

// scriptCall is one script to run: see runScripts.
type scriptCall struct {
	script *redis.Script
	keys   []string
	args   []any
}

// runScripts runs calls pipelined, in one round trip however many slots
// their keys are in (each call's own keys share one slot), and returns
// their commands in order, each with its own reply or error. A script the
// server does not have yet is sent in full in a second round trip, once.
func (s *Store) runScripts(ctx context.Context, calls ...scriptCall) []*redis.Cmd {
	cmds := make([]*redis.Cmd, len(calls))
	pipe := s.rdb.Pipeline()
	for i, c := range calls {
		cmds[i] = c.script.EvalSha(ctx, pipe, c.keys, c.args...)
	}
	_, _ = pipe.Exec(ctx) // each command keeps its error
	var again []int
	for i, c := range cmds {
		if err := c.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			again = append(again, i)
		}
	}
	if len(again) > 0 {
		pipe = s.rdb.Pipeline()
		for _, i := range again {
			cmds[i] = calls[i].script.Eval(ctx, pipe, calls[i].keys, calls[i].args...)
		}
		_, _ = pipe.Exec(ctx)
	}
	return cmds
}

// runScript runs one call.
func (s *Store) runScript(ctx context.Context, c scriptCall) *redis.Cmd {
	return c.script.Run(ctx, s.rdb, c.keys, c.args...)
}

// firstErr is the first error of cmds other than a nil reply.
func firstErr(cmds []*redis.Cmd) error {
	for _, c := range cmds {
		if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
	}
	return nil
}

// hook tells a test that step of job id has just completed, so that it can
// interleave another actor there (export_test.go); a no-op otherwise.
func (s *Store) hook(step, id string) {
	if s.steps != nil {
		s.steps(step, id)
	}
}
