package identity

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/scripts"
	"github.com/claimcheck/claimcheck/internal/secret"
)

// SessionPrefix starts every session secret.
const SessionPrefix = "ccs_"

// SessionConfig sets how long sessions live. Zero fields take the defaults.
type SessionConfig struct {
	// IdleTimeout ends a session not used for this long (12h).
	IdleTimeout time.Duration
	// AbsoluteLifetime ends a session this long after sign-in however much
	// it is used (7 days).
	AbsoluteLifetime time.Duration
}

// Session is a session's public description; its secret is never stored.
type Session struct {
	ID        string    `json:"id"`
	User      string    `json:"user"`
	CreatedAt time.Time `json:"created_at"`
	LastSeen  time.Time `json:"last_seen"`
	ExpiresAt time.Time `json:"expires_at"`
	UserAgent string    `json:"user_agent,omitempty"`
	IP        string    `json:"ip,omitempty"`
}

// Sessions stores opaque, revocable sessions: a random 256-bit secret goes
// to the client, only its SHA-256 is stored. Expiry is checked against the
// store's clock on every use (Redis TTLs only clean up), so revocation and
// expiry take effect on the very next request.
type Sessions struct {
	rdb redis.Cmdable
	cfg SessionConfig
	now func() time.Time
	rev *Revocations
}

// NewSessions returns a session store. now nil means time.Now.
func NewSessions(rdb redis.Cmdable, cfg SessionConfig, now func() time.Time) *Sessions {
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 12 * time.Hour
	}
	if cfg.AbsoluteLifetime <= 0 {
		cfg.AbsoluteLifetime = 7 * 24 * time.Hour
	}
	if now == nil {
		now = time.Now
	}
	return &Sessions{rdb: rdb, cfg: cfg, now: now, rev: NewRevocations(rdb)}
}

// Create starts a session for user and returns its secret (shown to the
// client once) and description.
func (s *Sessions) Create(ctx context.Context, user, userAgent, ip string) (secret.Secret, *Session, error) {
	user = canonicalOr(user)
	body, err := randomToken(32)
	if err != nil {
		return "", nil, err
	}
	raw := SessionPrefix + body
	idb := make([]byte, 8)
	if _, err := rand.Read(idb); err != nil {
		return "", nil, fmt.Errorf("random: %w", err)
	}
	now := time.UnixMilli(s.now().UnixMilli()).UTC()
	sess := &Session{
		ID: hex.EncodeToString(idb), User: user, CreatedAt: now, LastSeen: now,
		ExpiresAt: s.expiry(now, now), UserAgent: truncate(userAgent, 256), IP: truncate(ip, 64),
	}
	key := sessionKey(hashSecret(raw))
	ttl := sess.ExpiresAt.Sub(now).Milliseconds()
	// Step 1, the record's slot: the record, with its TTL (relative: Redis
	// runs on its own clock). Nobody holds its secret yet, so it is usable
	// by no one until Create returns.
	if err := newSessionScript.Run(ctx, s.rdb, []string{key},
		sess.ID, user, now.UnixMilli(), sess.UserAgent, sess.IP, ttl).Err(); err != nil {
		return "", nil, fmt.Errorf("create session: %w", err)
	}
	// Step 2, the user's slot: index it unless the user is blocked. A
	// block that raised its flag before this step is seen here; one that
	// raises it after finds the session in the index and ends it. See
	// doc.go, "Sign-in".
	indexed, err := indexSessionScript.Run(ctx, s.rdb, []string{userKey(user), userSessionsKey(user)},
		sess.ID, key, (s.cfg.AbsoluteLifetime + indexMargin).Milliseconds()).Int()
	if err != nil || indexed == 0 {
		// The record must not outlive a refused sign-in; if this fails too
		// it is a record nobody has the secret of, and its TTL removes it.
		_ = s.rdb.Del(context.WithoutCancel(ctx), key).Err()
	}
	if err != nil {
		return "", nil, fmt.Errorf("create session: %w", err)
	}
	if indexed == 0 {
		return "", nil, ErrUserBlocked
	}
	return secret.Secret(raw), sess, nil
}

// indexMargin is how much longer than the longest credential it lists a
// user's session index lives after its last write: past that, every
// session in it has ended, and a forgotten index leaves with them.
const indexMargin = 24 * time.Hour

