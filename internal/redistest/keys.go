package redistest

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
)

// EachPrimary runs fn on every primary behind rdb: each primary of a
// cluster client (concurrently), or the one server of any other client.
// A command without a key (KEYS, CLIENT KILL, INFO) sent through a cluster
// client reaches one node only, so a test that means "the server" sends it
// through EachPrimary to mean the same on a cluster run.
func EachPrimary(tb testing.TB, rdb redis.UniversalClient, fn func(ctx context.Context, c *redis.Client) error) {
	tb.Helper()
	ctx := context.Background()
	var err error
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, fn)
	case *redis.Client:
		err = fn(ctx, c)
	default:
		tb.Fatalf("redistest: EachPrimary on a %T", rdb)
	}
	if err != nil {
		tb.Fatalf("redistest: on every primary: %v", err)
	}
}

// Keys is every key matching pattern, sorted, on each primary behind rdb:
// KEYS through a cluster client asks one node only, so a test that looks
// for leftovers with rdb.Keys would miss the other primaries' keys.
func Keys(tb testing.TB, rdb redis.UniversalClient, pattern string) []string {
	tb.Helper()
	var mu sync.Mutex
	var all []string
	EachPrimary(tb, rdb, func(ctx context.Context, c *redis.Client) error {
		keys, err := c.Keys(ctx, pattern).Result()
		mu.Lock()
		all = append(all, keys...)
		mu.Unlock()
		return err
	})
	slices.Sort(all)
	return all
}

// TwoPrimaries returns plain clients of two different primaries of the
// cluster behind rdb (on a single server, two clients of it), each pinned
// to its node, as a cluster client's subscription is: for tests of what
// crosses from one node to another (a PUBLISH heard by a subscriber on
// another node).
func TwoPrimaries(tb testing.TB, rdb redis.UniversalClient) (a, b *redis.Client) {
	tb.Helper()
	if _, ok := rdb.(*redis.ClusterClient); !ok {
		return NewClient(tb).(*redis.Client), NewClient(tb).(*redis.Client)
	}
	var mu sync.Mutex
	var addrs []string
	EachPrimary(tb, rdb, func(_ context.Context, c *redis.Client) error {
		mu.Lock()
		addrs = append(addrs, c.Options().Addr)
		mu.Unlock()
		return nil
	})
	if len(addrs) < 2 {
		tb.Fatalf("redistest: a cluster of %d primaries", len(addrs))
	}
	slices.Sort(addrs)
	a, b = redis.NewClient(&redis.Options{Addr: addrs[0]}), redis.NewClient(&redis.Options{Addr: addrs[1]})
	tb.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	return a, b
}
