package enqueue_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/api/authn"
	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/secret"
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

// credentials issues API keys to the tests' callers: identity's own on one
// server. On a cluster run it is an in-memory stand-in: identity's API-key
// scripts span slots until its keys are tagged (the identity branch), and
// what these tests pin is submission, not key storage.
type credentials interface {
	authn.Authenticator
	issue(tb testing.TB, spec identity.KeySpec) string
}

func newCredentials(rdb redis.Cmdable) credentials {
	if _, ok := rdb.(*redis.ClusterClient); ok {
		return &standInKeys{keys: map[string]*identity.Principal{}}
	}
	return realKeys{identity.NewAPIKeys(rdb, nil)}
}

type realKeys struct{ *identity.APIKeys }

func (k realKeys) issue(tb testing.TB, spec identity.KeySpec) string {
	tb.Helper()
	sec, _, err := k.CreateKey(context.Background(), spec)
	if err != nil {
		tb.Fatalf("create api key: %v", err)
	}
	return sec.Reveal()
}

type standInKeys struct {
	mu   sync.Mutex
	keys map[string]*identity.Principal
}

func (k *standInKeys) issue(tb testing.TB, spec identity.KeySpec) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	scopes := spec.Scopes
	if len(scopes) == 0 {
		scopes = identity.AllScopes
	}
	s := fmt.Sprintf("cc_test_%d", len(k.keys))
	k.keys[s] = &identity.Principal{UserID: spec.User, Via: "api_key", CredentialID: s, Scopes: scopes}
	return s
}

func (k *standInKeys) Authenticate(_ context.Context, s secret.Secret) (*identity.Principal, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if p, ok := k.keys[s.Reveal()]; ok {
		return p, nil
	}
	return nil, fmt.Errorf("test key: %w", identity.ErrUnauthenticated)
}
