package main

import (
	"context"
	"strings"
	"testing"

	"github.com/claimcheck/claimcheck/internal/redistest"
)

// TestUsersMigrateLayout: `users migrate-layout` moves a user record of
// the untagged layout to its tagged name, once.
func TestUsersMigrateLayout(t *testing.T) {
	rdb := redistest.Client(t)
	ctx := context.Background()
	t.Setenv("REDIS_URL", redistest.URL())
	rdb.HSet(ctx, "cc:user:ann", "name", "ann", "pw", "x", "blocked", "1")
	rdb.SAdd(ctx, "cc:users", "ann")
	if out, err := run(t, ctx, "", "users", "migrate-layout"); err != nil || !strings.Contains(out, "moved 1 keys") {
		t.Fatalf("migrate-layout: %v %s", err, out)
	}
	if v := rdb.HGet(ctx, "cc:user:{ann}", "blocked").Val(); v != "1" || rdb.Exists(ctx, "cc:user:ann").Val() != 0 {
		t.Fatalf("after the migration: blocked %q, old record left %d", v, rdb.Exists(ctx, "cc:user:ann").Val())
	}
	if out, err := run(t, ctx, "", "users", "migrate-layout"); err != nil || !strings.Contains(out, "moved 0 keys") {
		t.Fatalf("second run: %v %s", err, out)
	}
}
