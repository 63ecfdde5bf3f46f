package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/claimcheck/claimcheck/internal/scripts"
)

// One-time download links (tokens.LinkClaims.Once) keep their state in the
// job's slot, a hash per link at OnceLinkKey(job, jti), written only by the
// three scripts below. The state machine (times are the caller's clock, in
// Unix ms, passed in ARGV; the progress service decides the durations):
//
//	(absent) ──claim──▶ serving ──release(all bytes)──────────▶ used
//	                    │  ▲ claim=id, lease, off                ▲
//	   extend: lease,   │  │                                     │
//	   raise off ───────┘  │ claim (Range from exactly off)      │
//	                       │                                     │
//	  release(some) or  ──▶ interrupted ──window passes──────────┘
//	  lease lapses           off, until
//
// "off" is an upper bound of the bytes served: while serving it is the
// reservation (the transfer never writes past it without extending it
// first), so a server that crashes mid-transfer leaves off at or past the
// last byte it wrote; a clean release lowers it to the exact count. A
// resume may therefore start only at off, and no byte is ever served twice.
// A claim whose lease lapsed is interrupted, with its window counted from
// the lease's end. Every write keeps the hash until at least the caller's
// keep time (the link's exp plus leeway), so a used link's state outlives
// every request that could still present the link.

// LinkVerdict is ClaimLink's answer.
type LinkVerdict int

const (
	// LinkGranted: the request may serve from its start (or, in a dry
	// run, would be granted).
	LinkGranted LinkVerdict = iota
	// LinkBusy: another transfer holds the link until LinkState.Until.
	LinkBusy
	// LinkInterrupted: a transfer stopped short; until LinkState.Until
	// only a request starting at the offset where it stopped is granted.
	LinkInterrupted
	// LinkUsed: the link has served its last byte, or its resume window
	// passed.
	LinkUsed
)

// LinkState is ClaimLink's verdict and, for LinkBusy and LinkInterrupted,
// when that ends; for LinkInterrupted, Off is the one offset a resume may
// start from.
type LinkState struct {
	Verdict LinkVerdict
	Until   time.Time
	Off     int64
}

// LinkClaim asks ClaimLink for a one-time link.
type LinkClaim struct {
	// Claim is the transfer's own random id, which Extend and Release
	// name.
	Claim string
	// Start is the first byte the request would serve; Reserve the end of
	// the bytes it may serve before it must ExtendLink (at most the
	// result's size).
	Start, Reserve int64
	// Lease is how long the claim holds without an ExtendLink; Window how
	// long a lapsed one may be resumed after the lease's end.
	Lease, Window time.Duration
	// Keep is when the state may expire at the earliest.
	Keep time.Time
	// DryRun answers what a claim would get, changing nothing (HEAD).
	DryRun bool
}

var claimLinkScript = scripts.New(`
-- KEYS[1] a one-time link's state; ARGV[1] claim id, [2] start, [3] reserve
-- to, [4] now (ms), [5] lease (ms), [6] window (ms), [7] keep until (ms),
-- [8] "1" for a dry run. Returns {verdict, until (ms), offset to resume
-- from (interrupted only)}.
local now, lease, window = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local st = redis.call("HMGET", KEYS[1], "st", "claim", "lease", "off", "until")
local dry = ARGV[8] == "1"
local function grant()
  if dry then return {"granted", 0} end
  redis.call("HSET", KEYS[1], "st", "serving", "claim", ARGV[1], "lease", now + lease, "off", ARGV[3])
  redis.call("HDEL", KEYS[1], "until")
  redis.call("PEXPIRE", KEYS[1], math.max(tonumber(ARGV[7]), now + lease + window) - now)
  return {"granted", 0}
end
if not st[1] then return grant() end
if st[1] ~= "serving" and st[1] ~= "interrupted" then return {"used", 0} end
local untl
if st[1] == "serving" then
  local held = tonumber(st[3])
  if held > now then return {"busy", held} end
  untl = held + window
else
  untl = tonumber(st[5])
end
if now >= untl then
  if not dry then
    redis.call("HSET", KEYS[1], "st", "used")
    redis.call("HDEL", KEYS[1], "claim", "lease", "until")
  end
  return {"used", 0}
end
if tonumber(ARGV[2]) ~= tonumber(st[4]) then return {"interrupted", untl, tonumber(st[4])} end
return grant()
`)

var extendLinkScript = scripts.New(`
-- KEYS[1] a one-time link's state; ARGV[1] claim id, [2] reserve to ("":
-- unchanged), [3] now (ms), [4] lease (ms), [5] window (ms), [6] keep until
-- (ms). Returns 1, or 0 when the claim is no longer the link's.
local st = redis.call("HMGET", KEYS[1], "st", "claim", "off")
if st[1] ~= "serving" or st[2] ~= ARGV[1] then return 0 end
local now, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call("HSET", KEYS[1], "lease", now + lease)
if ARGV[2] ~= "" and tonumber(ARGV[2]) > tonumber(st[3]) then redis.call("HSET", KEYS[1], "off", ARGV[2]) end
redis.call("PEXPIRE", KEYS[1], math.max(tonumber(ARGV[6]), now + lease + tonumber(ARGV[5])) - now)
return 1
`)

