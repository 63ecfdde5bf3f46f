package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/scripts"
)

// Submission is a sequence of one-slot scripts (see the package doc,
// "Submission on a cluster"): reserve in the owner's slot (gate,
// idempotency claim, quota pre-check), write the pending record in the
// job's slot, admit in the owner's slot (gate again, quota, listing), and
// flip the record to queued in the job's slot, the commit. The quota's
// look at the owner's jobs' states happens in Go between scripts.

// gateLua defines blocked(i): whether KEYS[i] (i > 0), the owner gate, says
// the owner is blocked.
const gateLua = `
local function blocked(i)
  return i > 0 and redis.call("HGET", KEYS[i], "blocked") == "1"
end
`

// fullLua defines full(set, n): the answer of a script that found the
// owner's active set full, {"FULL", n, members...}, for Go to look at.
const fullLua = `
local function full(set, n)
  local out = redis.call("SMEMBERS", set)
  table.insert(out, 1, n)
  table.insert(out, 1, "FULL")
  return out
end
`

var reserveScript = scripts.New(gateLua + fullLua + `
-- KEYS[1] owner's active set, KEYS[gate] owner gate, KEYS[claim] idempotency claim
-- ARGV[1] max active (0: none), ARGV[2] claim value, ARGV[3] claim ttl ms,
-- ARGV[4] gate index (0: none), ARGV[5] claim index (0: none),
-- ARGV[6] k, ARGV[7..6+k] members known to have ended (dropped),
-- ARGV[7+k..] members known to be tentative (not counted)
-- returns false (reserved), the earlier claim's value, or full()
if blocked(tonumber(ARGV[4])) then return redis.error_reply("BLOCKED owner") end
local ci = tonumber(ARGV[5])
if ci > 0 then
  local prev = redis.call("GET", KEYS[ci])
  if prev then return prev end
end
local k = tonumber(ARGV[6])
for i = 7, 6 + k do redis.call("SREM", KEYS[1], ARGV[i]) end
local max = tonumber(ARGV[1])
if max > 0 then
  local n = redis.call("SCARD", KEYS[1])
  for i = 7 + k, #ARGV do n = n - redis.call("SISMEMBER", KEYS[1], ARGV[i]) end
  if n >= max then return full(KEYS[1], n) end
end
if ci > 0 then redis.call("SET", KEYS[ci], ARGV[2], "PX", ARGV[3]) end
return false
`)

var writeScript = scripts.New(`
-- KEYS[1] job record; ARGV[1] ttl ms, ARGV[2..] record pairs
if redis.call("EXISTS", KEYS[1]) == 1 then return redis.error_reply("EXISTS job record") end
redis.call("HSET", KEYS[1], unpack(ARGV, 2))
redis.call("PEXPIRE", KEYS[1], ARGV[1])
return false
`)

var admitScript = scripts.New(gateLua + fullLua + `
-- KEYS[1] owner's active set, KEYS[2] owner's job index, KEYS[gate] owner
-- gate, KEYS[claim] idempotency claim
-- ARGV[1] max active (0: none), ARGV[2] job id, ARGV[3] ttl ms, ARGV[4]
-- index cutoff id, ARGV[5] gate index (0: none), ARGV[6] claim index (0:
-- none), ARGV[7..] members known to have ended (dropped)
-- returns false (admitted, or admitted before) or full()
if blocked(tonumber(ARGV[5])) then return redis.error_reply("BLOCKED owner") end
for i = 7, #ARGV do redis.call("SREM", KEYS[1], ARGV[i]) end
if redis.call("SISMEMBER", KEYS[1], ARGV[2]) == 0 then
  local max = tonumber(ARGV[1])
  if max > 0 then
    -- Every member counts unless Go showed it ended: one that joined since
    -- Go looked counts until it is looked at.
    local n = redis.call("SCARD", KEYS[1])
    if n >= max then return full(KEYS[1], n) end
  end
  redis.call("SADD", KEYS[1], ARGV[2])
end
redis.call("ZADD", KEYS[2], 0, ARGV[2])
-- Ids older than any record can be are dropped from the index as we go.
redis.call("ZREMRANGEBYLEX", KEYS[2], "-", "(" .. ARGV[4])
redis.call("PEXPIRE", KEYS[2], ARGV[3])
redis.call("PEXPIRE", KEYS[1], ARGV[3])
local ci = tonumber(ARGV[6])
if ci > 0 then redis.call("PEXPIRE", KEYS[ci], ARGV[3]) end
return false
`)

