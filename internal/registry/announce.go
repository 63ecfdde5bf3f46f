package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redisconn"
	"github.com/claimcheck/claimcheck/internal/scripts"
)

// Config tunes an Announcer or a Reader. Zero values take the defaults in
// parentheses; a fleet's workers and apis must agree on Forget.
type Config struct {
	// WorkerID names the announcing worker (NewWorkerID()). Readers ignore it.
	WorkerID string
	// Heartbeat is how often a worker announces its types again (5s).
	Heartbeat time.Duration
	// TTL is how long a worker stays counted after its last heartbeat
	// (3 × Heartbeat): a crashed worker drops out of the counts this long
	// after it died; one that shuts down withdraws at once.
	TTL time.Duration
	// Forget is how long a type stays known after its last worker's last
	// heartbeat (24h): long enough for a restart or a deploy, after which
	// a submission is refused as an unknown type instead of waiting in a
	// queue no worker serves.
	Forget time.Duration
	// Interval is how often a Reader reads the registry again (1s); it
	// reads only when asked (an idle api reads nothing).
	Interval time.Duration
	// UnknownInterval is how often a Reader, asked for a type it does not
	// know, checks whether a spec was announced since its last read (100ms;
	// one GET, and a whole read only when one was): a type announced a
	// moment ago is accepted at once, while a flood of made-up names costs
	// at most one GET per interval.
	UnknownInterval time.Duration
	// Now is the clock (time.Now); tests move it instead of waiting.
	Now func() time.Time
	// Logger receives warnings (slog.Default()).
	Logger *slog.Logger
	// RedisAway is told the outcome of each heartbeat and reports whether
	// its error is Redis being away (default redisconn.Unavailable). Such
	// a failure is logged at debug: the Redis client's monitor says once
	// per outage that Redis is down, and a heartbeat every few seconds
	// must not add an ERROR each.
	RedisAway func(err error) bool
}

func (c *Config) setDefaults() {
	if c.WorkerID == "" {
		c.WorkerID = NewWorkerID()
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 5 * time.Second
	}
	if c.TTL <= 0 {
		c.TTL = 3 * c.Heartbeat
	}
	if c.Forget <= 0 {
		c.Forget = 24 * time.Hour
	}
	if c.Interval <= 0 {
		c.Interval = time.Second
	}
	if c.UnknownInterval <= 0 {
		c.UnknownInterval = 100 * time.Millisecond
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.RedisAway == nil {
		c.RedisAway = redisconn.Unavailable
	}
}

// NewWorkerID is hostname-pid-random: readable in an error message, and
// unique even for two workers of one process.
func NewWorkerID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return host + "-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b)
}

// ErrConflict is wrapped by a *ConflictError.
var ErrConflict = errors.New("job type announced with a different spec")

// ConflictError is why a worker may not announce a type: a live worker
// announces the same name with another spec.
type ConflictError struct {
	// Type is the type's name.
	Type string
	// Digest is this worker's spec digest, LiveDigest the announced one.
	Digest, LiveDigest string
	// LiveWorker is a live worker announcing LiveDigest.
	LiveWorker string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("job type %q: this worker's spec (%s) differs from the one live worker %s announces (%s); "+
		"stop the workers of the old spec first, or give the changed type a new name", e.Type, e.Digest, e.LiveWorker, e.LiveDigest)
}

func (e *ConflictError) Unwrap() error { return ErrConflict }

// Announcer keeps one worker's types announced: Start announces them (or
// refuses, on a conflict) and heartbeats until Stop, which withdraws them.
type Announcer struct {
	cfg   Config
	rdb   redis.UniversalClient
	names []string
	specs [][]byte
	dig   []string
	keys  []string

	mu   sync.Mutex
	stop chan struct{}
	done chan struct{}
}

// NewAnnouncer prepares the announcement of specs (a worker's own types).
func NewAnnouncer(rdb redis.UniversalClient, cfg Config, specs ...jobs.TypeSpec) (*Announcer, error) {
	cfg.setDefaults()
	a := &Announcer{cfg: cfg, rdb: rdb, keys: []string{KeyIndex, KeyVersion}}
	seen := map[string]bool{}
	for _, s := range specs {
		text, digest, err := encode(s)
		if err != nil {
			return nil, err
		}
		if seen[s.Name] {
			return nil, fmt.Errorf("job type %q: announced twice", s.Name)
		}
		seen[s.Name] = true
		a.names = append(a.names, s.Name)
		a.specs = append(a.specs, text)
		a.dig = append(a.dig, digest)
		a.keys = append(a.keys, typeKey(s.Name), workersKey(s.Name))
	}
	return a, nil
}

// WorkerID is the id this announcer announces as.
func (a *Announcer) WorkerID() string { return a.cfg.WorkerID }

// Digests maps each announced type to its spec digest.
func (a *Announcer) Digests() map[string]string {
	m := make(map[string]string, len(a.names))
	for i, n := range a.names {
		m[n] = a.dig[i]
	}
	return m
}

