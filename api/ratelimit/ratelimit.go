// Package ratelimit applies claimcheck's request limits with
// go-redis/redis_rate (GCRA in one Lua call), so every api and gateway
// instance shares one budget per key. A refusal is a 429 problem+json with
// Retry-After.
//
// What is limited, and keyed by what:
//
//	login       per (user, client IP), per client IP,   password guessing,
//	            and per user (a slower backstop)        without locking owners out
//	exchange    per client IP, on the costly path       credential guessing, signing load
//	submit      per user                                queue flooding
//
// Sign-in is keyed so that an attacker's failures do not stop the owner
// signing in from elsewhere: what one address spends on a user is its own
// budget, and a successful sign-in resets it (so in effect only failures
// count against it). The per-address budget bounds one address across user
// names; the per-user backstop, which one address cannot exhaust on its
// own, bounds guessing from many — except for an address the user signed in
// from in the last 30 days, which the backstop does not hold, so attackers
// on many addresses cannot lock the owner out of their usual places either.
// IPv6 addresses count by their /64 (forwarded.AddressKey). User names are keyed in their canonical
// (lower-case) form, so ANN and ann share every budget.
//
// The gateway's cached exchange costs no Redis call and is not limited; a
// cache miss (a Redis lookup and a signature) and every refused credential
// are.
package ratelimit

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/api/problem"
)

// Limits are the budgets; a zero Limit means unlimited.
type Limits struct {
	// LoginPerUserIP is what one client address may try on one user; a
	// successful sign-in resets it.
	LoginPerUserIP redis_rate.Limit
	// LoginPerIP is what one client address may try across all users.
	LoginPerIP redis_rate.Limit
	// LoginPerUser is the backstop across all addresses. It must be more
	// than one address can spend on a user in the same period
	// (LoginPerUserIP), or one address could lock the user out again.
	LoginPerUser redis_rate.Limit
	Exchange     redis_rate.Limit
	Submit       redis_rate.Limit
}

// DefaultLimits suit people and scripts, not attackers:
//
//   - sign-in: ten tries a minute per (user, address) — a person mistyping
//     never meets it, and a success starts it afresh; thirty a minute per
//     address; and a thousand an hour per user from all addresses together.
//     One address can spend at most 600 an hour on a user (ten a minute),
//     under the backstop, so locking a user out takes at least two
//     addresses guessing flat out, and caps online guessing at 1000 an
//     hour per user however many addresses an attacker has;
//   - a hundred uncached exchanges a second per address;
//   - twenty submissions a second per user, bursting to a hundred.
func DefaultLimits() Limits {
	return Limits{
		LoginPerUserIP: redis_rate.PerMinute(10),
		LoginPerIP:     redis_rate.PerMinute(30),
		LoginPerUser:   redis_rate.PerHour(1000),
		Exchange:       redis_rate.Limit{Rate: 100, Period: time.Second, Burst: 200},
		Submit:         redis_rate.Limit{Rate: 20, Period: time.Second, Burst: 100},
	}
}

// KeyPrefix starts every rate-limit key in Redis (after redis_rate's own
// "rate:").
const KeyPrefix = "cc:"

// Limiter spends from named budgets.
type Limiter struct {
	Limits Limits
	rl     *redis_rate.Limiter
	rdb    redis.UniversalClient
}

// New returns a limiter on rdb.
func New(rdb redis.UniversalClient, limits Limits) *Limiter {
	return &Limiter{Limits: limits, rl: redis_rate.NewLimiter(rdb), rdb: rdb}
}

// Allow spends one event of limit from the budget named by kind and key. It
// returns a 429 *problem.Problem when the budget is spent. A nil Limiter or
// a zero limit allows everything.
func (l *Limiter) Allow(ctx context.Context, limit redis_rate.Limit, kind, key string) error {
	if l == nil || limit.IsZero() {
		return nil
	}
	res, err := l.rl.Allow(ctx, KeyPrefix+kind+":"+key, limit)
	if err != nil {
		return fmt.Errorf("rate limit %s: %w", kind, err)
	}
	if res.Allowed > 0 {
		return nil
	}
	return TooMany(kind, res.RetryAfter)
}

// Reset forgets what the budget named by kind and key has spent (a
// successful sign-in clears its (user, address) budget). A nil Limiter
// does nothing.
func (l *Limiter) Reset(ctx context.Context, kind, key string) error {
	if l == nil {
		return nil
	}
	if err := l.rl.Reset(ctx, KeyPrefix+kind+":"+key); err != nil {
		return fmt.Errorf("rate limit %s: reset: %w", kind, err)
	}
	return nil
}

// Remember notes key under kind for ttl (a (user, address) that signed in),
// for Remembered to find. A nil Limiter does nothing.
func (l *Limiter) Remember(ctx context.Context, kind, key string, ttl time.Duration) error {
	if l == nil {
		return nil
	}
	if err := l.rdb.Set(ctx, rememberKey(kind, key), "1", ttl).Err(); err != nil {
		return fmt.Errorf("rate limit %s: remember: %w", kind, err)
	}
	return nil
}

// Remembered reports whether Remember noted key under kind within its ttl.
// An error counts as not remembered: the caller's limit then holds.
func (l *Limiter) Remembered(ctx context.Context, kind, key string) bool {
	if l == nil {
		return false
	}
	n, err := l.rdb.Exists(ctx, rememberKey(kind, key)).Result()
	return err == nil && n == 1
}

// rememberKey sits beside redis_rate's keys ("rate:" + KeyPrefix), so the
// same ACL pattern covers both.
func rememberKey(kind, key string) string { return "rate:" + KeyPrefix + kind + ":" + key }

// TooMany is the 429 answer, with Retry-After in whole seconds (at least 1).
func TooMany(kind string, retryAfter time.Duration) *problem.Problem {
	secs := int(math.Ceil(retryAfter.Seconds()))
	if secs < 1 {
		secs = 1
	}
	return problem.New(http.StatusTooManyRequests, "rate-limited", "Too many requests",
		"the "+kind+" rate limit is spent; retry after "+strconv.Itoa(secs)+"s").
		WithHeader("Retry-After", strconv.Itoa(secs)).With("limit", kind)
}
