package identity

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/claimcheck/claimcheck/internal/scripts"
	"github.com/claimcheck/claimcheck/internal/secret"
	"github.com/redis/go-redis/v9"
)

// APIKeyPrefix starts every API key, so secret scanners and people can tell
// one on sight.
const APIKeyPrefix = "cck_"

// ErrUnauthenticated means the credential is unknown, revoked or malformed.
var ErrUnauthenticated = errors.New("unknown or revoked credential")

// ErrNotFound means no API key has that id.
var ErrNotFound = errors.New("api key not found")

// Scopes a credential may carry. A session carries AllScopes; an API key
// carries the ones it was created with.
const (
	// ScopeJobsSubmit allows submitting and cancelling jobs and re-issuing
	// job tokens with job:cancel.
	ScopeJobsSubmit = "jobs:submit"
	// ScopeJobsRead allows listing one's jobs and re-issuing read-only job
	// tokens.
	ScopeJobsRead = "jobs:read"
	// ScopeJobsPriority allows submitting at high priority (priority
	// "high", queue "critical"), which jumps every other user's queued
	// jobs. It is one of OperatorScopes: no session carries it and nobody
	// can give it to themselves.
	ScopeJobsPriority = "jobs:priority"
)

// AllScopes is every scope a user may give their own keys, and the scope of
// a session.
var AllScopes = []string{ScopeJobsSubmit, ScopeJobsRead}

// OperatorScopes are the scopes only an operator grants (`claimcheck
// apikeys create --scope jobs:priority`, KeySpec.Operator): they let one
// user's work go ahead of everybody else's, so a user's own session, or a
// key it makes, must not be able to mint them.
var OperatorScopes = []string{ScopeJobsPriority}

// Principal is who a request acts for.
type Principal struct {
	// UserID names the user; job tokens carry it as sub.
	UserID string
	// Via says how the caller authenticated: "api_key", "session" or
	// "gateway" (an internal token minted by the gateway).
	Via string
	// CredentialID identifies the credential (an API key or session id)
	// for audit logs and for revoking it.
	CredentialID string
	// Scopes are what the credential allows (see AllScopes).
	Scopes []string
	// ExpiresAt is when the credential stops working on its own; zero
	// means it does not expire (it can still be revoked). A cache of
	// anything derived from the credential must not outlive it.
	ExpiresAt time.Time
}

// Can reports whether the credential carries scope.
func (p *Principal) Can(scope string) bool { return slices.Contains(p.Scopes, scope) }

