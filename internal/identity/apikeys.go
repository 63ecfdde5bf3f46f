// Package identity authenticates people: API keys today, sessions and
// passwords next. Credentials are opaque random secrets stored only as their
// SHA-256, so a copy of Redis does not hand out working keys, and revoking one
// takes effect on the very next request (there is no cache to wait out).
//
// The progress service must never import this package; a test in
// api/progress walks its import graph to keep it so.
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
	"strconv"
	"strings"
	"time"

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

// Principal is who a request acts for.
type Principal struct {
	// UserID names the user; job tokens carry it as sub.
	UserID string
	// Via says how the caller authenticated ("api_key", later "session").
	Via string
	// CredentialID identifies the credential (an API key id) for audit logs.
	CredentialID string
}

// APIKey is a stored key's public description; the secret is never stored.
type APIKey struct {
	ID        string     `json:"id"`
	User      string     `json:"user"`
	Name      string     `json:"name"`
	CreatedAt time.Time  `json:"created_at"`
	LastUsed  *time.Time `json:"last_used,omitempty"`
}

// APIKeys stores and checks API keys.
type APIKeys struct {
	rdb redis.Cmdable
	now func() time.Time
}

// NewAPIKeys returns an API key store on rdb (a client, or an
// auto-pipeliner in front of one). now may be nil (time.Now).
func NewAPIKeys(rdb redis.Cmdable, now func() time.Time) *APIKeys {
	if now == nil {
		now = time.Now
	}
	return &APIKeys{rdb: rdb, now: now}
}

var userName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// ValidUserName reports whether name is acceptable as a user id: it appears
// in tokens and logs, so it is kept short and plain.
func ValidUserName(name string) bool { return userName.MatchString(name) }

// RevokeUser revokes every key of user.
func (k *APIKeys) RevokeUser(ctx context.Context, user string) error {
	ids, err := k.rdb.SMembers(ctx, userAPIKeysKey(user)).Result()
	if err != nil {
		return fmt.Errorf("revoke api keys of %s: %w", user, err)
	}
	for _, id := range ids {
		if err := k.Revoke(ctx, id); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	return k.rdb.Del(ctx, userAPIKeysKey(user)).Err()
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

// Create makes a new key for user. The secret is returned once and only its
// hash is kept. presetSecret, when non-empty, is used instead of a random one
// (the dev command's CLAIMCHECK_DEV_API_KEY); it must carry the key prefix.
func (k *APIKeys) Create(ctx context.Context, user, name string, presetSecret secret.Secret) (secret.Secret, *APIKey, error) {
	if !ValidUserName(user) {
		return "", nil, fmt.Errorf("user %q: use 1-64 letters, digits, '.', '_', '@' or '-'", user)
	}
	raw := presetSecret.Reveal()
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
	now := k.now().UTC()
	key := &APIKey{ID: hex.EncodeToString(idBytes), User: user, Name: name, CreatedAt: time.UnixMilli(now.UnixMilli()).UTC()}
	h := hashSecret(raw)
	_, err := k.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, apiKeyKey(h), "id", key.ID, "user", user, "name", name, "created", now.UnixMilli())
		p.Set(ctx, apiKeyIDKey(key.ID), h, 0)
		p.ZAdd(ctx, KeyAPIKeyIndex, redis.Z{Score: float64(now.UnixMilli()), Member: key.ID})
		p.SAdd(ctx, userAPIKeysKey(user), key.ID)
		return nil
	})
	if err != nil {
		return "", nil, fmt.Errorf("create api key: %w", err)
	}
	return secret.Secret(raw), key, nil
}

// Authenticate resolves an API key to its principal in one round trip.
func (k *APIKeys) Authenticate(ctx context.Context, s secret.Secret) (*Principal, error) {
	raw := s.Reveal()
	if !strings.HasPrefix(raw, APIKeyPrefix) || len(raw) > 256 {
		return nil, ErrUnauthenticated
	}
	vals, err := k.rdb.HMGet(ctx, apiKeyKey(hashSecret(raw)), "id", "user").Result()
	if err != nil {
		return nil, fmt.Errorf("look up api key: %w", err)
	}
	id, _ := vals[0].(string)
	user, _ := vals[1].(string)
	if id == "" || user == "" {
		return nil, ErrUnauthenticated
	}
	return &Principal{UserID: user, Via: "api_key", CredentialID: id}, nil
}

// List returns every key, oldest first.
func (k *APIKeys) List(ctx context.Context) ([]APIKey, error) {
	ids, err := k.rdb.ZRange(ctx, KeyAPIKeyIndex, 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	keys := make([]APIKey, 0, len(ids))
	for _, id := range ids {
		h, err := k.rdb.Get(ctx, apiKeyIDKey(id)).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list api keys: %w", err)
		}
		rec, err := k.rdb.HGetAll(ctx, apiKeyKey(h)).Result()
		if err != nil {
			return nil, fmt.Errorf("list api keys: %w", err)
		}
		if rec["id"] == "" {
			continue
		}
		key := APIKey{ID: rec["id"], User: rec["user"], Name: rec["name"]}
		if msec, err := strconv.ParseInt(rec["created"], 10, 64); err == nil {
			key.CreatedAt = time.UnixMilli(msec).UTC()
		}
		keys = append(keys, key)
	}
	return keys, nil
}

// Revoke deletes a key by id; the next request with it is refused.
func (k *APIKeys) Revoke(ctx context.Context, id string) error {
	h, err := k.rdb.Get(ctx, apiKeyIDKey(id)).Result()
	if errors.Is(err, redis.Nil) {
		return fmt.Errorf("revoke api key %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("revoke api key %s: %w", id, err)
	}
	user, err := k.rdb.HGet(ctx, apiKeyKey(h), "user").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("revoke api key %s: %w", id, err)
	}
	_, err = k.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, apiKeyKey(h), apiKeyIDKey(id))
		p.ZRem(ctx, KeyAPIKeyIndex, id)
		if user != "" {
			p.SRem(ctx, userAPIKeysKey(user), id)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("revoke api key %s: %w", id, err)
	}
	return nil
}
