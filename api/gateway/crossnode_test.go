package gateway_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
)

// mute drops every PUBLISH its client sends, so a test decides through
// which connection an announcement goes.
type mute struct{}

func (mute) DialHook(next redis.DialHook) redis.DialHook { return next }
func (mute) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if strings.EqualFold(cmd.Name(), "publish") {
			return nil
		}
		return next(ctx, cmd)
	}
}
func (mute) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestRevocationPublishedThroughAnotherNodePurges: a gateway whose cache
// listens through node A drops a cached token when the revocation is
// published through node B, as happens on a cluster, where a subscription
// sits on one node and each PUBLISH enters wherever the publisher's client
// sends it.
func TestRevocationPublishedThroughAnotherNodePurges(t *testing.T) {
	gw := newFixture(t, nil)
	nodeA, nodeB := redistest.TwoPrimaries(t, gw.rdb)
	if redistest.OnCluster() && nodeA.Options().Addr == nodeB.Options().Addr {
		t.Fatal("both clients are on one node")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan struct{})
	go func() { _ = identity.ListenRevocations(ctx, nodeA, gw.gw.Purge, ready) }()
	<-ready

	// The revoking side writes through its own client, whose own PUBLISH
	// is muted, and announces through node B.
	quiet := redistest.NewClient(t)
	quiet.AddHook(mute{})
	admin := identity.NewDirectory(quiet, identity.SessionConfig{}, &identity.Argon2Params{Memory: 64, Time: 1, Threads: 1}, nil)
	sess, info, err := admin.Sessions.Create(ctx, "ann", "", "")
	if err != nil {
		t.Fatal(err)
	}
	bearer := []string{"Authorization", "Bearer " + sess.Reveal()}
	gw.internalToken(t, gw.exchange(t, "GET", "/v1/auth/exchange", bearer...))
	gw.internalToken(t, gw.exchange(t, "GET", "/v1/auth/exchange", bearer...))
	if n := gw.auth.calls.Load(); n != 1 {
		t.Fatalf("the token was not cached: %d lookups", n)
	}
	if err := admin.Sessions.Revoke(ctx, "ann", info.ID); err != nil {
		t.Fatal(err)
	}
	// Muted: the cache still answers, from memory, for the revoked session.
	if r := gw.exchange(t, "GET", "/v1/auth/exchange", bearer...); r.StatusCode != 200 || gw.auth.calls.Load() != 1 {
		t.Fatalf("before the announcement: %d after %d lookups, want the cached 200", r.StatusCode, gw.auth.calls.Load())
	}
	if err := identity.NewRevocations(nodeB).Announce(ctx, identity.Revocation{Kind: identity.RevokedSession, ID: info.ID}); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, 5*time.Second, func() bool {
		return gw.exchange(t, "GET", "/v1/auth/exchange", bearer...).StatusCode == 401
	})
}