// APIKey is a stored key's public description; the secret is never stored.
type APIKey struct {
	ID   string `json:"id"`
	User string `json:"user"`
	Name string `json:"name"`
	// Prefix is the secret's first characters, enough to recognise a key
	// in a list and to search logs or a secret scanner's report for it.
	Prefix    string     `json:"prefix"`
	Scopes    []string   `json:"scopes"`
	CreatedAt time.Time  `json:"created_at"`
	LastUsed  *time.Time `json:"last_used,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// KeySpec describes a key to create.
type KeySpec struct {
	User string
	Name string
	// Scopes default to AllScopes; each must be one of AllScopes, or of
	// OperatorScopes when Operator is set.
	Scopes []string
	// Operator says an operator is creating the key (the admin command),
	// not the user themselves: only then may Scopes name OperatorScopes.
	// Self-service key creation must leave it false.
	Operator bool
	// ExpiresAt, when not zero, ends the key on its own.
	ExpiresAt time.Time
	// Preset, when non-empty, is used instead of a random secret (the dev
	// command's CLAIMCHECK_DEV_API_KEY); it must carry the key prefix.
	Preset secret.Secret
}

// ErrBadScope means a requested scope is not one of AllScopes (or, for an
// operator, OperatorScopes).
var ErrBadScope = errors.New("unknown scope")

// NormalizeScopes checks scopes against AllScopes and removes duplicates;
// none means all. It is the check for keys a user makes themselves: an
// operator scope is refused here (KeySpec.Operator allows them).
func NormalizeScopes(scopes []string) ([]string, error) {
	return normalizeScopes(scopes, false)
}

func normalizeScopes(scopes []string, operator bool) ([]string, error) {
	if len(scopes) == 0 {
		return slices.Clone(AllScopes), nil
	}
	var out []string
	for _, sc := range scopes {
		if slices.Contains(OperatorScopes, sc) && !operator {
			return nil, fmt.Errorf("%w %q: only an operator can grant it", ErrBadScope, sc)
		}
		if !slices.Contains(AllScopes, sc) && !slices.Contains(OperatorScopes, sc) {
			known := AllScopes
			if operator {
				known = slices.Concat(AllScopes, OperatorScopes)
			}
			return nil, fmt.Errorf("%w %q: use %s", ErrBadScope, sc, strings.Join(known, " or "))
		}
		if !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	return out, nil
}

// prefixLen is how much of a secret APIKey.Prefix shows: "cck_" and eight
// characters, 48 bits, which names a key without weakening it.
const prefixLen = len(APIKeyPrefix) + 8

// APIKeys stores and checks API keys.
type APIKeys struct {
	rdb redis.Cmdable
	now func() time.Time
	rev *Revocations
}

// NewAPIKeys returns an API key store on rdb (a client, or an
// auto-pipeliner in front of one). now may be nil (time.Now).
func NewAPIKeys(rdb redis.Cmdable, now func() time.Time) *APIKeys {
	if now == nil {
		now = time.Now
	}
	return &APIKeys{rdb: rdb, now: now, rev: NewRevocations(rdb)}
}

var userName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// ValidUserName reports whether name is acceptable as a user id: it appears
// in tokens and logs, so it is kept short and plain (ASCII letters, digits
// and . _ @ -, 1-64 of them). Letters may be in either case; see
// CanonicalUserName.
func ValidUserName(name string) bool { return userName.MatchString(name) }

// CanonicalUserName is the one form in which a user name is stored,
// compared, rate-limited and put in tokens: lower case. ANN and ann are one
// user; `users add ANN` creates ann, and ann signs in as ANN or ann. It
// reports false for a name ValidUserName refuses. The name is checked
// before it is folded, and the check allows ASCII only, so no Unicode
// letter (the Kelvin sign, say) can fold into another user's name.
//
// A user added with capitals before names were folded is stored under
// that spelling and can no longer be found: re-add them (`claimcheck users
// add`) and revoke the old record's keys.
func CanonicalUserName(name string) (string, bool) {
	if !userName.MatchString(name) {
		return "", false
	}
	return strings.ToLower(name), true
}

// canonicalOr folds name when it is valid and leaves it as it is otherwise,
// for lookups that must simply find nothing for a bad name.
func canonicalOr(name string) string {
	if c, ok := CanonicalUserName(name); ok {
		return c
	}
	return name
}

// errBadUserName refuses a user name ValidUserName does not accept.
func errBadUserName(name string) error {
	return fmt.Errorf("user %q: use 1-64 letters, digits, '.', '_', '@' or '-'", name)
}

// RevokeUser revokes every key of user and announces it as a revocation
// of the user (RevokedUser). It does not stop new keys: Directory.Block
// does, by raising the blocked flag in the same step that reads the index.
func (k *APIKeys) RevokeUser(ctx context.Context, user string) error {
	user = canonicalOr(user)
	ids, err := k.rdb.SMembers(ctx, userAPIKeysKey(user)).Result()
	if err != nil {
		return fmt.Errorf("revoke api keys of %s: %w", user, err)
	}
	_, err = k.sweep(ctx, user, ids)
	// Announced after the writes, even after a sweep that failed midway,
	// for the keys it did revoke.
	aerr := k.rev.Announce(ctx, Revocation{Kind: RevokedUser, ID: user})
	if err != nil {
		return fmt.Errorf("revoke api keys of %s: %w", user, err)
	}
	return aerr
}

// sweep revokes the keys ids of user's index, without announcing: it finds
// each record through its id key, deletes the records (the keys stop
// working), then the id keys and index entries, so a failure midway leaves
// entries a second sweep still finds. Every key is in a slot of its own
// (one command each, pipelined); the user's index is last. It returns how
// many records it deleted.
func (k *APIKeys) sweep(ctx context.Context, user string, ids []string) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	hashes, err := k.hashes(ctx, ids)
	if err != nil {
		return 0, err
	}
	n := 0
	cmds, err := k.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, h := range hashes {
			if h != "" {
				p.Del(ctx, apiKeyKey(h))
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, cmd := range cmds {
		n += int(cmd.(*redis.IntCmd).Val())
	}
	_, err = k.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, id := range ids {
			p.Del(ctx, apiKeyIDKey(id))
		}
		p.ZRem(ctx, KeyAPIKeyIndex, anys(ids)...)
		return nil
	})
	if err != nil {
		return n, err
	}
	if err := k.rdb.SRem(ctx, userAPIKeysKey(user), anys(ids)...).Err(); err != nil {
		return n, err
	}
	return n, nil
}

