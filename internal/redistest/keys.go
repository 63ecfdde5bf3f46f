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
