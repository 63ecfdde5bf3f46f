package identity_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/secret"
)

// step is a go-redis hook that finds one command of a multi-step operation
// (the first that match accepts) and lets a test act around it: before
// runs just before it is sent, after just after its answer, and crash
// makes it, and every command after it, fail without reaching Redis, as if
// the process had died there. The interfering operation runs on another
// client, so the hook never sees its own commands.
type step struct {
	match   func(args []string) bool
	before  func()
	after   func()
	crash   bool
	fired   atomic.Bool
	crashed atomic.Bool
	// beforeRan keeps before to one run when the step is retried (the
	// operations under test are sequential, so no lock is needed).
	beforeRan bool
}

var errCrashed = errors.New("test: the process died here")

func (s *step) DialHook(next redis.DialHook) redis.DialHook { return next }

func (s *step) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if s.crashed.Load() {
			cmd.SetErr(errCrashed)
			return errCrashed
		}
		mine := !s.fired.Load() && s.match(stringArgs(cmd))
		if mine && s.crash {
			s.fired.Store(true)
			s.crashed.Store(true)
			cmd.SetErr(errCrashed)
			return errCrashed
		}
		if mine && s.before != nil && !s.beforeRan {
			s.beforeRan = true
			s.before()
		}
		err := next(ctx, cmd)
		if mine && err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
			// A script's first run on a node: the EVAL that follows is
			// the step itself.
			return err
		}
		if mine {
			s.fired.Store(true)
			if s.after != nil {
				s.after()
			}
		}
		return err
	}
}

func (s *step) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		mine := false
		for _, cmd := range cmds {
			if !s.fired.Load() && s.match(stringArgs(cmd)) {
				mine = s.fired.CompareAndSwap(false, true)
			}
		}
		if s.crashed.Load() || mine && s.crash {
			s.crashed.Store(true)
			for _, cmd := range cmds {
				cmd.SetErr(errCrashed)
			}
			return errCrashed
		}
		if mine && s.before != nil {
			s.before()
		}
		err := next(ctx, cmds)
		if mine && s.after != nil {
			s.after()
		}
		return err
	}
}

func stringArgs(cmd redis.Cmder) []string {
	out := make([]string, 0, len(cmd.Args()))
	for _, a := range cmd.Args() {
		s, _ := a.(string)
		out = append(out, s)
	}
	return out
}

// script matches a script call (EVALSHA or EVAL) one of whose keys starts
// with prefix.
func script(prefix string) func(args []string) bool {
	return func(args []string) bool {
		if len(args) < 3 || (args[0] != "evalsha" && args[0] != "eval") {
			return false
		}
		for _, a := range args[3:] {
			if strings.HasPrefix(a, prefix) {
				return true
			}
		}
		return false
	}
}

// keepStep matches the last step of a key's creation on its record: the
// one script with one key and one argument on a key record.
func keepStep(args []string) bool {
	return len(args) == 5 && (args[0] == "evalsha" || args[0] == "eval") && strings.HasPrefix(args[3], identity.KeyPrefixAPIKey)
}

// command matches a command by name whose first key starts with prefix.
func command(name, prefix string) func(args []string) bool {
	return func(args []string) bool {
		return len(args) > 1 && strings.EqualFold(args[0], name) && strings.HasPrefix(args[1], prefix)
	}
}

// hooked returns a directory whose commands pass through s, and one beside
// it on another client (the interfering operations'), on a flushed Redis.
func hooked(t *testing.T, s *step) (subject, other *identity.Directory) {
	t.Helper()
	c := &clock{t: time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)}
	base := redistest.Client(t)
	rdb := redistest.NewClient(t)
	rdb.AddHook(s)
	return identity.NewDirectory(rdb, identity.SessionConfig{}, cheap, c.now),
		identity.NewDirectory(base, identity.SessionConfig{}, cheap, c.now)
}

