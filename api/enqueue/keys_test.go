package enqueue_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/api/authn"
	"github.com/claimcheck/claimcheck/internal/identity"
)

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