// announceScript announces a worker's types in one step, so that the
// conflict check and the write cannot interleave with another worker's.
//
// KEYS[1] is the index, KEYS[2] the version; KEYS[2k+1], KEYS[2k+2] the
// hash and worker set of the k-th type (all in one slot; see keys.go). ARGV: worker id, now (ms),
// heartbeat expiry (ms), forget (ms), strict ("1": write nothing if any
// type conflicts), then name, digest, spec per type.
//
// A type conflicts when its hash holds another digest and a worker other
// than this one is alive in its set. A newcomer is let in only when no
// live worker holds the old spec, so every live member of a set announces
// the digest in the hash. It returns the conflicts as (name, live digest,
// live worker) triples.
var announceScript = scripts.New(`
local id, now, expiry, forget = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local strict = ARGV[5] == '1'
local n = (#KEYS - 2) / 2
local out, clash = {}, {}
for k = 1, n do
  local hk, wk = KEYS[2*k+1], KEYS[2*k+2]
  local name, digest = ARGV[3*k+3], ARGV[3*k+4]
  redis.call('ZREMRANGEBYSCORE', wk, '-inf', now)
  local cur = redis.call('HGET', hk, 'digest')
  if cur and cur ~= digest then
    for _, w in ipairs(redis.call('ZRANGEBYSCORE', wk, '(' .. now, '+inf', 'LIMIT', 0, 2)) do
      if w ~= id then
        out[#out+1] = name; out[#out+1] = cur; out[#out+1] = w
        clash[k] = true
        break
      end
    end
  end
end
if strict and #out > 0 then return out end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - forget)
for k = 1, n do
  if not clash[k] then
    local hk, wk = KEYS[2*k+1], KEYS[2*k+2]
    local name, digest, spec = ARGV[3*k+3], ARGV[3*k+4], ARGV[3*k+5]
    if redis.call('HGET', hk, 'digest') ~= digest then
      redis.call('HSET', hk, 'digest', digest, 'spec', spec)
      redis.call('INCR', KEYS[2])
    end
    redis.call('PEXPIRE', hk, forget)
    redis.call('ZADD', wk, expiry, id)
    redis.call('PEXPIRE', wk, forget)
    redis.call('ZADD', KEYS[1], now, name)
  end
end
return out
`)

// withdrawScript takes a worker out of its types' sets; the types stay
// known (their hash, their index entry) for Forget from now.
//
// KEYS as announceScript's. ARGV: worker id, now (ms), forget (ms), then
// one name per type.
var withdrawScript = scripts.New(`
local id, now, forget = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for k = 1, (#KEYS - 2) / 2 do
  local hk, wk = KEYS[2*k+1], KEYS[2*k+2]
  if redis.call('ZREM', wk, id) == 1 then
    redis.call('ZADD', KEYS[1], now, ARGV[k+3])
    redis.call('PEXPIRE', hk, forget)
    if redis.call('EXISTS', wk) == 1 then redis.call('PEXPIRE', wk, forget) end
  end
end
return 0
`)

// Announce announces every type once. strict refuses all of them, writing
// nothing, when one conflicts (a worker starting); otherwise the others
// are announced and the conflicts still returned (a heartbeat). The error
// is a *ConflictError for the first conflict.
func (a *Announcer) Announce(ctx context.Context, strict bool) error {
	if len(a.names) == 0 {
		return nil
	}
	now := a.cfg.Now()
	args := []any{a.cfg.WorkerID, now.UnixMilli(), now.Add(a.cfg.TTL).UnixMilli(), a.cfg.Forget.Milliseconds(), map[bool]string{true: "1", false: "0"}[strict]}
	for i := range a.names {
		args = append(args, a.names[i], a.dig[i], a.specs[i])
	}
	out, err := announceScript.Run(ctx, a.rdb, a.keys, args...).StringSlice()
	if err != nil {
		return fmt.Errorf("announce job types: %w", err)
	}
	if len(out) >= 3 {
		return &ConflictError{Type: out[0], Digest: a.Digests()[out[0]], LiveDigest: out[1], LiveWorker: out[2]}
	}
	return nil
}

// Start announces the types, refusing on a conflict, then heartbeats in
// the background until Stop.
func (a *Announcer) Start(ctx context.Context) error {
	if err := a.Announce(ctx, true); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stop, a.done = make(chan struct{}), make(chan struct{})
	go a.heartbeat(a.stop, a.done)
	return nil
}

func (a *Announcer) heartbeat(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(a.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), a.cfg.Heartbeat)
		err := a.Announce(ctx, false)
		cancel()
		// A conflict now means this worker's heartbeat lapsed and a worker
		// with another spec took the name: it keeps running its jobs but
		// is no longer counted for that type.
		switch {
		case a.cfg.RedisAway(err):
			a.cfg.Logger.Debug("job types not announced: redis unavailable", "worker", a.cfg.WorkerID, "err", err)
		case err != nil:
			a.cfg.Logger.Error("job types not announced", "worker", a.cfg.WorkerID, "err", err)
		}
	}
}

// Stop ends the heartbeat and withdraws this worker from its types, so
// the api's counts drop at once rather than when the TTL runs out.
func (a *Announcer) Stop(ctx context.Context) error {
	a.mu.Lock()
	stop, done := a.stop, a.done
	a.stop, a.done = nil, nil
	a.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	return a.Withdraw(ctx)
}

// Withdraw takes this worker out of its types' worker sets.
func (a *Announcer) Withdraw(ctx context.Context) error {
	if len(a.names) == 0 {
		return nil
	}
	args := []any{a.cfg.WorkerID, a.cfg.Now().UnixMilli(), a.cfg.Forget.Milliseconds()}
	for _, n := range a.names {
		args = append(args, n)
	}
	if err := withdrawScript.Run(ctx, a.rdb, a.keys, args...).Err(); err != nil {
		return fmt.Errorf("withdraw job types: %w", err)
	}
	return nil
}