var flipScript = scripts.New(`
-- KEYS[1] job record; ARGV[1] ttl ms
-- returns the state afterwards, "gone", or "void <reason>"
local st = redis.call("HMGET", KEYS[1], "state", "void")
if not st[1] then return "gone" end
if st[2] then return "void " .. st[2] end
if st[1] ~= "pending" then return st[1] end
redis.call("HSET", KEYS[1], "state", "queued")
redis.call("HINCRBY", KEYS[1], "version", 1)
redis.call("PEXPIRE", KEYS[1], ARGV[1])
return "queued"
`)

var voidScript = scripts.New(`
-- KEYS[1] job record; ARGV[1] reason
-- returns {state before, claim key}: a pending record becomes a canceled
-- tombstone marked void, which no flip can make queued
local st = redis.call("HMGET", KEYS[1], "state", "void", "claim")
if not st[1] then return {"gone", ""} end
if st[2] then return {"void", st[3] or ""} end
if st[1] ~= "pending" then return {st[1], ""} end
redis.call("HSET", KEYS[1], "state", "canceled", "void", ARGV[1])
redis.call("HINCRBY", KEYS[1], "version", 1)
return {"pending", st[3] or ""}
`)

var discardScript = scripts.New(`
-- KEYS[1] job record
-- returns the state of a record that stays (it was confirmed), or false
local st = redis.call("HMGET", KEYS[1], "state", "void")
if st[1] and st[1] ~= "pending" and not st[2] then return st[1] end
redis.call("DEL", KEYS[1])
return false
`)

var forgetScript = scripts.New(`
-- KEYS[1] owner's active set, KEYS[2] owner's job index, KEYS[3]
-- idempotency claim (optional); ARGV[1] job id
-- an unconfirmed job leaves its owner's slot: not counted, not listed, its
-- claim (only if it is still this job's) released
redis.call("SREM", KEYS[1], ARGV[1])
redis.call("ZREM", KEYS[2], ARGV[1])
if #KEYS == 3 then
  local c = redis.call("GET", KEYS[3])
  if c and string.sub(c, 1, #ARGV[1] + 1) == ARGV[1] .. " " then redis.call("DEL", KEYS[3]) end
end
return false
`)

var releaseClaimScript = scripts.New(`
-- KEYS[1] idempotency claim; ARGV[1] job id
local c = redis.call("GET", KEYS[1])
if c and string.sub(c, 1, #ARGV[1] + 1) == ARGV[1] .. " " then redis.call("DEL", KEYS[1]) end
return false
`)

// IdempotencyClaim returns the job and body hash owner's Idempotency-Key
// key is claimed for, or "", "" if it is not claimed (or no longer). It
// only reads: a submission that must decide something before Create (the
// api's webhook check) asks it whether Create would replay.
func (s *Store) IdempotencyClaim(ctx context.Context, owner, key string) (jobID, bodyHash string, err error) {
	v, err := s.rdb.Get(ctx, idempotencyKey(owner, key)).Result()
	if errors.Is(err, redis.Nil) {
		return "", "", nil
	}
	if err != nil {
		return "", "", fmt.Errorf("idempotency claim: %w", err)
	}
	jobID, bodyHash, _ = strings.Cut(v, " ")
	return jobID, bodyHash, nil
}

