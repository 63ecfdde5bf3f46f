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

// Running-job cap. However many jobs a user queues, only so many of them
// hold a worker slot at once, fleet-wide, so one user cannot take every
// slot from everybody else. It is enforced in the script that starts an
// attempt:
//
//	worker dequeues a task ──▶ start script
//	    ├─ owner under the cap (or this job already holds a slot: a re-run)
//	    │      ──▶ take a slot (cc:owner-running:<owner>, scored by lease end),
//	    │          record → running
//	    └─ owner at the cap ──▶ record stays queued/retrying with "held" =
//	           reason; "<queue> <id>" joins cc:owner-held:<owner>; the worker
//	           hands the task back to Asynq without spending a retry
//	attempt ends ──▶ the script that records its end (SucceedReleasing,
//	    FailReleasing, CancelReleasing; Release when none could run) frees
//	    the slot and returns the owner's oldest held jobs, as many as slots
//	    are now free, for the worker to move to the front of their queues
//
// So a job costs the worker one script at its start and one at its end, as
// before the cap; only a held job costs more (a check, and its hand-back).
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
}

var startScript = redis.NewScript(emitLua + redisNowLua + `
-- KEYS[1] job, KEYS[2] its events, KEYS[3] owner's slots, KEYS[4] owner's held jobs,
-- KEYS[5] heartbeats (reconcile.go), KEYS[6] its checkpoint
-- ARGV[1] now ms, ARGV[2] attempt, ARGV[3] cap (<= 0: none), ARGV[4] lease ms,
-- ARGV[5] job id, ARGV[6] held member "<queue> <id>", ARGV[7] "1" if it may be held,
-- ARGV[8] the run's name ("" for none)
-- returns {state, max_retry, held ms, checkpoint}; held ms is "" unless
-- the job was held; checkpoint is "" unless the job runs now and has one
local st = redis.call("HMGET", KEYS[1], "state", "cancel", "max_retry", "held")
local function forget()
  redis.call("ZREM", KEYS[3], ARGV[5])
  redis.call("ZREM", KEYS[4], ARGV[6])
end
if not st[1] then forget() return {"gone", "0", "", ""} end
local mr = st[3] or "0"
-- A pending job's submission may yet fail: it must not run until confirmed.
if st[1] == "pending" then return {"pending", mr, "", ""} end
if st[1] == "succeeded" or st[1] == "failed" or st[1] == "canceled" then forget() return {st[1], mr, "", ""} end
if st[2] == "1" then
  forget()
  redis.call("HSET", KEYS[1], "state", "canceled", "finished", ARGV[1])
  redis.call("HDEL", KEYS[1], "held")
  -- A job that has ended has no next attempt to start from.
  redis.call("DEL", KEYS[6])
  redis.call("HINCRBY", KEYS[1], "version", 1)
  emit("done", cjson.encode({state = "canceled"}))
  return {"canceled", mr, "", ""}
end
local now = tonumber(ARGV[1])
local cap = tonumber(ARGV[3])
if cap > 0 then
  redis.call("ZREMRANGEBYSCORE", KEYS[3], "-inf", now)
  if not redis.call("ZSCORE", KEYS[3], ARGV[5]) then
    local n = redis.call("ZCARD", KEYS[3])
    if n >= cap then
      -- A slot whose job has ended is free, whoever ended it: a job
      -- cancelled while it waited to run again (its slot kept for that
      -- re-run) is ended by a process that may not touch the slots.
      for _, m in ipairs(redis.call("ZRANGE", KEYS[3], 0, -1)) do
        local s = redis.call("HGET", ` + jobKeyLua + ` .. m .. "}", "state")
        if not s or s == "succeeded" or s == "failed" or s == "canceled" then
          redis.call("ZREM", KEYS[3], m)
          n = n - 1
        end
      end
    end
    if n >= cap and ARGV[7] == "1" then
      redis.call("ZADD", KEYS[4], "NX", now, ARGV[6])
      redis.call("PEXPIRE", KEYS[4], ` + strconv.FormatInt(indexHorizon.Milliseconds(), 10) + `)
      local since = tonumber(redis.call("ZSCORE", KEYS[4], ARGV[6]))
      local reason = "waiting: " .. n .. " of your jobs are running, and at most " .. cap .. " run at once"
      if st[4] ~= reason then
        -- A record left running by a worker that died now waits again.
        local state = st[1]
        if state == "running" then state = "queued" end
        redis.call("HSET", KEYS[1], "state", state, "held", reason)
        redis.call("HINCRBY", KEYS[1], "version", 1)
        emit("state", cjson.encode({state = state, hold_reason = reason}))
        st[1] = state
      end
      return {st[1], mr, tostring(now - since), ""}
    end
  end
  local lease = now + tonumber(ARGV[4])
  redis.call("ZADD", KEYS[3], lease, ARGV[5])
  if redis.call("PTTL", KEYS[3]) < tonumber(ARGV[4]) then redis.call("PEXPIRE", KEYS[3], ARGV[4]) end
end
redis.call("ZREM", KEYS[4], ARGV[6])
redis.call("HDEL", KEYS[1], "held")
redis.call("HSET", KEYS[1], "state", "running", "attempts", ARGV[2], "pct", 0, "msg", "", "progress_at", ARGV[1], "run", ARGV[8])
redis.call("HSETNX", KEYS[1], "started", ARGV[1])
-- The first heartbeat, on Redis's clock as every heartbeat (reconcile.go).
redis.call("ZADD", KEYS[5], redis_now_ms(), ARGV[5])
redis.call("HINCRBY", KEYS[1], "version", 1)
emit("state", cjson.encode({state = "running", attempts = tonumber(ARGV[2])}))
return {"running", mr, "", redis.call("GET", KEYS[6]) or ""}
`)

