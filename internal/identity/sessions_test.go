package identity_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/secret"
)

// TestConfirmSession: Confirm knows a session by its id alone and says
// whether it is live now for that user; it never slides the idle timer.
func TestConfirmSession(t *testing.T) {
	d, c := newDirectory(t, identity.SessionConfig{IdleTimeout: time.Hour, AbsoluteLifetime: 24 * time.Hour})
	ctx := context.Background()
	_, ann, _ := d.Sessions.Create(ctx, "ann", "", "")
	_, bob, _ := d.Sessions.Create(ctx, "bob", "", "")
	if err := d.Sessions.Confirm(ctx, "ann", ann.ID); err != nil {
		t.Fatalf("live session: %v", err)
	}
	for _, tc := range []struct{ name, user, id string }{
		{"another user's session", "ann", bob.ID},
		{"named for its owner by someone else", "bob", ann.ID},
		{"an unknown id", "ann", "0123456789abcdef"},
		{"no id", "ann", ""},
	} {
		if err := d.Sessions.Confirm(ctx, tc.user, tc.id); !errors.Is(err, identity.ErrUnauthenticated) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	// Confirming does not keep the session alive: 59 minutes of confirms
	// and then two more leave it idle past its hour.
	c.t = c.t.Add(59 * time.Minute)
	if err := d.Sessions.Confirm(ctx, "ann", ann.ID); err != nil {
		t.Fatalf("at 59 min: %v", err)
	}
	c.t = c.t.Add(2 * time.Minute)
	if err := d.Sessions.Confirm(ctx, "ann", ann.ID); !errors.Is(err, identity.ErrUnauthenticated) {
		t.Fatalf("idle past the timeout: %v", err)
	}
	if _, err := d.Sessions.RevokeAll(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := d.Sessions.Confirm(ctx, "bob", bob.ID); !errors.Is(err, identity.ErrUnauthenticated) {
		t.Fatalf("after log out everywhere: %v", err)
	}
}

// TestRevokeAllOwnAPIKeys revokes every key of one user, announces each,
// and leaves other users' keys and the user's sessions alone.
func TestRevokeAllOwnAPIKeys(t *testing.T) {
	d, _ := newDirectory(t, identity.SessionConfig{})
	ctx := context.Background()
	var announced []identity.Revocation
	d.Revocations.OnRevoke(func(r identity.Revocation) { announced = append(announced, r) })
	k1, _, _ := d.APIKeys.Create(ctx, "ann", "one", "")
	k2, _, _ := d.APIKeys.Create(ctx, "ann", "two", "")
	kb, _, _ := d.APIKeys.Create(ctx, "bob", "bob's", "")
	sess, _, _ := d.Sessions.Create(ctx, "ann", "", "")
	n, err := d.APIKeys.RevokeAllOwn(ctx, "ann")
	if err != nil || n != 2 {
		t.Fatalf("revoke all: %d %v", n, err)
	}
	for _, k := range []string{k1.Reveal(), k2.Reveal()} {
		if _, err := d.Authenticate(ctx, secret.Secret(k)); !errors.Is(err, identity.ErrUnauthenticated) {
			t.Errorf("revoked key still works: %v", err)
		}
	}
	if _, err := d.Authenticate(ctx, kb); err != nil {
		t.Fatalf("bob's key: %v", err)
	}
	if _, err := d.Authenticate(ctx, sess); err != nil {
		t.Fatalf("ann's session: %v", err)
	}
	if len(announced) != 2 || announced[0].Kind != identity.RevokedAPIKey || announced[1].Kind != identity.RevokedAPIKey {
		t.Fatalf("announced %v, want two api key revocations", announced)
	}
	if n, err := d.APIKeys.RevokeAllOwn(ctx, "ann"); err != nil || n != 0 {
		t.Fatalf("second time: %d %v", n, err)
	}
}
