// Package pubkeys publishes in Redis the public halves of the keys that
// processes other than the api hold (the worker fleet's receipt keys, the
// webhook deliverer's signing and link keys), so that the api can list
// them in its JWKS and the progress service can verify with them, wherever
// those processes run. Only public keys ever go to Redis.
//
// A published receipt key stays published: a receipt signed by a retired
// key must still verify for as long as its holder keeps it. Webhook and
// webhook-link keys are replaced instead (Replace): a retired one is
// withdrawn when the deliverers next start.
//
// The trust this adds is Redis's: whoever may write cc:pubkeys:* could
// publish a key of their own. deploy/redis/users.acl lets only the workers
// write it; every other process only reads it.
package pubkeys

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/keyslot"
	"github.com/claimcheck/claimcheck/tokens"
)

// KeyPrefix prefixes every key of the package, for the ACL patterns.
const KeyPrefix = "cc:pubkeys:"

// Key is the hash of kind's published keys: kid → base64url public key.
func Key(kind string) string { return KeyPrefix + keyslot.Tag(kind) }

// Publish adds every key of ks to kind's published keys.
func Publish(ctx context.Context, rdb redis.UniversalClient, kind string, ks *tokens.KeySet) error {
	doc := ks.JWKS()
	if len(doc.Keys) == 0 {
		return nil
	}
	values := make([]any, 0, 2*len(doc.Keys))
	for _, k := range doc.Keys {
		values = append(values, k.Kid, k.X)
	}
	if err := rdb.HSet(ctx, Key(kind), values...).Err(); err != nil {
		return fmt.Errorf("publish %s keys: %w", kind, err)
	}
	return nil
}

// Replace makes ks's keys kind's only published keys, withdrawing every
// other (one transaction on one key). It is for kinds whose keys vouch for
// nothing once retired, so that `keys retire` after a theft ends trust in
// the stolen key at every reader within Source.MaxAge: webhook signing
// keys (receivers read them from the api's JWKS) and webhook-link keys
// (the progress service takes links signed by any published one). Receipt
// keys are Publish'ed instead: a receipt outlives its key's retirement.
// Every publisher of kind must hold the same key directory.
func Replace(ctx context.Context, rdb redis.UniversalClient, kind string, ks *tokens.KeySet) error {
	doc := ks.JWKS()
	if len(doc.Keys) == 0 {
		return fmt.Errorf("replace %s keys: the key set is empty", kind)
	}
	values := make([]any, 0, 2*len(doc.Keys))
	for _, k := range doc.Keys {
		values = append(values, k.Kid, k.X)
	}
	_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, Key(kind))
		p.HSet(ctx, Key(kind), values...)
		return nil
	})
	if err != nil {
		return fmt.Errorf("replace %s keys: %w", kind, err)
	}
	return nil
}

// Source reads kind's published keys, keeping a copy for MaxAge (a copy
// with no keys for MinRefresh) and reading again (at most once per
// MinRefresh) when asked for a kid it lacks. A key
// whose kid is not its thumbprint is skipped.
type Source struct {
	rdb  redis.UniversalClient
	kind string
	// MaxAge is how long a reading is used (10 s).
	MaxAge time.Duration
	// MinRefresh spaces readings caused by unknown kids (1 s).
	MinRefresh time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time

	mu     sync.Mutex
	keys   map[string]ed25519.PublicKey
	readAt time.Time
}

// NewSource returns a source of kind's published keys.
func NewSource(rdb redis.UniversalClient, kind string) *Source {
	return &Source{rdb: rdb, kind: kind, MaxAge: 10 * time.Second, MinRefresh: time.Second, Now: time.Now}
}

func (s *Source) read(ctx context.Context, force bool) (map[string]ed25519.PublicKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.Now()
	age := now.Sub(s.readAt)
	// A reading with no keys is what an api sees before the first worker
	// starts: kept only for MinRefresh, so that the keys of a worker that
	// starts next are listed within a second, not after MaxAge.
	fresh := age < s.MaxAge && (len(s.keys) > 0 || age < s.MinRefresh)
	if s.keys != nil && fresh && (!force || age < s.MinRefresh) {
		return s.keys, nil
	}
	m, err := s.rdb.HGetAll(ctx, Key(s.kind)).Result()
	if err != nil {
		if s.keys != nil {
			return s.keys, nil // keep what we had
		}
		return nil, fmt.Errorf("read %s keys: %w", s.kind, err)
	}
	keys := make(map[string]ed25519.PublicKey, len(m))
	for kid, x := range m {
		raw, err := base64.RawURLEncoding.DecodeString(x)
		if err != nil || len(raw) != ed25519.PublicKeySize || tokens.Thumbprint(raw) != kid {
			continue
		}
		keys[kid] = raw
	}
	s.keys, s.readAt = keys, now
	return keys, nil
}

// PublicKey implements tokens.KeySource: an unknown kid is
// tokens.ErrUnknownKey, Redis unreachable before any reading
// tokens.ErrKeysUnavailable.
func (s *Source) PublicKey(kid string) (ed25519.PublicKey, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	keys, err := s.read(ctx, false)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", tokens.ErrKeysUnavailable, err)
	}
	if k, ok := keys[kid]; ok {
		return k, nil
	}
	if keys, err = s.read(ctx, true); err != nil {
		return nil, fmt.Errorf("%w: %w", tokens.ErrKeysUnavailable, err)
	}
	if k, ok := keys[kid]; ok {
		return k, nil
	}
	return nil, tokens.ErrUnknownKey
}

// JWKS returns the published keys tagged with the source's kind; none when
// Redis cannot be read.
func (s *Source) JWKS(ctx context.Context) tokens.JWKS {
	keys, _ := s.read(ctx, false)
	set := make([]*tokens.Key, 0, len(keys))
	for kid, pub := range keys {
		set = append(set, &tokens.Key{ID: kid, Public: pub})
	}
	if len(set) == 0 {
		return tokens.JWKS{Keys: []tokens.JWK{}}
	}
	ks, err := tokens.NewKeySet(nil, set...)
	if err != nil {
		return tokens.JWKS{Keys: []tokens.JWK{}}
	}
	return ks.JWKSAs(s.kind)
}

var _ tokens.KeySource = (*Source)(nil)
