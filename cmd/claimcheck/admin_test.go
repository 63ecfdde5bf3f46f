package main

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/secret"
	"github.com/google/uuid"
	"github.com/hibiken/asynq"
)

func TestMain(m *testing.M) { redistest.Main(m) }

func TestUsersAndAPIKeysCommands(t *testing.T) {
	rdb := redistest.Client(t)
	ctx := context.Background()
	t.Setenv("REDIS_URL", redistest.URL())
	dir := identity.NewDirectory(rdb, identity.SessionConfig{}, nil, nil)

	if out, err := run(t, ctx, "correct horse\n", "users", "add", "ann", "--password-stdin"); err != nil || !strings.Contains(out, "added user ann") {
		t.Fatalf("users add: %v %s", err, out)
	}
	if _, err := dir.Users.CheckPassword(ctx, "ann", "correct horse"); err != nil {
		t.Fatalf("password from stdin not stored: %v", err)
	}
	if _, err := run(t, ctx, "short\n", "users", "add", "bob", "--password-stdin"); err == nil {
		t.Fatal("accepted a short password")
	}
	if _, err := run(t, ctx, "", "users", "add", "carl"); err == nil || !strings.Contains(err.Error(), "password-stdin") {
		t.Fatalf("no terminal and no --password-stdin: %v", err)
	}
	if _, err := run(t, ctx, "battery staple\n", "users", "passwd", "ann", "--password-stdin"); err != nil {
		t.Fatal(err)
	}
	if _, err := dir.Users.CheckPassword(ctx, "ann", "battery staple"); err != nil {
		t.Fatalf("passwd: %v", err)
	}

	// User names are one case: Dora is dora.
	if out, err := run(t, ctx, "correct horse\n", "users", "add", "Dora", "--password-stdin"); err != nil || !strings.Contains(out, "added user dora") {
		t.Fatalf("users add Dora: %v %s", err, out)
	}
	if _, err := run(t, ctx, "correct horse\n", "users", "add", "DORA", "--password-stdin"); err == nil {
		t.Fatal("DORA added beside dora")
	}
	if _, err := dir.Users.CheckPassword(ctx, "dora", "correct horse"); err != nil {
		t.Fatalf("Dora signing in as dora: %v", err)
	}
	// No key for a user who does not exist.
	if out, err := run(t, ctx, "", "apikeys", "create", "--user", "nobody"); err == nil || !errors.Is(err, identity.ErrUserNotFound) {
		t.Fatalf("apikeys create for nobody: %v %q", err, out)
	}

	// apikeys create prints the key once, on stdout alone.
	out, err := run(t, ctx, "", "apikeys", "create", "--user", "ann", "--name", "ci")
	key := strings.TrimSpace(out)
	if err != nil || !regexp.MustCompile(`^cck_[A-Za-z0-9_-]{40,}$`).MatchString(key) {
		t.Fatalf("apikeys create: %v %q", err, out)
	}
	p, err := dir.Authenticate(ctx, secret.Secret(key))
	if err != nil || p.UserID != "ann" {
		t.Fatalf("created key: %+v %v", p, err)
	}
	out, _ = run(t, ctx, "", "apikeys", "list")
	if !strings.Contains(out, p.CredentialID) || !strings.Contains(out, "ci") || strings.Contains(out, key) {
		t.Fatalf("apikeys list: %s", out)
	}
	out, _ = run(t, ctx, "", "users", "list")
	if !regexp.MustCompile(`ann\s+false`).MatchString(out) {
		t.Fatalf("users list: %s", out)
	}

	// Block ends the key at once; unblock does not bring it back.
	if _, err := run(t, ctx, "", "users", "block", "ann"); err != nil {
		t.Fatal(err)
	}
	if _, err := dir.Authenticate(ctx, secret.Secret(key)); !errors.Is(err, identity.ErrUnauthenticated) {
		t.Fatalf("key after block: %v", err)
	}
	if out, _ := run(t, ctx, "", "users", "list"); !regexp.MustCompile(`ann\s+true`).MatchString(out) {
		t.Fatalf("users list after block: %s", out)
	}
	if _, err := run(t, ctx, "", "users", "unblock", "ann"); err != nil {
		t.Fatal(err)
	}
	if _, err := dir.Users.CheckPassword(ctx, "ann", "battery staple"); err != nil {
		t.Fatalf("after unblock: %v", err)
	}

	// Revoke by id.
	out, _ = run(t, ctx, "", "apikeys", "create", "--user", "ann")
	p, _ = dir.Authenticate(ctx, secret.Secret(strings.TrimSpace(out)))
	if _, err := run(t, ctx, "", "apikeys", "revoke", p.CredentialID); err != nil {
		t.Fatal(err)
	}
	if _, err := dir.Authenticate(ctx, secret.Secret(strings.TrimSpace(out))); !errors.Is(err, identity.ErrUnauthenticated) {
		t.Fatalf("revoked key: %v", err)
	}
	if _, err := run(t, ctx, "", "apikeys", "revoke", p.CredentialID); err == nil {
		t.Fatal("revoking twice succeeded")
	}
}