// releaseClaim deletes claimKey if it is job id's claim.
func (s *Store) releaseClaim(ctx context.Context, id, claimKey string) {
	releaseClaimScript.Run(ctx, s.rdb, []string{claimKey}, id)
}

// Void reasons: why a pending record was refused after it was written.
const (
	voidQuota   = "quota"
	voidBlocked = "blocked"
)

// maxQuotaRounds bounds how often one step looks at the owner's jobs
// again because others joined meanwhile; past it the owner is over quota.
const maxQuotaRounds = 4

// Create writes a queued job record (a pending one with nj.PendingTTL),
// claiming the idempotency key and checking the owner gate and the
// active-job quota first. It returns *IdempotentReplay when the key was
// used before, *QuotaError when the owner has nj.MaxActive jobs under way
// and ErrOwnerBlocked when the gate says so; none of them leaves a record.
func (s *Store) Create(ctx context.Context, nj NewJob) (*Job, error) {
	now := s.now()
	ttl := nj.TTL
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	recordTTL := ttl // until Confirm, when the job is confirmed here
	if nj.PendingTTL > 0 {
		recordTTL = nj.PendingTTL
	}
	var claimKey string
	if nj.IdempotencyKey != "" {
		claimKey = idempotencyKey(nj.Owner, nj.IdempotencyKey)
	}
	record := []any{recordTTL.Milliseconds(),
		fID, nj.ID, fType, nj.Type, fOwner, nj.Owner, fQueue, nj.Queue,
		fState, string(StatePending), fCreated, ms(now), fAttempts, 0,
		fMaxRetry, nj.MaxRetry, fTimeout, nj.Timeout.Milliseconds(), fVersion, 1,
	}
	if claimKey != "" {
		record = append(record, fClaim, claimKey)
	}
	if nj.Webhook != nil {
		wh, err := json.Marshal(nj.Webhook)
		if err != nil {
			return nil, fmt.Errorf("create job: webhook: %w", err)
		}
		record = append(record, fWebhook, string(wh))
	}
	// The reservation and the record are independent: one round trip
	// (one per slot's node on a cluster). A refused reservation costs a
	// second one to delete the record; the record is pending meanwhile,
	// seen by nobody.
	var reserve *redis.Cmd
	var write *redis.Cmd
	_, perr := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		reserve = s.reserveCmd(ctx, p, nj, claimKey, recordTTL, nil, nil)
		write = writeScript.EvalSha(ctx, p, []string{jobKey(nj.ID)}, record...)
		return nil
	})
	if perr != nil && (isNoScript(reserve.Err()) || isNoScript(write.Err())) {
		reserve, write = s.rerun(ctx, reserve, func() *redis.Cmd { return s.reserveCmd(ctx, s.rdb, nj, claimKey, recordTTL, nil, nil) }),
			s.rerun(ctx, write, func() *redis.Cmd { return writeScript.Run(ctx, s.rdb, []string{jobKey(nj.ID)}, record...) })
	}
	if err := write.Err(); err != nil && !errors.Is(err, redis.Nil) {
		if reserve.Err() == nil && claimKey != "" {
			s.releaseClaim(ctx, nj.ID, claimKey) // the claim just made, if it was
		}
		if strings.Contains(err.Error(), "EXISTS job record") {
			return nil, fmt.Errorf("create job %s: %w", nj.ID, ErrExists)
		}
		return nil, fmt.Errorf("create job %s: %w", nj.ID, err)
	}
	res, err := reserve.Result()
	for round := 0; err == nil && round < maxQuotaRounds; round++ {
		f, ok := parseFull(res)
		if !ok {
			break
		}
		var look quotaLook
		if look, err = s.lookAt(ctx, f.members, nj.ID); err != nil {
			break
		}
		if look.firm >= nj.MaxActive || round == maxQuotaRounds-1 {
			s.drop(ctx, nj.ID)
			return nil, &QuotaError{Active: max(look.firm, nj.MaxActive), Limit: nj.MaxActive}
		}
		res, err = s.reserveCmd(ctx, s.rdb, nj, claimKey, recordTTL, look.ended, look.tentative).Result()
	}
	switch {
	case errors.Is(err, redis.Nil):
	case err != nil && strings.Contains(err.Error(), "BLOCKED owner"):
		s.drop(ctx, nj.ID)
		return nil, fmt.Errorf("create job %s: %w", nj.ID, ErrOwnerBlocked)
	case err != nil:
		// The record is pending and expires. If the claim was made (the
		// reply was lost), a retry with the key finds the pending record
		// and completes this submission.
		return nil, fmt.Errorf("create job %s: %w", nj.ID, err)
	default:
		s.drop(ctx, nj.ID)
		prev, _ := res.(string)
		prevID, prevHash, _ := strings.Cut(prev, " ")
		return nil, &IdempotentReplay{JobID: prevID, SameBody: prevHash == nj.BodyHash}
	}
	j := &Job{
		ID: nj.ID, Type: nj.Type, Owner: nj.Owner, Queue: nj.Queue, State: StatePending,
		CreatedAt: time.UnixMilli(now.UnixMilli()).UTC(), MaxRetry: nj.MaxRetry, Timeout: nj.Timeout, Version: 1,
		Webhook: nj.Webhook,
	}
	if nj.PendingTTL > 0 {
		return j, nil
	}
	st, err := s.ConfirmJob(ctx, Confirmation{ID: nj.ID, Owner: nj.Owner, IdempotencyKey: nj.IdempotencyKey,
		TTL: ttl, MaxActive: nj.MaxActive, OwnerGate: nj.OwnerGate})
	if _, ok := errors.AsType[*QuotaError](err); err != nil && !ok && !errors.Is(err, ErrOwnerBlocked) {
		// Refused jobs were removed already; any other failure may have
		// confirmed the job (a lost reply): the record decides.
		if kept, derr := s.Discard(context.WithoutCancel(ctx), nj.ID, nj.Owner, nj.IdempotencyKey); derr == nil && kept != "" {
			st, err = kept, nil
		}
	}
	if err != nil {
		return nil, err
	}
	j.State, j.Version = st, 2
	return j, nil
}