var releaseLinkScript = scripts.New(`
-- KEYS[1] a one-time link's state; ARGV[1] claim id, [2] bytes served up to
-- (an offset), [3] the result's size, [4] now (ms), [5] window (ms), [6] keep
-- until (ms). Returns 1, or 0 when the claim is no longer the link's.
local st = redis.call("HMGET", KEYS[1], "st", "claim", "off")
if st[1] ~= "serving" or st[2] ~= ARGV[1] then return 0 end
local now = tonumber(ARGV[4])
-- Never past the reservation: what a resume may start from only grows.
local served = math.min(tonumber(ARGV[2]), tonumber(st[3]))
redis.call("HDEL", KEYS[1], "claim", "lease")
if served >= tonumber(ARGV[3]) then
  redis.call("HSET", KEYS[1], "st", "used", "off", served)
  redis.call("PEXPIRE", KEYS[1], math.max(tonumber(ARGV[6]) - now, 1))
else
  local untl = now + tonumber(ARGV[5])
  redis.call("HSET", KEYS[1], "st", "interrupted", "off", served, "until", untl)
  redis.call("PEXPIRE", KEYS[1], math.max(tonumber(ARGV[6]), untl) - now)
end
return 1
`)

var countOnceLinkScript = scripts.New(`
-- KEYS[1] a job record; ARGV[1] the most one-time links it may have.
-- Returns 1 (counted), 0 (at the cap, nothing changed) or -1 (no record).
if redis.call("EXISTS", KEYS[1]) == 0 then return -1 end
local n = tonumber(redis.call("HGET", KEYS[1], "` + fOnceLinks + `") or "0")
if n >= tonumber(ARGV[1]) then return 0 end
redis.call("HINCRBY", KEYS[1], "` + fOnceLinks + `", 1)
return 1
`)

// CountOnceLink counts a one-time link about to be minted for job id, in
// its record (so the count lives exactly as long as the record that bounds
// every link's exp), unless the job already has max of them: ok is false
// then, and nothing changes. Every used one-time link keeps its state
// until its exp, so without a cap a job's token could fill Redis.
func (s *Store) CountOnceLink(ctx context.Context, id string, max int) (ok bool, err error) {
	n, err := countOnceLinkScript.Run(ctx, s.rdb, []string{jobKey(id)}, max).Int()
	if err != nil {
		return false, fmt.Errorf("count one-time link of job %s: %w", id, err)
	}
	if n < 0 {
		return false, fmt.Errorf("count one-time link of job %s: %w", id, ErrNotFound)
	}
	return n == 1, nil
}

// ClaimLink claims one-time link jti of job id for a transfer from c.Start
// at now, or says why not. An interrupted link is granted only to a request
// that starts where the transfer stopped; a refusal changes nothing, except
// that an interrupted link whose window has passed is marked used.
func (s *Store) ClaimLink(ctx context.Context, id, jti string, now time.Time, c LinkClaim) (LinkState, error) {
	dry := ""
	if c.DryRun {
		dry = "1"
	}
	res, err := claimLinkScript.Run(ctx, s.rdb, []string{OnceLinkKey(id, jti)}, c.Claim, c.Start, c.Reserve,
		now.UnixMilli(), c.Lease.Milliseconds(), c.Window.Milliseconds(), c.Keep.UnixMilli(), dry).Slice()
	if err != nil {
		return LinkState{}, fmt.Errorf("claim link of job %s: %w", id, err)
	}
	if len(res) < 2 {
		return LinkState{}, fmt.Errorf("claim link of job %s: answer %v", id, res)
	}
	verdict, _ := res[0].(string)
	until, _ := res[1].(int64)
	st := LinkState{Until: time.UnixMilli(until)}
	switch verdict {
	case "granted":
		return LinkState{Verdict: LinkGranted}, nil
	case "busy":
		st.Verdict = LinkBusy
	case "interrupted":
		st.Verdict = LinkInterrupted
		if len(res) > 2 {
			st.Off, _ = res[2].(int64)
		}
	default:
		st = LinkState{Verdict: LinkUsed}
	}
	return st, nil
}

// ExtendLink renews claim's lease on link jti until now+lease and, when
// reserveTo is above the current reservation, raises it (reserveTo < 0
// leaves it). held is false when the claim is no longer the link's: the
// transfer must stop.
func (s *Store) ExtendLink(ctx context.Context, id, jti, claim string, now time.Time, reserveTo int64,
	lease, window time.Duration, keep time.Time) (held bool, err error) {
	to := ""
	if reserveTo >= 0 {
		to = fmt.Sprint(reserveTo)
	}
	n, err := extendLinkScript.Run(ctx, s.rdb, []string{OnceLinkKey(id, jti)}, claim, to, now.UnixMilli(),
		lease.Milliseconds(), window.Milliseconds(), keep.UnixMilli()).Int()
	if err != nil {
		return false, fmt.Errorf("extend link of job %s: %w", id, err)
	}
	return n == 1, nil
}

// ReleaseLink ends claim's transfer on link jti, which served bytes up to
// offset served of a result of size bytes: all of them uses the link up;
// fewer leave it interrupted, resumable from served for window. held is
// false when the claim was no longer the link's (nothing changes).
func (s *Store) ReleaseLink(ctx context.Context, id, jti, claim string, now time.Time, served, size int64,
	window time.Duration, keep time.Time) (held bool, err error) {
	n, err := releaseLinkScript.Run(ctx, s.rdb, []string{OnceLinkKey(id, jti)}, claim, served, size,
		now.UnixMilli(), window.Milliseconds(), keep.UnixMilli()).Int()
	if err != nil {
		return false, fmt.Errorf("release link of job %s: %w", id, err)
	}
	return n == 1, nil
}
