package gateway

import (
	"crypto/sha256"
	"sync"
	"sync/atomic"
	"time"

	"github.com/claimcheck/claimcheck/internal/identity"
)

// minted is one cached internal token and what it was minted for.
type minted struct {
	token string
	user  string
	// authorization and userHeader are the response header values, built
	// once: the cached path only assigns them.
	authorization, userHeader []string
	credKind                  string // identity.RevokedSession or identity.RevokedAPIKey
	credID                    string
	kid                       string
	// useUntil is when the cache stops handing the token out: well before
	// its exp, so a client never receives a token about to expire, and
	// never after the credential itself expires.
	useUntil time.Time
}

// cacheShards spreads the lock; the cached path must scale with cores.
const cacheShards = 32

// tokenCache maps the SHA-256 of a credential to the token minted for it.
// It is bounded: when full, expired entries are swept and, if that frees
// nothing, new tokens are simply not cached.
//
// A token is minted after its credential was looked up, and a revocation can
// land in between: its purge finds nothing to delete, and the entry stored a
// moment later would outlive the revocation by the cache's whole lifetime.
// So every purge advances a generation, a miss notes the generation before
// its lookup, and put refuses an entry whose generation has passed.
type tokenCache struct {
	shards   [cacheShards]cacheShard
	perShard int
	gen      atomic.Uint64
}

type cacheShard struct {
	mu sync.RWMutex
	m  map[[32]byte]*minted
}

func newTokenCache(maxEntries int) *tokenCache {
	c := &tokenCache{perShard: max(maxEntries/cacheShards, 1)}
	for i := range c.shards {
		c.shards[i].m = map[[32]byte]*minted{}
	}
	return c
}

func credentialHash(cred string) [32]byte { return sha256.Sum256([]byte(cred)) }

func (c *tokenCache) shard(h [32]byte) *cacheShard { return &c.shards[h[0]%cacheShards] }

// get returns a usable entry for h at now whose key is kid.
func (c *tokenCache) get(h [32]byte, now time.Time, kid string) *minted {
	s := c.shard(h)
	s.mu.RLock()
	e := s.m[h]
	s.mu.RUnlock()
	if e == nil || !now.Before(e.useUntil) || e.kid != kid {
		return nil
	}
	return e
}

// generation is taken before a credential lookup and handed to put.
func (c *tokenCache) generation() uint64 { return c.gen.Load() }

// put stores e unless a purge has happened since gen was taken. (Checked
// under the shard lock, and purge advances the generation before it takes
// any: an entry is either refused here or deleted by that purge.)
func (c *tokenCache) put(h [32]byte, e *minted, now time.Time, gen uint64) {
	s := c.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.gen.Load() != gen {
		return
	}
	if len(s.m) >= c.perShard {
		for k, old := range s.m {
			if !now.Before(old.useUntil) {
				delete(s.m, k)
			}
		}
		if len(s.m) >= c.perShard {
			return
		}
	}
	s.m[h] = e
}

// purge forgets every entry rev covers, and keeps lookups already under way
// from storing what they mint.
func (c *tokenCache) purge(rev identity.Revocation) int {
	c.gen.Add(1)
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for k, e := range s.m {
			if rev.Kind == identity.RevokedAll ||
				(rev.Kind == identity.RevokedUser && e.user == rev.ID) ||
				(rev.Kind == e.credKind && e.credID == rev.ID) {
				delete(s.m, k)
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}

func (c *tokenCache) len() int {
	n := 0
	for i := range c.shards {
		c.shards[i].mu.RLock()
		n += len(c.shards[i].m)
		c.shards[i].mu.RUnlock()
	}
	return n
}