// reserveCmd sends the reservation (the owner's slot) on c, dropping the
// members in ended and not counting those in tentative.
func (s *Store) reserveCmd(ctx context.Context, c redis.Scripter, nj NewJob, claimKey string, claimTTL time.Duration, ended, tentative []string) *redis.Cmd {
	keys := []string{ownerActiveKey(nj.Owner)}
	gate, claim := 0, 0
	if nj.OwnerGate != "" {
		keys = append(keys, nj.OwnerGate)
		gate = len(keys)
	}
	if claimKey != "" {
		keys = append(keys, claimKey)
		claim = len(keys)
	}
	args := make([]any, 0, 6+len(ended)+len(tentative))
	args = append(args, nj.MaxActive, nj.ID+" "+nj.BodyHash, claimTTL.Milliseconds(), gate, claim, len(ended))
	for _, id := range ended {
		args = append(args, id)
	}
	for _, id := range tentative {
		args = append(args, id)
	}
	if p, ok := c.(redis.Pipeliner); ok {
		return reserveScript.EvalSha(ctx, p, keys, args...)
	}
	return reserveScript.Run(ctx, c, keys, args...)
}

// isNoScript reports a pipelined EVALSHA that found its script not loaded.
func isNoScript(err error) bool { return err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") }

// rerun runs again, loading its script, a pipelined command that found it
// not loaded (it did not run).
func (s *Store) rerun(ctx context.Context, c *redis.Cmd, again func() *redis.Cmd) *redis.Cmd {
	if isNoScript(c.Err()) {
		return again()
	}
	return c
}

// full is a script's answer that the owner's active set is full.
type full struct {
	n       int
	members []string
}

func parseFull(res any) (full, bool) {
	a, ok := res.([]any)
	if !ok || len(a) < 2 || a[0] != "FULL" {
		return full{}, false
	}
	f := full{}
	f.n, _ = a[1].(int)
	if n, ok := a[1].(int64); ok {
		f.n = int(n)
	}
	for _, m := range a[2:] {
		if id, ok := m.(string); ok {
			f.members = append(f.members, id)
		}
	}
	return f, true
}

// quotaLook is what the owner's active-set members are, read from their
// records (each in its own slot) in one pipelined round trip.
type quotaLook struct {
	firm      int      // queued, running or retrying: they count
	ended     []string // ended, or their record is gone: they count no more
	tentative []string // pending: admitted (or being) but not confirmed
	voided    []voided // refused tombstones, to forget in the owner's slot
	selfGone  bool     // self's own record is gone (or refused)
}

type voided struct{ id, claim string }

// lookAt reads the state of every member but self, and of self.
func (s *Store) lookAt(ctx context.Context, members []string, self string) (quotaLook, error) {
	var look quotaLook
	ids := make([]string, 0, len(members)+1)
	for _, id := range members {
		if id != self {
			ids = append(ids, id)
		}
	}
	ids = append(ids, self)
	cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, id := range ids {
			p.HMGet(ctx, jobKey(id), fState, fVoid, fClaim)
		}
		return nil
	})
	if err != nil {
		return look, fmt.Errorf("look at active jobs: %w", err)
	}
	for i, c := range cmds {
		v := c.(*redis.SliceCmd).Val()
		st, _ := v[0].(string)
		void, _ := v[1].(string)
		claim, _ := v[2].(string)
		switch {
		case i == len(ids)-1:
			look.selfGone = st == "" || void != ""
		case st == "" || State(st).Final() && void == "":
			look.ended = append(look.ended, ids[i])
		case void != "":
			look.voided = append(look.voided, voided{ids[i], claim})
			look.ended = append(look.ended, ids[i])
		case State(st) == StatePending:
			look.tentative = append(look.tentative, ids[i])
		default:
			look.firm++
		}
	}
	return look, nil
}