// hashes reads the id keys of ids, one command each (they are in slots of
// their own, so no MGET), in one pipelined round trip: "" for an id whose
// key is gone.
func (k *APIKeys) hashes(ctx context.Context, ids []string) ([]string, error) {
	cmds, err := k.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, id := range ids {
			p.Get(ctx, apiKeyIDKey(id))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	out := make([]string, len(ids))
	for i, cmd := range cmds {
		out[i] = cmd.(*redis.StringCmd).Val()
	}
	return out, nil
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func hashSecret(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func randomToken(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// Create makes a key for user with every scope and no expiry; see CreateKey.
func (k *APIKeys) Create(ctx context.Context, user, name string, presetSecret secret.Secret) (secret.Secret, *APIKey, error) {
	return k.CreateKey(ctx, KeySpec{User: user, Name: name, Preset: presetSecret})
}

// CreateKey makes a new key. The secret is returned once and only its hash
// is kept.
func (k *APIKeys) CreateKey(ctx context.Context, spec KeySpec) (secret.Secret, *APIKey, error) {
	user, ok := CanonicalUserName(spec.User)
	if !ok {
		return "", nil, errBadUserName(spec.User)
	}
	if len(spec.Name) > 100 {
		return "", nil, errors.New("key name: at most 100 characters")
	}
	scopes, err := normalizeScopes(spec.Scopes, spec.Operator)
	if err != nil {
		return "", nil, err
	}
	now := k.now().UTC()
	if !spec.ExpiresAt.IsZero() && !spec.ExpiresAt.After(now) {
		return "", nil, errors.New("key expiry is not in the future")
	}
	raw := spec.Preset.Reveal()
	if raw == "" {
		body, err := randomToken(32)
		if err != nil {
			return "", nil, err
		}
		raw = APIKeyPrefix + body
	} else if !strings.HasPrefix(raw, APIKeyPrefix) || len(raw) < len(APIKeyPrefix)+16 {
		return "", nil, fmt.Errorf("preset api key must start with %q and have at least 16 more characters", APIKeyPrefix)
	}
	idBytes := make([]byte, 8)
	if _, err := rand.Read(idBytes); err != nil {
		return "", nil, fmt.Errorf("random: %w", err)
	}
	key := &APIKey{
		ID: hex.EncodeToString(idBytes), User: user, Name: spec.Name, Prefix: raw[:prefixLen],
		Scopes: scopes, CreatedAt: time.UnixMilli(now.UnixMilli()).UTC(),
	}
	expires := ""
	if !spec.ExpiresAt.IsZero() {
		e := time.UnixMilli(spec.ExpiresAt.UnixMilli()).UTC()
		key.ExpiresAt = &e
		expires = strconv.FormatInt(e.UnixMilli(), 10)
	}
	h := hashSecret(raw)
	// Three steps in several slots; see doc.go, "API key creation".
	// Step 1: the record and the id key, each alone in its slot and each
	// provisional (pendingKeyTTL), and the global index entry. Nobody
	// holds the secret yet; a crash from here on leaves keys that expire.
	rec := apiKeyKey(h)
	if err := newKeyScript.Run(ctx, k.rdb, []string{rec},
		key.ID, user, spec.Name, now.UnixMilli(), key.Prefix, strings.Join(scopes, " "), expires,
		pendingKeyTTL.Milliseconds()).Err(); err != nil {
		return "", nil, fmt.Errorf("create api key: %w", err)
	}
	abandon := func() {
		// Best effort: what is left expires with pendingKeyTTL, and List
		// and ListUser tidy a dangling index entry.
		ctx := context.WithoutCancel(ctx)
		_, _ = k.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, rec)
			p.Del(ctx, apiKeyIDKey(key.ID))
			p.ZRem(ctx, KeyAPIKeyIndex, key.ID)
			p.SRem(ctx, userAPIKeysKey(user), key.ID) // a no-op before step 2
			return nil
		})
	}
	_, err = k.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, apiKeyIDKey(key.ID), h, pendingKeyTTL)
		p.ZAdd(ctx, KeyAPIKeyIndex, redis.Z{Score: float64(now.UnixMilli()), Member: key.ID})
		return nil
	})
	if err != nil {
		abandon()
		return "", nil, fmt.Errorf("create api key: %w", err)
	}
	// Step 2, the user's slot: index the key unless the user is blocked.
	// A block that raised its flag first is seen here; one that raises it
	// later finds the id in the index, and the id key leads it to the
	// record it deletes.
	indexed, err := indexKeyScript.Run(ctx, k.rdb, []string{userKey(user), userAPIKeysKey(user)}, key.ID).Int()
	if err != nil || indexed == 0 {
		abandon()
	}
	if err != nil {
		return "", nil, fmt.Errorf("create api key: %w", err)
	}
	if indexed == 0 {
		return "", nil, ErrUserBlocked
	}
	// Step 3: make the record and the id key permanent, or give them the
	// key's own lifetime (Redis cleans up a day after expiry; Authenticate
	// refuses the key from the moment it expires, by the caller's clock).
	// The script only touches a key that exists: a record that a block or
	// a revoke-all swept since step 2 stays gone, and the key is refused.
	var lifetime int64
	if key.ExpiresAt != nil {
		lifetime = (key.ExpiresAt.Sub(now) + 24*time.Hour).Milliseconds()
	}
	// The id key is kept too, and must still be there: without it no
	// sweep could find the record.
	kept, err := keepKeyScript.Run(ctx, k.rdb, []string{rec}, lifetime).Int()
	if err == nil && kept == 1 {
		kept, err = keepKeyScript.Run(ctx, k.rdb, []string{apiKeyIDKey(key.ID)}, lifetime).Int()
	}
	if err != nil {
		abandon()
		return "", nil, fmt.Errorf("create api key: %w", err)
	}
	if kept == 0 {
		abandon()
		return "", nil, fmt.Errorf("create api key: revoked while it was being created: %w", ErrUserBlocked)
	}
	return secret.Secret(raw), key, nil
}