// keysWithPrefix lists every key starting with prefix, on every primary of
// a cluster, through a client of its own (the test's may be hooked).
func keysWithPrefix(t *testing.T, prefix string) []string {
	t.Helper()
	return redistest.Keys(t, redistest.NewClient(t), prefix+"*")
}

func addAnn(t *testing.T, d *identity.Directory) {
	t.Helper()
	if err := d.Users.Add(context.Background(), "ann", "correct horse"); err != nil {
		t.Fatal(err)
	}
}

// TestBlockBetweenSignInSteps blocks ann after her sign-in wrote its
// session record and before it indexed the session: the record is in no
// index the block's sweep reads, so the index step must see the flag.
func TestBlockBetweenSignInSteps(t *testing.T) {
	s := &step{match: script(identity.KeyPrefixUserSessions)}
	d, admin := hooked(t, s)
	ctx := context.Background()
	addAnn(t, admin)
	s.before = func() {
		if n := len(keysWithPrefix(t, identity.KeyPrefixSession)); n != 1 {
			t.Errorf("the record is not written before the index step: %d records", n)
		}
		if err := admin.Block(ctx, "ann"); err != nil {
			t.Error(err)
		}
	}
	if _, _, err := d.Sessions.Create(ctx, "ann", "", ""); !errors.Is(err, identity.ErrUserBlocked) {
		t.Fatalf("sign-in across a block: %v, want ErrUserBlocked", err)
	}
	if !s.fired.Load() {
		t.Fatal("the index step was never seen")
	}
	if left := keysWithPrefix(t, identity.KeyPrefixSession); len(left) != 0 {
		t.Fatalf("a refused sign-in left %v", left)
	}
	if list, _ := admin.Sessions.List(ctx, "ann"); len(list) != 0 {
		t.Fatalf("sessions listed: %+v", list)
	}
}

// TestBlockAfterSignInIndexed blocks ann once her sign-in indexed its
// session but before it returned: the sweep finds the session, and the
// secret handed out is dead on arrival.
func TestBlockAfterSignInIndexed(t *testing.T) {
	s := &step{match: script(identity.KeyPrefixUserSessions)}
	d, admin := hooked(t, s)
	ctx := context.Background()
	addAnn(t, admin)
	s.after = func() {
		if err := admin.Block(ctx, "ann"); err != nil {
			t.Error(err)
		}
	}
	sec, _, err := d.Sessions.Create(ctx, "ann", "", "")
	if err != nil {
		t.Fatalf("sign-in indexed before the block: %v", err)
	}
	if _, err := admin.Authenticate(ctx, sec); !errors.Is(err, identity.ErrUnauthenticated) {
		t.Fatalf("a session indexed before the block survived it: %v", err)
	}
	if left := keysWithPrefix(t, identity.KeyPrefixSession); len(left) != 0 {
		t.Fatalf("records left: %v", left)
	}
}

// TestBlockDuringKeyCreation blocks ann at each gap of an API key's
// creation: between writing the record and indexing it (the index step
// sees the flag), between indexing it and keeping it (the sweep deletes
// the record, and keeping it must not bring it back), and after it is kept
// (the sweep revokes it). No gap leaves a working key or a key record.
func TestBlockDuringKeyCreation(t *testing.T) {
	for _, tc := range []struct {
		name      string
		match     func([]string) bool
		afterStep bool
		wantErr   bool
	}{
		{"before the index step", script(identity.KeyPrefixUserAPIKeys), false, true},
		{"between indexing and keeping", script(identity.KeyPrefixUserAPIKeys), true, true},
		{"after it is kept", script(identity.KeyPrefixAPIKeyID), true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &step{match: tc.match}
			d, admin := hooked(t, s)
			ctx := context.Background()
			addAnn(t, admin)
			block := func() {
				if err := admin.Block(ctx, "ann"); err != nil {
					t.Error(err)
				}
			}
			if tc.afterStep {
				s.after = block
			} else {
				s.before = block
			}
			sec, _, err := d.APIKeys.CreateKey(ctx, identity.KeySpec{User: "ann", Name: "late"})
			if !s.fired.Load() {
				t.Fatal("the step was never seen")
			}
			if tc.wantErr != (err != nil) || err != nil && !errors.Is(err, identity.ErrUserBlocked) {
				t.Fatalf("create = %v, want an error %v (ErrUserBlocked)", err, tc.wantErr)
			}
			if err == nil {
				if _, err := admin.Authenticate(ctx, sec); !errors.Is(err, identity.ErrUnauthenticated) {
					t.Fatalf("a key indexed before the block survived it: %v", err)
				}
			}
			for _, prefix := range []string{identity.KeyPrefixAPIKey, identity.KeyPrefixAPIKeyID} {
				if left := keysWithPrefix(t, prefix); len(left) != 0 {
					t.Fatalf("left behind: %v", left)
				}
			}
			if list, _ := admin.APIKeys.ListUser(ctx, "ann"); len(list) != 0 {
				t.Fatalf("keys listed: %+v", list)
			}
			if list, _ := admin.APIKeys.List(ctx); len(list) != 0 {
				t.Fatalf("keys listed globally: %+v", list)
			}
		})
	}
}