// Confirmation names the job Confirm makes queued and the owner's limits
// it is admitted under.
type Confirmation struct {
	ID, Owner string
	// IdempotencyKey is the client's key the job was created under, if any.
	IdempotencyKey string
	// TTL is how long the confirmed record lives if the job never ends.
	TTL time.Duration
	// MaxActive, when positive, is the owner's active-job quota.
	MaxActive int
	// OwnerGate is NewJob.OwnerGate: a blocked owner's job is refused.
	OwnerGate string
}

// Confirm is ConfirmJob with no owner gate.
func (s *Store) Confirm(ctx context.Context, id, owner, idempotencyKeyValue string, ttl time.Duration, maxActive int) (State, error) {
	return s.ConfirmJob(ctx, Confirmation{ID: id, Owner: owner, IdempotencyKey: idempotencyKeyValue, TTL: ttl, MaxActive: maxActive})
}

// ConfirmJob makes a pending job (NewJob.PendingTTL) queued: listed,
// counted, living for c.TTL. It returns the state the job is in
// afterwards; a job confirmed before keeps its state. A pending record
// that expired (or was discarded) is ErrGone. An owner who reached
// c.MaxActive meanwhile is *QuotaError, and one blocked meanwhile
// ErrOwnerBlocked, both with the record and its idempotency claim
// removed. An error wrapping ErrNotConfirmed failed before the commit
// (the record's flip to queued): the job is certainly not confirmed.
// Any other error came from the commit itself, which may have been
// applied.
func (s *Store) ConfirmJob(ctx context.Context, c Confirmation) (State, error) {
	claimKey := ""
	if c.IdempotencyKey != "" {
		claimKey = idempotencyKey(c.Owner, c.IdempotencyKey)
	}
	var ended []string
	var forget []voided
	for round := 0; ; round++ {
		res, err := s.admit(ctx, c, claimKey, ended, forget)
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil && strings.Contains(err.Error(), "BLOCKED owner"):
			s.refuse(ctx, c, claimKey)
			return "", fmt.Errorf("confirm job %s: %w", c.ID, ErrOwnerBlocked)
		case err != nil:
			return "", fmt.Errorf("confirm job %s: %w: %w", c.ID, ErrNotConfirmed, err)
		}
		f, isFull := parseFull(res)
		if !isFull {
			break
		}
		look, err := s.lookAt(ctx, f.members, c.ID)
		if err != nil {
			return "", fmt.Errorf("confirm job %s: %w: %w", c.ID, ErrNotConfirmed, err)
		}
		if look.selfGone {
			s.forget(ctx, c.ID, c.Owner, claimKey)
			return "", fmt.Errorf("confirm job %s: %w", c.ID, ErrGone)
		}
		if look.firm >= c.MaxActive || round == maxQuotaRounds-1 {
			s.refuse(ctx, c, claimKey)
			return "", &QuotaError{Active: max(look.firm, c.MaxActive), Limit: c.MaxActive}
		}
		// The tentative members (admitted, not flipped: under way now,
		// or left by a crash) would push this job over: refuse as many
		// as it takes, each in its own slot, where that races their
		// flip atomically. Whichever comes first wins.
		over := len(f.members) - len(look.ended) - c.MaxActive + 1
		// over is never negative in practice (admit said full), but a
		// slice bound must not trust another script's arithmetic.
		taken, err := s.voidSome(ctx, look.tentative[:min(max(over, 0), len(look.tentative))], voidQuota)
		if err != nil {
			return "", fmt.Errorf("confirm job %s: %w: %w", c.ID, ErrNotConfirmed, err)
		}
		ended, forget = append(look.ended, ids(taken)...), append(look.voided, taken...)
	}
	if s.afterAdmit != nil {
		s.afterAdmit(c.ID)
	}
	res, err := flipScript.Run(ctx, s.rdb, []string{jobKey(c.ID)}, c.TTL.Milliseconds()).Text()
	switch {
	case err != nil:
		return "", fmt.Errorf("confirm job %s: %w", c.ID, err)
	case res == "gone":
		s.forget(ctx, c.ID, c.Owner, claimKey)
		return "", fmt.Errorf("confirm job %s: %w", c.ID, ErrGone)
	case res == "void "+voidBlocked:
		s.refuse(ctx, c, claimKey)
		return "", fmt.Errorf("confirm job %s: %w", c.ID, ErrOwnerBlocked)
	case strings.HasPrefix(res, "void "):
		s.refuse(ctx, c, claimKey)
		return "", &QuotaError{Active: c.MaxActive, Limit: c.MaxActive}
	}
	return State(res), nil
}

