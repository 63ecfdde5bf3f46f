package tokens

import (
	"sync"
	"time"
)

// verifiedCache remembers job tokens that verified, by the SHA-256 of the
// token, until their exp. It is bounded: when full, expired entries are
// swept, and if none were, an arbitrary one makes room (Go's map order),
// which costs that token one more signature check, nothing else.
type verifiedCache struct {
	mu  sync.RWMutex
	max int
	m   map[[32]byte]verifiedEntry
}

type verifiedEntry struct {
	claims JobClaims
	kid    string
}

func newVerifiedCache(max int) *verifiedCache {
	return &verifiedCache{max: max, m: make(map[[32]byte]verifiedEntry)}
}

// get returns a copy of the claims (callers may not share them) and the kid
// that verified them, or nil once they expired.
func (c *verifiedCache) get(h [32]byte, now time.Time) (*JobClaims, string) {
	c.mu.RLock()
	e, ok := c.m[h]
	c.mu.RUnlock()
	if !ok || now.Unix() >= e.claims.ExpiresAt {
		return nil, ""
	}
	claims := e.claims
	return &claims, e.kid
}

func (c *verifiedCache) put(h [32]byte, claims *JobClaims, kid string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		for k, e := range c.m {
			if now.Unix() >= e.claims.ExpiresAt {
				delete(c.m, k)
			}
		}
		for k := range c.m {
			if len(c.m) < c.max {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[h] = verifiedEntry{claims: *claims, kid: kid}
}

func (c *verifiedCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