// pendingKeyTTL is how long the record and id key of an API key being
// created live before its creation confirms them: far longer than the few
// round trips in between, and short enough that a creation that died
// midway leaves nothing for long.
const pendingKeyTTL = 10 * time.Minute

// newKeyScript writes a provisional API key record (one key).
var newKeyScript = scripts.New(`
-- KEYS[1] key record
-- ARGV: id, user, name, created ms, prefix, scope, expires ms or "", pending ttl ms
redis.call("HSET", KEYS[1], "id", ARGV[1], "user", ARGV[2], "name", ARGV[3], "created", ARGV[4],
  "prefix", ARGV[5], "scope", ARGV[6], "expires", ARGV[7])
redis.call("PEXPIRE", KEYS[1], ARGV[8])
return 1
`)

// indexKeyScript adds a key to its user's index unless the user is blocked
// (see ErrUserBlocked). Both keys are in the user's slot.
var indexKeyScript = scripts.New(`
-- KEYS[1] user, KEYS[2] user's keys; ARGV[1] key id
if redis.call("HGET", KEYS[1], "blocked") == "1" then return 0 end
redis.call("SADD", KEYS[2], ARGV[1])
return 1
`)

// keepKeyScript ends a provisional key's pending TTL if the key still
// exists: no expiry (ARGV[1] 0) or the key's own lifetime. It never
// creates the key, so a record deleted since it was written stays deleted.
var keepKeyScript = scripts.New(`
-- KEYS[1] record or id key; ARGV[1] lifetime ms or 0
if redis.call("EXISTS", KEYS[1]) == 0 then return 0 end
if tonumber(ARGV[1]) > 0 then redis.call("PEXPIRE", KEYS[1], ARGV[1]) else redis.call("PERSIST", KEYS[1]) end
return 1
`)

// useScript checks a key's expiry against the caller's clock and records its
// use, in one round trip. last_used is written at most once a minute, so a
// busy key costs no extra writes.
var useScript = scripts.New(`
-- KEYS[1] key record; ARGV[1] now ms
local v = redis.call("HMGET", KEYS[1], "id", "user", "scope", "expires", "last_used")
if not v[1] or not v[2] then return false end
local now = tonumber(ARGV[1])
if v[4] and v[4] ~= "" and now >= tonumber(v[4]) then return false end
if not v[5] or now - tonumber(v[5]) >= 60000 then
  redis.call("HSET", KEYS[1], "last_used", ARGV[1])
end
return {v[1], v[2], v[3] or "", v[4] or ""}
`)