func TestBlockWithCancelJobs(t *testing.T) {
	rdb := redistest.Client(t)
	ctx := context.Background()
	t.Setenv("REDIS_URL", redistest.URL())
	store := jobs.NewStore(rdb, nil)
	client := asynq.NewClientFromRedisClient(rdb)
	submit := func(owner string) string {
		id := uuid.Must(uuid.NewV7()).String()
		if _, err := store.Create(ctx, jobs.NewJob{ID: id, Type: "sleep", Owner: owner, Queue: "default", Timeout: time.Minute, TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
		if _, err := client.Enqueue(asynq.NewTask("sleep", nil), asynq.TaskID(id), asynq.Queue("default")); err != nil {
			t.Fatal(err)
		}
		return id
	}
	if _, err := run(t, ctx, "correct horse\n", "users", "add", "ann", "--password-stdin"); err != nil {
		t.Fatal(err)
	}
	ann1, ann2, bob := submit("ann"), submit("ann"), submit("bob")
	if _, err := store.Cancel(ctx, ann2, time.Hour); err != nil { // already ended: not counted
		t.Fatal(err)
	}
	ann3 := submit("ann")

	out, err := run(t, ctx, "", "users", "block", "ann", "--cancel-jobs")
	if err != nil || !strings.Contains(out, "cancelled 2 active jobs of ann") {
		t.Fatalf("block --cancel-jobs: %v %s", err, out)
	}
	for id, want := range map[string]jobs.State{ann1: jobs.StateCanceled, ann3: jobs.StateCanceled, bob: jobs.StateQueued} {
		if j, err := store.Get(ctx, id); err != nil || j.State != want {
			t.Fatalf("job %s: %v %v, want %s", id, j.State, err, want)
		}
	}
	// The cancelled jobs' tasks are gone from the queue; bob's is not.
	insp := asynq.NewInspectorFromRedisClient(rdb)
	if _, err := insp.GetTaskInfo("default", ann1); err == nil {
		t.Fatal("cancelled job's task still queued")
	}
	if _, err := insp.GetTaskInfo("default", bob); err != nil {
		t.Fatalf("bob's task: %v", err)
	}
}

// TestBlockWithRevokeJobTokens: a job token a thief re-issued with a stolen
// session outlives the session by design; blocking with --revoke-job-tokens
// raises the token epoch of every job of the user, finished ones included,
// and of no one else's.
func TestBlockWithRevokeJobTokens(t *testing.T) {
	rdb := redistest.Client(t)
	ctx := context.Background()
	t.Setenv("REDIS_URL", redistest.URL())
	store := jobs.NewStore(rdb, nil)
	submit := func(owner string) string {
		id := uuid.Must(uuid.NewV7()).String()
		if _, err := store.Create(ctx, jobs.NewJob{ID: id, Type: "sleep", Owner: owner, Queue: "default", Timeout: time.Minute, TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
		return id
	}
	if _, err := run(t, ctx, "correct horse\n", "users", "add", "ann", "--password-stdin"); err != nil {
		t.Fatal(err)
	}
	ann1, ann2, bob := submit("ann"), submit("ann"), submit("bob")
	if _, err := store.Cancel(ctx, ann2, time.Hour); err != nil { // finished: its result links must die too
		t.Fatal(err)
	}
	epochs := map[string]int64{}
	for _, id := range []string{ann1, ann2, bob} {
		j, err := store.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		epochs[id] = j.TokenEpoch
	}
	out, err := run(t, ctx, "", "users", "block", "ann", "--revoke-job-tokens")
	if err != nil || !strings.Contains(out, "revoked the job tokens of 2 jobs of ann") {
		t.Fatalf("block --revoke-job-tokens: %v %s", err, out)
	}
	for id, raised := range map[string]bool{ann1: true, ann2: true, bob: false} {
		j, err := store.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got := j.TokenEpoch > epochs[id]; got != raised {
			t.Errorf("job %s: epoch %d → %d, raised %v, want %v", id, epochs[id], j.TokenEpoch, got, raised)
		}
	}
}