// TestCreationCrashLeavesOnlyExpiringLeftovers: a process that dies
// between the steps of a sign-in or a key creation never handed out the
// secret, and what it wrote expires on its own.
func TestCreationCrashLeavesOnlyExpiringLeftovers(t *testing.T) {
	ctx := context.Background()
	check := func(t *testing.T, prefix string, within time.Duration) {
		t.Helper()
		left := keysWithPrefix(t, prefix)
		if len(left) == 0 {
			t.Fatalf("no %s* written before the crash: the test crashed too early", prefix)
		}
		rdb := redistest.NewClient(t)
		for _, k := range left {
			if ttl := rdb.PTTL(ctx, k).Val(); ttl <= 0 || ttl > within {
				t.Errorf("leftover %s lives %v, want an expiry within %v", k, ttl, within)
			}
		}
	}
	t.Run("sign-in", func(t *testing.T) {
		s := &step{match: script(identity.KeyPrefixUserSessions), crash: true}
		d, admin := hooked(t, s)
		addAnn(t, admin)
		if sec, _, err := d.Sessions.Create(ctx, "ann", "", ""); err == nil || sec != "" {
			t.Fatalf("a sign-in that died midway returned %v", err)
		}
		check(t, identity.KeyPrefixSession, 12*time.Hour) // the idle timeout
		if list, _ := admin.Sessions.List(ctx, "ann"); len(list) != 0 {
			t.Fatalf("a dead sign-in is listed: %+v", list)
		}
	})
	for _, tc := range []struct {
		name  string
		match func([]string) bool
	}{
		{"key creation before its index step", script(identity.KeyPrefixUserAPIKeys)},
		{"key creation before it is kept", keepStep},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &step{match: tc.match, crash: true}
			d, admin := hooked(t, s)
			addAnn(t, admin)
			if sec, _, err := d.APIKeys.CreateKey(ctx, identity.KeySpec{User: "ann"}); err == nil || sec != "" {
				t.Fatalf("a key creation that died midway returned %v", err)
			}
			// Records and id keys expire with pendingKeyTTL.
			check(t, identity.KeyPrefixAPIKey, 10*time.Minute)
			check(t, identity.KeyPrefixAPIKeyID, 10*time.Minute)
			if list, _ := admin.APIKeys.ListUser(ctx, "ann"); len(list) > 1 {
				t.Fatalf("listed: %+v", list)
			}
		})
	}
}

