package scripts_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	_ "github.com/claimcheck/claimcheck/internal/identity"
	_ "github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	_ "github.com/claimcheck/claimcheck/internal/registry"
	"github.com/claimcheck/claimcheck/internal/scripts"
)

// TestEveryScriptLoadsOnEveryNode compiles each of claimcheck's scripts on
// every primary of a real Redis Cluster. What each one does there is the
// business of its package's tests, which CI runs again on a cluster
// (CLAIMCHECK_TEST_REDIS=cluster), where a script touching two slots fails.
func TestEveryScriptLoadsOnEveryNode(t *testing.T) {
	all := scripts.All()
	if len(all) < 30 {
		t.Fatalf("only %d scripts listed: a package makes its scripts without scripts.New", len(all))
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: redistest.Cluster(t)})
	defer c.Close()
	ctx := context.Background()
	for _, s := range all {
		if err := s.Load(ctx, c).Err(); err != nil {
			t.Errorf("script %s: %v", s.Hash(), err)
		}
	}
	var nodes atomic.Int32 // ForEachMaster calls the nodes at once
	err := c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		nodes.Add(1)
		for _, s := range all {
			ok, err := n.ScriptExists(ctx, s.Hash()).Result()
			if err != nil || !ok[0] {
				t.Errorf("script %s is not on %s: %v", s.Hash(), n.Options().Addr, err)
			}
		}
		return nil
	})
	if err != nil || nodes.Load() != 3 {
		t.Fatalf("%d primaries: %v", nodes.Load(), err)
	}
}
