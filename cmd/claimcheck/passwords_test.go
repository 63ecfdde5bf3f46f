package main

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/redistest"
)

// TestDefaultPasswordRefusedUnlessAllowed: compose used to start every
// service with users.acl's shipped change-me-* passwords. Every command
// that connects to Redis refuses a REDIS_URL with one of them, saying why
// and how to go on, without printing a password and before touching Redis;
// --allow-example-passwords or CLAIMCHECK_ALLOW_EXAMPLE_PASSWORDS=1 lets a
// throwaway setup run.
func TestDefaultPasswordRefusedUnlessAllowed(t *testing.T) {
	ctx := context.Background()
	t.Setenv("CLAIMCHECK_ALLOW_EXAMPLE_PASSWORDS", "false")
	addr := redistest.Server(t, "--requirepass", "change-me-api")
	example := "redis://:change-me-api@" + addr + "/0"
	rdb := redis.NewClient(&redis.Options{Addr: addr, Password: "change-me-api"})
	defer rdb.Close()

	for _, args := range [][]string{
		{"api", "--addr", "127.0.0.1:0"}, {"worker"}, {"progress", "--addr", "127.0.0.1:0"},
		{"gateway", "--addr", "127.0.0.1:0"}, {"dev", "--addr", "127.0.0.1:0"},
		{"users", "add", "ann", "--password-stdin"}, {"apikeys", "create", "--user", "ann"},
	} {
		t.Run(args[0], func(t *testing.T) {
			t.Setenv("REDIS_URL", example)
			args := append(args, "--data-dir", t.TempDir(), "--log-level", "error")
			// An ended context: the refusal must come before any
			// connection, and a service that wrongly starts ends at once.
			ended, cancel := context.WithCancel(ctx)
			cancel()
			out, err := run(t, ended, "correct horse\n", args...)
			if err == nil {
				t.Fatalf("%v started with the example password:\n%s", args, out)
			}
			msg := err.Error()
			for _, want := range []string{"REDIS_URL uses the shipped example password 'change-me-api'", "deploy/redis/users.acl", "--allow-example-passwords", "CLAIMCHECK_ALLOW_EXAMPLE_PASSWORDS=1"} {
				if !strings.Contains(msg, want) {
					t.Errorf("%v: error %q lacks %q", args, msg, want)
				}
			}
			// Nothing was written: not a user, not a key, not a job.
			if n, err := rdb.DBSize(ctx).Result(); err != nil || n != 0 {
				t.Errorf("%v wrote %d keys to Redis before refusing (%v)", args, n, err)
			}
		})
	}

	// keys rotate tells running services through REDIS_URL: refused too,
	// after the key changed on disk.
	t.Setenv("REDIS_URL", example)
	if _, err := run(t, ctx, "", "keys", "rotate", "--dir", t.TempDir()); err == nil || !strings.Contains(err.Error(), "shipped example password") {
		t.Errorf("keys rotate announced with the example password: %v", err)
	}

	// The flag, or its variable, lets a throwaway setup go on.
	if out, err := run(t, ctx, "correct horse\n", "users", "add", "ann", "--password-stdin", "--allow-example-passwords"); err != nil {
		t.Fatalf("users add --allow-example-passwords: %v %s", err, out)
	}
	t.Setenv("CLAIMCHECK_ALLOW_EXAMPLE_PASSWORDS", "1")
	if out, err := run(t, ctx, "correct horse\n", "users", "add", "bob", "--password-stdin"); err != nil {
		t.Fatalf("users add with CLAIMCHECK_ALLOW_EXAMPLE_PASSWORDS=1: %v %s", err, out)
	}
	// One key per EXISTS: each user's record is in the user's own cluster slot.
	if n := rdb.Exists(ctx, "cc:user:{ann}").Val() + rdb.Exists(ctx, "cc:user:{bob}").Val(); n != 2 {
		t.Errorf("allowed users add wrote %d of 2 users", n)
	}

	// A password of one's own is not refused, and never appears in an error.
	t.Setenv("CLAIMCHECK_ALLOW_EXAMPLE_PASSWORDS", "false")
	t.Setenv("REDIS_URL", "redis://:change-me-api-not-really@"+addr+"/0")
	_, err := run(t, ctx, "", "users", "list")
	if err == nil || strings.Contains(err.Error(), "example password") || strings.Contains(err.Error(), "not-really") {
		t.Errorf("own (wrong) password: %v", err)
	}
}
