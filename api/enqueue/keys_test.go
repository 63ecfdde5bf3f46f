package enqueue_test

import (
	"context"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/api/authn"
	"github.com/claimcheck/claimcheck/internal/identity"
)

// keysLike is every key matching pattern, on each primary of a cluster
// (KEYS on a cluster client asks one node only), for tests that look for
// leftovers.
func keysLike(t testing.TB, rdb redis.UniversalClient, pattern string) []string {
	t.Helper()
	ctx := context.Background()
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		keys, err := rdb.Keys(ctx, pattern).Result()
		if err != nil {
			t.Fatal(err)
		}
		return keys
	}
	var mu sync.Mutex
	var all []string
	err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		keys, err := c.Keys(ctx, pattern).Result()
		mu.Lock()
		all = append(all, keys...)
		mu.Unlock()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return all
}

// credentials issues API keys to the tests' callers.
type credentials interface {
	authn.Authenticator
	issue(tb testing.TB, spec identity.KeySpec) string
}

func newCredentials(rdb redis.Cmdable) credentials { return realKeys{identity.NewAPIKeys(rdb, nil)} }

type realKeys struct{ *identity.APIKeys }

func (k realKeys) issue(tb testing.TB, spec identity.KeySpec) string {
	tb.Helper()
	sec, _, err := k.CreateKey(context.Background(), spec)
	if err != nil {
		tb.Fatalf("create api key: %v", err)
	}
	return sec.Reveal()
}