// ErrGone is returned to a worker whose job record no longer exists (it
// expired or was deleted): there is nobody left to run it for.
var ErrGone = errors.New("job record gone")

// StartAttempt moves a job to running for attempt a, taking one of its
// owner's slots, unless the job must not run now: see Started. A job whose
// record is gone is ErrGone. It is one round trip.
func (s *Store) StartAttempt(ctx context.Context, a Attempt) (Started, error) {
	capacity := a.MaxRunning
	if a.Owner == "" {
		capacity = 0 // nobody to count against
	}
	mayHold := "0"
	if a.MayHold {
		mayHold = "1"
	}
	keys := []string{jobKey(a.ID), eventsKey(a.ID), ownerRunningKey(a.Owner), ownerHeldKey(a.Owner), KeyHeartbeats, checkpointKey(a.ID)}
	res, err := startScript.Run(ctx, s.rdb, keys, ms(s.now()), a.Number, capacity,
		max(a.Lease, time.Millisecond).Milliseconds(), a.ID, heldMember(a.Queue, a.ID), mayHold, a.Run).StringSlice()
	if err != nil {
		return Started{}, fmt.Errorf("start job %s: %w", a.ID, err)
	}
	if len(res) != 4 {
		return Started{}, fmt.Errorf("start job %s: unexpected reply %q", a.ID, res)
	}
	if res[0] == "gone" {
		return Started{}, fmt.Errorf("start job %s: %w", a.ID, ErrGone)
	}
	out := Started{State: State(res[0])}
	if res[3] != "" {
		out.Checkpoint = []byte(res[3])
	}
	out.MaxRetry, _ = strconv.Atoi(res[1])
	if res[2] != "" {
		held, _ := strconv.ParseInt(res[2], 10, 64)
		out.Held, out.HeldFor = true, time.Duration(held)*time.Millisecond
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

// releaseLua defines release(slots, held, id, cap, now ms) for the scripts
// that end an attempt: it frees the job's slot and returns the owner's held
// members that may start now (as many as slots are free, oldest first),
// taking them off the held set so that two releases do not hand the same
// job on.
var releaseLua = `
local function release(slots, held, id, cap, now)
  redis.call("ZREM", slots, id)
  local out = {}
  if cap <= 0 then return out end
  redis.call("ZREMRANGEBYSCORE", slots, "-inf", now)
  local free = cap - redis.call("ZCARD", slots)
  if free <= 0 then return out end
  for _, m in ipairs(redis.call("ZRANGE", held, 0, free + ` + strconv.Itoa(releaseScan-1) + `)) do
    if #out >= free then break end
    redis.call("ZREM", held, m)
    local jid = string.match(m, " (.+)$")
    local st = redis.call("HMGET", ` + jobKeyLua + ` .. jid .. "}", "state", "cancel")
    if (st[1] == "queued" or st[1] == "retrying") and st[2] ~= "1" then
      table.insert(out, m)
    end
  end
  return out
end
`

var releaseScript = redis.NewScript(releaseLua + `
-- KEYS[1] owner's slots, KEYS[2] owner's held jobs; ARGV[1] job id, ARGV[2] cap, ARGV[3] now ms
return release(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]), ARGV[3])
`)

// Slot names the running-job slot an attempt took in StartAttempt, for the
// call that ends the attempt (SucceedReleasing, FailReleasing,
// CancelReleasing) to release in the same script.
type Slot struct {
	Owner string
	// MaxRunning is the cap StartAttempt was given.
	MaxRunning int
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
	res, err := releaseScript.Run(ctx, s.rdb, []string{ownerRunningKey(owner), ownerHeldKey(owner)},
		id, maxRunning, ms(s.now())).StringSlice()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("release slot of job %s: %w", id, err)
	}
	return parseWaiting(res), nil
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