func ids(vs []voided) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.id
	}
	return out
}

// admit sends the admission (the owner's slot), first forgetting the
// voided members in the same round trip.
func (s *Store) admit(ctx context.Context, c Confirmation, claimKey string, ended []string, forget []voided) (any, error) {
	keys := []string{ownerActiveKey(c.Owner), ownerJobsKey(c.Owner)}
	gate, claim := 0, 0
	if c.OwnerGate != "" {
		keys = append(keys, c.OwnerGate)
		gate = len(keys)
	}
	if claimKey != "" {
		keys = append(keys, claimKey)
		claim = len(keys)
	}
	args := []any{c.MaxActive, c.ID, c.TTL.Milliseconds(), idPrefixAt(s.now().Add(-indexHorizon)), gate, claim}
	for _, id := range ended {
		args = append(args, id)
	}
	for _, v := range forget {
		if err := s.forget(ctx, v.id, c.Owner, v.claim); err != nil {
			return nil, err
		}
	}
	return admitScript.Run(ctx, s.rdb, keys, args...).Result()
}

// voidSome refuses the pending jobs among ids (reason why) and returns
// those it refused; one that was confirmed first stays.
func (s *Store) voidSome(ctx context.Context, ids []string, why string) ([]voided, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	out := make([]voided, 0, len(ids))
	for _, id := range ids {
		res, err := voidScript.Run(ctx, s.rdb, []string{jobKey(id)}, why).StringSlice()
		if err != nil {
			return out, fmt.Errorf("refuse pending job %s: %w", id, err)
		}
		if len(res) == 2 && (res[0] == string(StatePending) || res[0] == "void") {
			out = append(out, voided{id, res[1]})
		}
	}
	return out, nil
}