// Authenticate resolves an API key to its principal in one round trip.
func (k *APIKeys) Authenticate(ctx context.Context, s secret.Secret) (*Principal, error) {
	raw := s.Reveal()
	if !strings.HasPrefix(raw, APIKeyPrefix) || len(raw) > 256 {
		return nil, ErrUnauthenticated
	}
	res, err := useScript.Run(ctx, k.rdb, []string{apiKeyKey(hashSecret(raw))}, k.now().UnixMilli()).StringSlice()
	if errors.Is(err, redis.Nil) {
		return nil, ErrUnauthenticated
	}
	if err != nil {
		return nil, fmt.Errorf("look up api key: %w", err)
	}
	p := &Principal{UserID: res[1], Via: "api_key", CredentialID: res[0], Scopes: keyScopes(res[2])}
	if t := parseMillis(res[3]); t != nil {
		p.ExpiresAt = *t
	}
	return p, nil
}

// Confirm reports whether user has a live API key with id: it exists now,
// belongs to user and has not expired. It is what a service that knows a
// key only by its id (from an internal token's key_id) asks before the
// token may derive a credential that outlives it. An unknown, foreign or
// expired key is ErrUnauthenticated. It does not touch last_used.
func (k *APIKeys) Confirm(ctx context.Context, user, id string) error {
	if user == "" || id == "" {
		return ErrUnauthenticated
	}
	hash, err := k.rdb.Get(ctx, apiKeyIDKey(id)).Result()
	if errors.Is(err, redis.Nil) {
		return ErrUnauthenticated
	}
	if err != nil {
		return fmt.Errorf("confirm api key: %w", err)
	}
	v, err := k.rdb.HMGet(ctx, apiKeyKey(hash), "id", "user", "expires").Result()
	if err != nil {
		return fmt.Errorf("confirm api key: %w", err)
	}
	gotID, _ := v[0].(string)
	gotUser, _ := v[1].(string)
	if gotID != id || gotUser != user {
		return ErrUnauthenticated
	}
	if exp, _ := v[2].(string); exp != "" {
		if t := parseMillis(exp); t != nil && !k.now().Before(*t) {
			return ErrUnauthenticated
		}
	}
	return nil
}

// keyScopes reads a stored scope; keys made before scopes existed have all.
func keyScopes(stored string) []string {
	if stored == "" {
		return slices.Clone(AllScopes)
	}
	return strings.Fields(stored)
}

func parseMillis(s string) *time.Time {
	msec, err := strconv.ParseInt(s, 10, 64)
	if err != nil || msec == 0 {
		return nil
	}
	t := time.UnixMilli(msec).UTC()
	return &t
}

// ListUser returns user's keys, oldest first, expired ones included (they
// show their expiry) until Redis removes them.
func (k *APIKeys) ListUser(ctx context.Context, user string) ([]APIKey, error) {
	ids, err := k.rdb.SMembers(ctx, userAPIKeysKey(user)).Result()
	if err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	keys, gone, err := k.describe(ctx, ids)
	if len(gone) > 0 {
		// Expired, or left by a revocation that failed midway. (A key is
		// indexed here only after its id key is written, so none of these
		// is a creation under way.)
		_ = k.rdb.SRem(ctx, userAPIKeysKey(user), anys(gone)...).Err()
	}
	return keys, err
}

// describe loads the public records of the keys ids in two round trips,
// skipping ids whose key is gone; gone lists those whose id key is.
func (k *APIKeys) describe(ctx context.Context, ids []string) (keys []APIKey, gone []string, err error) {
	if len(ids) == 0 {
		return []APIKey{}, nil, nil
	}
	hashes, err := k.hashes(ctx, ids)
	if err != nil {
		return nil, nil, fmt.Errorf("list api keys: %w", err)
	}
	for i, h := range hashes {
		if h == "" {
			gone = append(gone, ids[i])
		}
	}
	cmds, err := k.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, h := range hashes {
			if h != "" {
				p.HGetAll(ctx, apiKeyKey(h))
			}
		}
		return nil
	})
	if err != nil {
		return nil, gone, fmt.Errorf("list api keys: %w", err)
	}
	keys = make([]APIKey, 0, len(cmds))
	for _, cmd := range cmds {
		rec, err := cmd.(*redis.MapStringStringCmd).Result()
		if err != nil || rec["id"] == "" {
			continue
		}
		key := APIKey{ID: rec["id"], User: rec["user"], Name: rec["name"], Prefix: rec["prefix"],
			Scopes: keyScopes(rec["scope"]), LastUsed: parseMillis(rec["last_used"]), ExpiresAt: parseMillis(rec["expires"])}
		if t := parseMillis(rec["created"]); t != nil {
			key.CreatedAt = *t
		}
		keys = append(keys, key)
	}
	slices.SortFunc(keys, func(a, b APIKey) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return keys, gone, nil
}

