package identity_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/secret"
)

// cheap keeps argon2id fast in tests; the parameters are still recorded
// and checked like the real ones.
var cheap = &identity.Argon2Params{Memory: 64, Time: 1, Threads: 1}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newDirectory(t *testing.T, cfg identity.SessionConfig) (*identity.Directory, *clock) {
	t.Helper()
	c := &clock{t: time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)}
	return identity.NewDirectory(redistest.Client(t), cfg, cheap, c.now), c
}

func TestPasswords(t *testing.T) {
	d, _ := newDirectory(t, identity.SessionConfig{})
	ctx := context.Background()
	if err := d.Users.Add(ctx, "ann", "correct horse"); err != nil {
		t.Fatal(err)
	}
	if err := d.Users.Add(ctx, "ann", "another one"); !errors.Is(err, identity.ErrUserExists) {
		t.Fatalf("second add: %v", err)
	}
	if u, err := d.Users.CheckPassword(ctx, "ann", "correct horse"); err != nil || u.Name != "ann" {
		t.Fatalf("right password: %v %v", u, err)
	}
	for _, tc := range []struct{ user, pw string }{
		{"ann", "wrong horse"}, {"ann", ""}, {"nobody", "correct horse"}, {"bad name!", "x"},
		{"ann", strings.Repeat("x", identity.MaxPasswordLen+1)},
	} {
		if _, err := d.Users.CheckPassword(ctx, tc.user, tc.pw); !errors.Is(err, identity.ErrBadPassword) {
			t.Errorf("CheckPassword(%q, %q…) = %v", tc.user, tc.pw[:min(len(tc.pw), 8)], err)
		}
	}
	for _, pw := range []string{"short", strings.Repeat("x", identity.MaxPasswordLen+1)} {
		if err := d.Users.Add(ctx, "bob", pw); err == nil {
			t.Errorf("accepted password of length %d", len(pw))
		}
	}
	if err := d.Users.SetPassword(ctx, "ann", "battery staple"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Users.CheckPassword(ctx, "ann", "correct horse"); !errors.Is(err, identity.ErrBadPassword) {
		t.Fatal("old password still works")
	}
	if _, err := d.Users.CheckPassword(ctx, "ann", "battery staple"); err != nil {
		t.Fatal(err)
	}
}

func TestPasswordHashRecordsParametersAndUpgrades(t *testing.T) {
	rdb := redistest.Client(t)
	ctx := context.Background()
	old := identity.NewUsers(rdb, cheap, nil)
	if err := old.Add(ctx, "ann", "correct horse"); err != nil {
		t.Fatal(err)
	}
	before := rdb.HGet(ctx, "cc:user:{ann}", "pw").Val()
	if !strings.HasPrefix(before, "$argon2id$v=19$m=64,t=1,p=1$") || strings.Contains(before, "correct horse") {
		t.Fatalf("stored hash %q", before)
	}
	// Raised parameters: the old hash still verifies, and is redone.
	stronger := identity.NewUsers(rdb, &identity.Argon2Params{Memory: 128, Time: 2, Threads: 1}, nil)
	if _, err := stronger.CheckPassword(ctx, "ann", "correct horse"); err != nil {
		t.Fatal(err)
	}
	after := rdb.HGet(ctx, "cc:user:{ann}", "pw").Val()
	if !strings.HasPrefix(after, "$argon2id$v=19$m=128,t=2,p=1$") {
		t.Fatalf("hash not upgraded: %q", after)
	}
	if _, err := stronger.CheckPassword(ctx, "ann", "correct horse"); err != nil {
		t.Fatal(err)
	}
}

func TestSessionExpiry(t *testing.T) {
	d, clk := newDirectory(t, identity.SessionConfig{IdleTimeout: time.Hour, AbsoluteLifetime: 3 * time.Hour})
	ctx := context.Background()
	s, sess, err := d.Sessions.Create(ctx, "ann", "curl/8", "127.0.0.1")
	if err != nil || !strings.HasPrefix(s.Reveal(), identity.SessionPrefix) || len(s.Reveal()) < 40 {
		t.Fatalf("create: %v %q", err, s.Reveal())
	}
	if !sess.ExpiresAt.Equal(clk.t.Add(time.Hour)) {
		t.Fatalf("expires %v", sess.ExpiresAt)
	}
	// Used every 50 minutes, the session slides past its first idle limit…
	for range 3 {
		clk.t = clk.t.Add(50 * time.Minute)
		if p, err := d.Sessions.Authenticate(ctx, s); err != nil || p.UserID != "ann" || p.Via != "session" || p.CredentialID != sess.ID {
			t.Fatalf("at %v: %+v %v", clk.t, p, err)
		}
	}
	// …but not past its absolute lifetime (3h after creation).
	clk.t = clk.t.Add(40 * time.Minute) // 3h30m after creation, 40m idle
	if _, err := d.Sessions.Authenticate(ctx, s); !errors.Is(err, identity.ErrUnauthenticated) {
		t.Fatalf("past absolute lifetime: %v", err)
	}

	// Idle expiry.
	s2, _, _ := d.Sessions.Create(ctx, "ann", "", "")
	clk.t = clk.t.Add(61 * time.Minute)
	if _, err := d.Sessions.Authenticate(ctx, s2); !errors.Is(err, identity.ErrUnauthenticated) {
		t.Fatalf("idle session: %v", err)
	}
	if list, _ := d.Sessions.List(ctx, "ann"); len(list) != 0 {
		t.Fatalf("expired sessions listed: %+v", list)
	}
}

func TestLogoutAndLogoutEverywhere(t *testing.T) {
	d, _ := newDirectory(t, identity.SessionConfig{})
	ctx := context.Background()
	var secrets []secret.Secret
	var ids []string
	for range 3 {
		s, sess, err := d.Sessions.Create(ctx, "ann", "ua", "ip")
		if err != nil {
			t.Fatal(err)
		}
		secrets, ids = append(secrets, s), append(ids, sess.ID)
	}
	other, _, _ := d.Sessions.Create(ctx, "bob", "", "")
	list, err := d.Sessions.List(ctx, "ann")
	if err != nil || len(list) != 3 || list[0].UserAgent != "ua" {
		t.Fatalf("list: %+v %v", list, err)
	}
	// Revoking one refuses its very next use, and only its.
	if err := d.Sessions.Revoke(ctx, "ann", ids[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Sessions.Authenticate(ctx, secrets[0]); !errors.Is(err, identity.ErrUnauthenticated) {
		t.Fatalf("revoked session: %v", err)
	}
	if _, err := d.Sessions.Authenticate(ctx, secrets[1]); err != nil {
		t.Fatalf("sibling session: %v", err)
	}
	// Bob cannot revoke Ann's session by id.
	if err := d.Sessions.Revoke(ctx, "bob", ids[1]); !errors.Is(err, identity.ErrSessionNotFound) {
		t.Fatalf("cross-user revoke: %v", err)
	}
	// An empty id is not "all".
	if err := d.Sessions.Revoke(ctx, "ann", ""); !errors.Is(err, identity.ErrSessionNotFound) {
		t.Fatalf("revoke empty id: %v", err)
	}
	if _, err := d.Sessions.Authenticate(ctx, secrets[1]); err != nil {
		t.Fatalf("revoke of an empty id ended a session: %v", err)
	}
	if n, err := d.Sessions.RevokeAll(ctx, "ann"); err != nil || n != 2 {
		t.Fatalf("revoke all: %d %v", n, err)
	}
	for _, s := range secrets {
		if _, err := d.Sessions.Authenticate(ctx, s); !errors.Is(err, identity.ErrUnauthenticated) {
			t.Fatalf("session survived logout everywhere: %v", err)
		}
	}
	if _, err := d.Sessions.Authenticate(ctx, other); err != nil {
		t.Fatalf("bob was logged out too: %v", err)
	}
}

func TestBlockEndsEverythingAtOnce(t *testing.T) {
	d, _ := newDirectory(t, identity.SessionConfig{})
	ctx := context.Background()
	d.Users.Add(ctx, "ann", "correct horse")
	sess, _, _ := d.Sessions.Create(ctx, "ann", "", "")
	key, _, _ := d.APIKeys.Create(ctx, "ann", "ci", "")
	bobKey, _, _ := d.APIKeys.Create(ctx, "bob", "ci", "")
	for _, s := range []secret.Secret{sess, key} {
		if _, err := d.Authenticate(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Block(ctx, "ann"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []secret.Secret{sess, key} {
		if _, err := d.Authenticate(ctx, s); !errors.Is(err, identity.ErrUnauthenticated) {
			t.Fatalf("credential survived block: %v", err)
		}
	}
	if _, err := d.Users.CheckPassword(ctx, "ann", "correct horse"); !errors.Is(err, identity.ErrBadPassword) {
		t.Fatalf("blocked user signed in: %v", err)
	}
	if _, err := d.Authenticate(ctx, bobKey); err != nil {
		t.Fatalf("bob's key died with ann's block: %v", err)
	}
	if err := d.Unblock(ctx, "ann"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Users.CheckPassword(ctx, "ann", "correct horse"); err != nil {
		t.Fatalf("unblocked user: %v", err)
	}
	if _, err := d.Authenticate(ctx, key); !errors.Is(err, identity.ErrUnauthenticated) {
		t.Fatal("unblock brought a revoked key back")
	}
	if err := d.Block(ctx, "nobody"); !errors.Is(err, identity.ErrUserNotFound) {
		t.Fatalf("block unknown: %v", err)
	}
}

// TestBlockDuringSignInLeavesNoCredential blocks a user between a sign-in's
// password check and its session being stored, and between a key request's
// authentication and the key being stored: neither may leave a working
// credential behind (the creation checks the flag in the same script).
func TestBlockDuringSignInLeavesNoCredential(t *testing.T) {
	d, _ := newDirectory(t, identity.SessionConfig{})
	ctx := context.Background()
	if err := d.Users.Add(ctx, "ann", "correct horse"); err != nil {
		t.Fatal(err)
	}
	u, err := d.Users.CheckPassword(ctx, "ann", "correct horse") // the sign-in is under way…
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Block(ctx, "ann"); err != nil { // …when ann is blocked
		t.Fatal(err)
	}
	if _, _, err := d.Sessions.Create(ctx, u.Name, "", ""); !errors.Is(err, identity.ErrUserBlocked) {
		t.Fatalf("session created for a blocked user: %v", err)
	}
	if _, _, err := d.APIKeys.CreateKey(ctx, identity.KeySpec{User: "ann", Name: "late"}); !errors.Is(err, identity.ErrUserBlocked) {
		t.Fatalf("API key created for a blocked user: %v", err)
	}
	if left, _ := d.Sessions.List(ctx, "ann"); len(left) != 0 {
		t.Fatalf("sessions left: %+v", left)
	}
	if left, _ := d.APIKeys.ListUser(ctx, "ann"); len(left) != 0 {
		t.Fatalf("keys left: %+v", left)
	}

	// Unblocked, ann signs in again; a user with no record (a service
	// account that only has API keys) is not blocked.
	if err := d.Unblock(ctx, "ann"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Sessions.Create(ctx, "ann", "", ""); err != nil {
		t.Fatalf("after unblock: %v", err)
	}
	if _, _, err := d.APIKeys.CreateKey(ctx, identity.KeySpec{User: "svc-reports"}); err != nil {
		t.Fatalf("key for a user with no record: %v", err)
	}
}