// VoidPending refuses job id if its submission is not confirmed yet, for
// an owner who was blocked meanwhile ("users block --cancel-jobs"): its
// record becomes a tombstone that no confirm can make queued, so the
// submission is refused. It returns "" when it refused it (or it had been
// refused), else the job's state, which it leaves alone; ErrNotFound when
// there is no record.
func (s *Store) VoidPending(ctx context.Context, id string) (State, error) {
	res, err := voidScript.Run(ctx, s.rdb, []string{jobKey(id)}, voidBlocked).StringSlice()
	switch {
	case err != nil:
		return "", fmt.Errorf("refuse pending job %s: %w", id, err)
	case len(res) == 0:
		return "", fmt.Errorf("refuse pending job %s: empty reply", id)
	case res[0] == "gone":
		return "", fmt.Errorf("refuse pending job %s: %w", id, ErrNotFound)
	case res[0] == string(StatePending) || res[0] == "void":
		return "", nil
	}
	return State(res[0]), nil
}

// refuse removes an unconfirmed job that was refused: its record (job
// slot) first, then its place in the owner's slot.
func (s *Store) refuse(ctx context.Context, c Confirmation, claimKey string) {
	ctx = context.WithoutCancel(ctx)
	if st, err := s.drop(ctx, c.ID); err == nil && st == "" {
		s.forget(ctx, c.ID, c.Owner, claimKey)
	}
}

// drop deletes a record that is pending (or a refused tombstone) and
// returns "", or returns the state of one that was confirmed.
func (s *Store) drop(ctx context.Context, id string) (State, error) {
	res, err := discardScript.Run(ctx, s.rdb, []string{jobKey(id)}).Text()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("discard job %s: %w", id, err)
	}
	return State(res), nil
}

// forget takes an unconfirmed job out of its owner's slot: the active set,
// the index, and claimKey ("" for none) if it is still the job's claim.
func (s *Store) forget(ctx context.Context, id, owner, claimKey string) error {
	keys := []string{ownerActiveKey(owner), ownerJobsKey(owner)}
	if claimKey != "" {
		keys = append(keys, claimKey)
	}
	if err := forgetScript.Run(ctx, s.rdb, keys, id).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("discard job %s: %w", id, err)
	}
	return nil
}

// Discard removes a pending record (and its idempotency claim) whose job
// could not be enqueued or confirmed, so the client's retry starts clean.
// A record that was confirmed meanwhile stays: Discard returns its state,
// and the job was accepted after all. It returns "" when nothing remains.
// The record goes first (its slot decides whether the job was confirmed),
// then the job's place in the owner's slot.
func (s *Store) Discard(ctx context.Context, id, owner, idempotencyKeyValue string) (State, error) {
	st, err := s.drop(ctx, id)
	if err != nil || st != "" {
		return st, err
	}
	claimKey := ""
	if idempotencyKeyValue != "" {
		claimKey = idempotencyKey(owner, idempotencyKeyValue)
	}
	return "", s.forget(ctx, id, owner, claimKey)
}
