package main

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
)

// TestDevRedisNeedsPasswordShownOnlyInBanner: dev's embedded Redis listened
// unauthenticated on a loopback port, so any local process could read
// every session and key. It now requires a password generated at start,
// shown only in the banner (beside the API key, with a warning that both
// are for this machine only): without it a connection is refused, with it
// it works, and nothing is logged.
func TestDevRedisNeedsPasswordShownOnlyInBanner(t *testing.T) {
	t.Setenv("REDIS_URL", "")
	t.Setenv("CLAIMCHECK_DEV_API_KEY", "")
	ctx, cancel := context.WithCancel(context.Background())
	var out, logs syncBuffer
	done := make(chan error, 1)
	go func() {
		cmd := newRoot()
		cmd.SetArgs([]string{"dev", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--log-level", "debug"})
		cmd.SetOut(&out)
		cmd.SetErr(&logs)
		done <- cmd.ExecuteContext(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	redisRE := regexp.MustCompile(`Redis:\s+redis://:(\S+)@(127\.0\.0\.1:\d+)`)
	waitfor.True(t, 20*time.Second, func() bool { return strings.Contains(out.String(), "Try:") })
	banner := out.String()
	m := redisRE.FindStringSubmatch(banner)
	if m == nil {
		t.Fatalf("the banner shows no embedded Redis URL with a password:\n%s", banner)
	}
	pw, addr := m[1], m[2]
	if len(pw) < 20 {
		t.Errorf("embedded Redis password %d characters, want a generated one of at least 20", len(pw))
	}
	if !strings.Contains(banner, "for this machine only") {
		t.Errorf("the banner does not say its secrets are for this machine only:\n%s", banner)
	}
	if strings.Contains(logs.String(), pw) {
		t.Error("the Redis password is in the log")
	}

	// Without the password: refused, and nothing can be read.
	anon := redis.NewClient(&redis.Options{Addr: addr})
	defer anon.Close()
	if err := anon.Get(ctx, "cc:users").Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Fatalf("embedded Redis without a password: %v, want NOAUTH", err)
	}
	wrong := redis.NewClient(&redis.Options{Addr: addr, Password: "guess"})
	defer wrong.Close()
	if err := wrong.Ping(ctx).Err(); err == nil {
		t.Fatal("embedded Redis accepts a wrong password")
	}
	// With it: the dev user's records are there.
	rdb := redis.NewClient(&redis.Options{Addr: addr, Password: pw})
	defer rdb.Close()
	if n, err := rdb.Exists(ctx, "cc:user:{dev}").Result(); err != nil || n != 1 {
		t.Fatalf("embedded Redis with the banner's password: %d %v", n, err)
	}
}