// newSessionScript writes a session record with its TTL (one key).
var newSessionScript = scripts.New(`
-- KEYS[1] session record; ARGV: id, user, created ms, user agent, ip, ttl ms
redis.call("HSET", KEYS[1], "id", ARGV[1], "user", ARGV[2], "created", ARGV[3], "seen", ARGV[3], "ua", ARGV[4], "ip", ARGV[5])
redis.call("PEXPIRE", KEYS[1], ARGV[6])
return 1
`)

// indexSessionScript indexes a session under its user unless the user is
// blocked (see ErrUserBlocked). Both keys are in the user's slot.
var indexSessionScript = scripts.New(`
-- KEYS[1] user, KEYS[2] user's sessions; ARGV: id, record key, index ttl ms
if redis.call("HGET", KEYS[1], "blocked") == "1" then return 0 end
redis.call("HSET", KEYS[2], ARGV[1], ARGV[2])
if redis.call("PTTL", KEYS[2]) < tonumber(ARGV[3]) then redis.call("PEXPIRE", KEYS[2], ARGV[3]) end
return 1
`)

// expiry is when a session created at created and last used at seen ends.
func (s *Sessions) expiry(created, seen time.Time) time.Time {
	idle := seen.Add(s.cfg.IdleTimeout)
	abs := created.Add(s.cfg.AbsoluteLifetime)
	if idle.Before(abs) {
		return idle
	}
	return abs
}

// touchScript checks a session against the caller's clock and slides its
// idle expiry, in one round trip.
var touchScript = scripts.New(`
-- KEYS[1] session; ARGV[1] now ms, ARGV[2] idle ms, ARGV[3] absolute ms
local v = redis.call("HMGET", KEYS[1], "id", "user", "created", "seen")
if not v[1] then return false end
local now, created, seen = tonumber(ARGV[1]), tonumber(v[3]), tonumber(v[4])
if now - seen > tonumber(ARGV[2]) or now - created > tonumber(ARGV[3]) then
  redis.call("DEL", KEYS[1])
  return false
end
redis.call("HSET", KEYS[1], "seen", ARGV[1])
local exp = math.min(now + tonumber(ARGV[2]), created + tonumber(ARGV[3]))
-- Relative TTL: the expiry itself is judged above by the caller's clock;
-- Redis' own only cleans up.
redis.call("PEXPIRE", KEYS[1], math.max(exp - now, 1))
return {v[1], v[2], tostring(exp)}
`)

// Authenticate resolves a session secret to its principal and slides its
// idle expiry.
func (s *Sessions) Authenticate(ctx context.Context, sec secret.Secret) (*Principal, error) {
	raw := sec.Reveal()
	if !strings.HasPrefix(raw, SessionPrefix) || len(raw) > 256 {
		return nil, ErrUnauthenticated
	}
	res, err := touchScript.Run(ctx, s.rdb, []string{sessionKey(hashSecret(raw))},
		s.now().UnixMilli(), s.cfg.IdleTimeout.Milliseconds(), s.cfg.AbsoluteLifetime.Milliseconds()).StringSlice()
	if errors.Is(err, redis.Nil) {
		return nil, ErrUnauthenticated
	}
	if err != nil {
		return nil, fmt.Errorf("look up session: %w", err)
	}
	p := &Principal{UserID: res[1], Via: "session", CredentialID: res[0], Scopes: AllScopes}
	if t := parseMillis(res[2]); t != nil {
		p.ExpiresAt = *t
	}
	return p, nil
}

// Confirm reports whether user has a live session with id: it exists in
// Redis now, belongs to user and has not passed its idle or absolute
// expiry. It is what a service that knows a session only by its id (from
// an internal token's sid) asks before letting it manage credentials. An
// unknown, foreign or expired session is ErrUnauthenticated.
//
// Confirm does not slide the session's idle timer: the token that named
// the session was minted from a use of it at most a token's lifetime ago
// (and that use slid it), and a read-only check means a copied internal
// token cannot keep a session alive that its owner has left.
func (s *Sessions) Confirm(ctx context.Context, user, id string) error {
	if user == "" || id == "" {
		return ErrUnauthenticated
	}
	key, err := s.rdb.HGet(ctx, userSessionsKey(user), id).Result()
	if errors.Is(err, redis.Nil) {
		return ErrUnauthenticated
	}
	if err != nil {
		return fmt.Errorf("confirm session: %w", err)
	}
	h, err := s.rdb.HGetAll(ctx, key).Result()
	if err != nil {
		return fmt.Errorf("confirm session: %w", err)
	}
	sess, ok := s.fromHash(h)
	if !ok || sess.ID != id || sess.User != user || !sess.ExpiresAt.After(s.now()) {
		return ErrUnauthenticated
	}
	return nil
}