// RevokeOwn revokes user's key id; another user's key is ErrNotFound, so
// key ids cannot be probed.
func (k *APIKeys) RevokeOwn(ctx context.Context, user, id string) error {
	ok, err := k.rdb.SIsMember(ctx, userAPIKeysKey(user), id).Result()
	if err != nil {
		return fmt.Errorf("revoke api key %s: %w", id, err)
	}
	if !ok {
		return fmt.Errorf("revoke api key %s: %w", id, ErrNotFound)
	}
	return k.Revoke(ctx, id)
}

// RevokeAllOwn revokes every key of user ("revoke all my API keys") and
// returns how many it revoked. Each revocation is announced on its own
// (RevokedAPIKey), as Revoke does, so caches drop exactly those keys and
// the user's sessions are untouched. A key created while this runs is
// either seen and revoked, or created after it and kept.
func (k *APIKeys) RevokeAllOwn(ctx context.Context, user string) (int, error) {
	ids, err := k.rdb.SMembers(ctx, userAPIKeysKey(user)).Result()
	if err != nil {
		return 0, fmt.Errorf("revoke api keys of %s: %w", user, err)
	}
	n := 0
	for _, id := range ids {
		err := k.Revoke(ctx, id)
		if errors.Is(err, ErrNotFound) {
			// Expired and cleaned up by Redis: drop the stale index entry.
			_ = k.rdb.SRem(ctx, userAPIKeysKey(user), id).Err()
			continue
		}
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// List returns every key, oldest first.
func (k *APIKeys) List(ctx context.Context) ([]APIKey, error) {
	entries, err := k.rdb.ZRangeWithScores(ctx, KeyAPIKeyIndex, 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	ids := make([]string, len(entries))
	created := make(map[string]float64, len(entries))
	for i, e := range entries {
		ids[i], _ = e.Member.(string)
		created[ids[i]] = e.Score
	}
	keys, gone, err := k.describe(ctx, ids)
	// Tidy entries whose key is gone, but not one younger than a pending
	// key's TTL: its id key may not be written yet (step 1 of CreateKey
	// writes both at once, to different slots).
	var old []any
	limit := float64(k.now().Add(-pendingKeyTTL).UnixMilli())
	for _, id := range gone {
		if created[id] < limit {
			old = append(old, id)
		}
	}
	if len(old) > 0 {
		_ = k.rdb.ZRem(ctx, KeyAPIKeyIndex, old...).Err()
	}
	return keys, err
}

// Revoke deletes a key by id; the next request with it is refused. The
// record goes first (one key: the key stops working), then the id key and
// the index entries, so a failure midway leaves entries that point at
// nothing rather than a working key no index reaches.
func (k *APIKeys) Revoke(ctx context.Context, id string) error {
	h, err := k.rdb.Get(ctx, apiKeyIDKey(id)).Result()
	if errors.Is(err, redis.Nil) {
		return fmt.Errorf("revoke api key %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("revoke api key %s: %w", id, err)
	}
	user, err := dropKeyScript.Run(ctx, k.rdb, []string{apiKeyKey(h)}).Text()
	if err != nil {
		return fmt.Errorf("revoke api key %s: %w", id, err)
	}
	_, err = k.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, apiKeyIDKey(id))
		p.ZRem(ctx, KeyAPIKeyIndex, id)
		if user != "" {
			p.SRem(ctx, userAPIKeysKey(user), id)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("revoke api key %s: %w", id, err)
	}
	return k.rev.Announce(ctx, Revocation{Kind: RevokedAPIKey, ID: id})
}

// dropKeyScript deletes a key record and returns its user ("" if it was
// gone), in one step on one key.
var dropKeyScript = scripts.New(`
local user = redis.call("HGET", KEYS[1], "user")
redis.call("DEL", KEYS[1])
return user or ""
`)