// TestBlockSweepSparesASessionOfAnUnblock unblocks ann and signs her in
// again while a block's sweep is between reading her indexes and clearing
// them: the sweep must clear only what it read, so the new session stays
// indexed and the next block ends it.
func TestBlockSweepSparesASessionOfAnUnblock(t *testing.T) {
	s := &step{match: command("del", identity.KeyPrefixSession)}
	blocker, d := hooked(t, s)
	ctx := context.Background()
	addAnn(t, d)
	old, _, _ := d.Sessions.Create(ctx, "ann", "", "")
	var fresh secret.Secret
	s.before = func() {
		if err := d.Unblock(ctx, "ann"); err != nil {
			t.Error(err)
		}
		var err error
		if fresh, _, err = d.Sessions.Create(ctx, "ann", "", ""); err != nil {
			t.Error(err)
		}
	}
	if err := blocker.Block(ctx, "ann"); err != nil {
		t.Fatal(err)
	}
	if !s.fired.Load() {
		t.Fatal("the sweep was never seen")
	}
	if _, err := d.Authenticate(ctx, old); !errors.Is(err, identity.ErrUnauthenticated) {
		t.Fatalf("the session the block read survived: %v", err)
	}
	if list, _ := d.Sessions.List(ctx, "ann"); len(list) != 1 {
		t.Fatalf("the session after the unblock is not indexed: %+v", list)
	}
	if err := d.Block(ctx, "ann"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Authenticate(ctx, fresh); !errors.Is(err, identity.ErrUnauthenticated) {
		t.Fatalf("the second block missed the new session: %v", err)
	}
}

// TestBlockThatFailsMidwayStillStopsNewCredentials: a block whose sweep
// dies leaves the flag up, so no sign-in succeeds meanwhile, and running
// it again ends what the first one did not reach.
func TestBlockThatFailsMidwayStillStopsNewCredentials(t *testing.T) {
	s := &step{match: command("del", identity.KeyPrefixSession), crash: true}
	blocker, d := hooked(t, s)
	ctx := context.Background()
	addAnn(t, d)
	sess, _, _ := d.Sessions.Create(ctx, "ann", "", "")
	key, _, _ := d.APIKeys.Create(ctx, "ann", "", "")
	var heard []identity.Revocation
	blocker.Revocations.OnRevoke(func(r identity.Revocation) { heard = append(heard, r) })
	if err := blocker.Block(ctx, "ann"); err == nil {
		t.Fatal("a block whose sweep died reported success")
	}
	// What it did end is announced all the same (here only to this
	// process: its Redis connection is what died).
	if want := (identity.Revocation{Kind: identity.RevokedUser, ID: "ann"}); len(heard) != 1 || heard[0] != want {
		t.Fatalf("announced %v, want %v", heard, want)
	}
	if _, _, err := d.Sessions.Create(ctx, "ann", "", ""); !errors.Is(err, identity.ErrUserBlocked) {
		t.Fatalf("sign-in after a half-done block: %v", err)
	}
	if _, _, err := d.APIKeys.Create(ctx, "ann", "", ""); !errors.Is(err, identity.ErrUserBlocked) {
		t.Fatalf("key creation after a half-done block: %v", err)
	}
	if err := d.Block(ctx, "ann"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []secret.Secret{sess, key} {
		if _, err := d.Authenticate(ctx, c); !errors.Is(err, identity.ErrUnauthenticated) {
			t.Fatalf("a credential survived the second block: %v", err)
		}
	}
}

// TestRevokeEndsTheCredentialBeforeItsIndexEntry: a revocation that dies
// after its first write has already ended the credential, and leaves an
// index entry that a second revocation (or a listing) clears.
func TestRevokeEndsTheCredentialBeforeItsIndexEntry(t *testing.T) {
	t.Run("session", func(t *testing.T) {
		s := &step{match: command("hdel", identity.KeyPrefixUserSessions), crash: true}
		d, other := hooked(t, s)
		ctx := context.Background()
		sec, sess, _ := other.Sessions.Create(ctx, "ann", "", "")
		if err := d.Sessions.Revoke(ctx, "ann", sess.ID); err == nil {
			t.Fatal("a revocation that died midway reported success")
		}
		if _, err := other.Authenticate(ctx, sec); !errors.Is(err, identity.ErrUnauthenticated) {
			t.Fatalf("the session works after its record's deletion: %v", err)
		}
		if list, _ := other.Sessions.List(ctx, "ann"); len(list) != 0 {
			t.Fatalf("listed: %+v", list)
		}
		if n := redistest.NewClient(t).HLen(ctx, "cc:user-sessions:{ann}").Val(); n != 0 {
			t.Fatalf("List left %d dangling entries", n)
		}
	})
	t.Run("api key", func(t *testing.T) {
		s := &step{match: command("del", identity.KeyPrefixAPIKeyID), crash: true}
		d, other := hooked(t, s)
		ctx := context.Background()
		sec, key, _ := other.APIKeys.Create(ctx, "ann", "", "")
		if err := d.APIKeys.Revoke(ctx, key.ID); err == nil {
			t.Fatal("a revocation that died midway reported success")
		}
		if _, err := other.Authenticate(ctx, sec); !errors.Is(err, identity.ErrUnauthenticated) {
			t.Fatalf("the key works after its record's deletion: %v", err)
		}
		if err := other.APIKeys.Revoke(ctx, key.ID); err != nil {
			t.Fatalf("revoking again: %v", err)
		}
		if left := keysWithPrefix(t, identity.KeyPrefixAPIKey); len(left) != 0 {
			t.Fatalf("left behind: %v", left)
		}
	})
}

// TestAddUserThatDiesMidwayIsInvisibleAndRetried: the name is listed
// before the record is written, so a crash between leaves a name that
// List skips and nobody can sign in as, and adding again completes it.
func TestAddUserThatDiesMidwayIsInvisibleAndRetried(t *testing.T) {
	s := &step{match: script(identity.KeyPrefixUser + "{"), crash: true}
	d, other := hooked(t, s)
	ctx := context.Background()
	if err := d.Users.Add(ctx, "ann", "correct horse"); err == nil {
		t.Fatal("an add that died midway reported success")
	}
	if list, err := other.Users.List(ctx); err != nil || len(list) != 0 {
		t.Fatalf("list = %+v, %v", list, err)
	}
	if _, err := other.Users.CheckPassword(ctx, "ann", "correct horse"); !errors.Is(err, identity.ErrBadPassword) {
		t.Fatalf("half-added user signed in: %v", err)
	}
	if err := other.Users.Add(ctx, "ann", "correct horse"); err != nil {
		t.Fatalf("adding again: %v", err)
	}
	if list, _ := other.Users.List(ctx); len(list) != 1 || list[0].Name != "ann" {
		t.Fatalf("list = %+v", list)
	}
}

// TestLogoutEverywhereDuringASignIn: a sign-in indexed after "log out
// everywhere" read the index survives it (it came after), stays indexed,
// and the next one ends it; the sessions it read are ended.
func TestLogoutEverywhereDuringASignIn(t *testing.T) {
	s := &step{match: command("del", identity.KeyPrefixSession)}
	d, other := hooked(t, s)
	ctx := context.Background()
	old, _, _ := other.Sessions.Create(ctx, "ann", "", "")
	var fresh secret.Secret
	s.before = func() {
		var err error
		if fresh, _, err = other.Sessions.Create(ctx, "ann", "", ""); err != nil {
			t.Error(err)
		}
	}
	if n, err := d.Sessions.RevokeAll(ctx, "ann"); err != nil || n != 1 {
		t.Fatalf("revoke all = %d, %v; want the 1 session it read", n, err)
	}
	if _, err := other.Authenticate(ctx, old); !errors.Is(err, identity.ErrUnauthenticated) {
		t.Fatalf("a session it read survived: %v", err)
	}
	if _, err := other.Authenticate(ctx, fresh); err != nil {
		t.Fatalf("the later sign-in: %v", err)
	}
	if n, err := other.Sessions.RevokeAll(ctx, "ann"); err != nil || n != 1 {
		t.Fatalf("second revoke all = %d, %v", n, err)
	}
	if _, err := other.Authenticate(ctx, fresh); !errors.Is(err, identity.ErrUnauthenticated) {
		t.Fatalf("the later sign-in survived the second log-out: %v", err)
	}
}