// List returns user's live sessions, oldest first.
func (s *Sessions) List(ctx context.Context, user string) ([]Session, error) {
	index, err := s.rdb.HGetAll(ctx, userSessionsKey(user)).Result()
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	ids := make([]string, 0, len(index))
	for id := range index {
		ids = append(ids, id)
	}
	// Each record is a key of its own slot: one pipelined read of all.
	cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, id := range ids {
			p.HGetAll(ctx, index[id])
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	now := s.now()
	var out []Session
	var stale []string
	for i, cmd := range cmds {
		sess, ok := s.fromHash(cmd.(*redis.MapStringStringCmd).Val())
		if !ok || !sess.ExpiresAt.After(now) {
			// Expired or gone: tidy the index as we pass. (A record is
			// written before its index entry, so an entry without one is
			// never a sign-in still under way.)
			stale = append(stale, ids[i])
			continue
		}
		out = append(out, sess)
	}
	if len(stale) > 0 {
		s.rdb.HDel(ctx, userSessionsKey(user), stale...)
	}
	slices.SortFunc(out, func(a, b Session) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

func (s *Sessions) fromHash(h map[string]string) (Session, bool) {
	if h["id"] == "" {
		return Session{}, false
	}
	created, err1 := strconv.ParseInt(h["created"], 10, 64)
	seen, err2 := strconv.ParseInt(h["seen"], 10, 64)
	if err1 != nil || err2 != nil {
		return Session{}, false
	}
	c, l := time.UnixMilli(created).UTC(), time.UnixMilli(seen).UTC()
	return Session{ID: h["id"], User: h["user"], CreatedAt: c, LastSeen: l, ExpiresAt: s.expiry(c, l),
		UserAgent: h["ua"], IP: h["ip"]}, true
}

// ErrSessionNotFound means the user has no session with that id.
var ErrSessionNotFound = errors.New("session not found")

// Revoke ends one of user's sessions by its id. The record is deleted
// before the index entry: the session stops working first, and a failure
// between the two leaves an entry that points at nothing (which List
// tidies) rather than a live session that no index reaches.
func (s *Sessions) Revoke(ctx context.Context, user, id string) error {
	if id == "" {
		return ErrSessionNotFound
	}
	user = canonicalOr(user)
	key, err := s.rdb.HGet(ctx, userSessionsKey(user), id).Result()
	if errors.Is(err, redis.Nil) {
		return ErrSessionNotFound
	}
	if err != nil {
		return fmt.Errorf("revoke session: %w", err)
	}
	if err := s.rdb.Del(ctx, key).Err(); err != nil {
		return fmt.Errorf("revoke session: %w", err)
	}
	if err := s.rdb.HDel(ctx, userSessionsKey(user), id).Err(); err != nil {
		return fmt.Errorf("revoke session: %w", err)
	}
	return s.rev.Announce(ctx, Revocation{Kind: RevokedSession, ID: id})
}

// RevokeAll ends every session of user ("log out everywhere") and returns
// how many were live. A session whose sign-in completes while this runs is
// either in the index it reads (and ended) or indexed after it (and kept).
func (s *Sessions) RevokeAll(ctx context.Context, user string) (int, error) {
	user = canonicalOr(user)
	index, err := s.rdb.HGetAll(ctx, userSessionsKey(user)).Result()
	if err != nil {
		return 0, fmt.Errorf("revoke sessions of %s: %w", user, err)
	}
	n, err := s.sweep(ctx, user, index)
	// Announced after the writes, even after a sweep that failed midway,
	// for the sessions it did end.
	aerr := s.rev.Announce(ctx, Revocation{Kind: RevokedUser, ID: user})
	if err != nil {
		return n, fmt.Errorf("revoke sessions of %s: %w", user, err)
	}
	return n, aerr
}

// sweep ends the sessions of index (id → record key, as read from user's
// index): the records first, then their index entries, so a failure
// midway leaves entries a second sweep still finds. It returns how many
// records it deleted.
func (s *Sessions) sweep(ctx context.Context, user string, index map[string]string) (int, error) {
	if len(index) == 0 {
		return 0, nil
	}
	ids := make([]string, 0, len(index))
	cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for id, key := range index {
			ids = append(ids, id)
			p.Del(ctx, key) // one key per command: records are in slots of their own
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, cmd := range cmds {
		n += int(cmd.(*redis.IntCmd).Val())
	}
	if err := s.rdb.HDel(ctx, userSessionsKey(user), ids...).Err(); err != nil {
		return n, err
	}
	return n, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
