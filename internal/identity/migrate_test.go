package identity_test

import (
	"context"
	"errors"
	"testing"

	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/secret"
)

// TestMigrateKeyLayout puts a user's keys back where a release before
// cluster support kept them (cc:user:ann …) and migrates them: the user
// signs in again, a block reaches the credentials made before the upgrade,
// a service account's key index moves too, and a second run does nothing.
func TestMigrateKeyLayout(t *testing.T) {
	d, _ := newDirectory(t, identity.SessionConfig{})
	ctx := context.Background()
	rdb := redistest.NewClient(t)
	if err := d.Users.Add(ctx, "ann", "correct horse"); err != nil {
		t.Fatal(err)
	}
	sess, _, _ := d.Sessions.Create(ctx, "ann", "", "")
	key, _, _ := d.APIKeys.Create(ctx, "ann", "", "")
	svc, _, _ := d.APIKeys.Create(ctx, "svc-reports", "", "")
	// Back to the old names, one key per command (each name is its own slot).
	untag := func(tagged, old string) {
		t.Helper()
		typ := rdb.Type(ctx, tagged).Val()
		switch typ {
		case "hash":
			rdb.HSet(ctx, old, rdb.HGetAll(ctx, tagged).Val())
		case "set":
			for _, m := range rdb.SMembers(ctx, tagged).Val() {
				rdb.SAdd(ctx, old, m)
			}
		default:
			t.Fatalf("%s is a %s", tagged, typ)
		}
		rdb.Del(ctx, tagged)
	}
	untag("cc:user:{ann}", "cc:user:ann")
	untag("cc:user-sessions:{ann}", "cc:user-sessions:ann")
	untag("cc:user-apikeys:{ann}", "cc:user-apikeys:ann")
	untag("cc:user-apikeys:{svc-reports}", "cc:user-apikeys:svc-reports")
	if _, err := d.Users.CheckPassword(ctx, "ann", "correct horse"); !errors.Is(err, identity.ErrBadPassword) {
		t.Fatalf("the old layout is still read: %v", err)
	}

	m, err := identity.MigrateKeyLayout(ctx, rdb)
	if err != nil || m.Moved != 4 || len(m.Kept) != 0 {
		t.Fatalf("migrate = %+v, %v; want 4 keys moved", m, err)
	}
	if _, err := d.Users.CheckPassword(ctx, "ann", "correct horse"); err != nil {
		t.Fatalf("ann after the migration: %v", err)
	}
	if err := d.Block(ctx, "ann"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []secret.Secret{sess, key} {
		if _, err := d.Authenticate(ctx, c); !errors.Is(err, identity.ErrUnauthenticated) {
			t.Fatalf("a pre-upgrade credential survived the block: %v", err)
		}
	}
	if list, _ := d.APIKeys.ListUser(ctx, "svc-reports"); len(list) != 1 {
		t.Fatalf("the service account's keys: %+v", list)
	}
	if _, err := d.Authenticate(ctx, svc); err != nil {
		t.Fatal(err)
	}
	if m, err := identity.MigrateKeyLayout(ctx, rdb); err != nil || m.Moved != 0 {
		t.Fatalf("second run = %+v, %v", m, err)
	}
	for _, old := range []string{"cc:user:ann", "cc:user-sessions:ann", "cc:user-apikeys:ann", "cc:user-apikeys:svc-reports"} {
		if rdb.Exists(ctx, old).Val() != 0 {
			t.Errorf("%s is still there", old)
		}
	}

	// A user added again after the upgrade keeps the new record; the old
	// one is left for an operator and named.
	rdb.HSet(ctx, "cc:user:bob", "name", "bob", "pw", "old")
	rdb.SAdd(ctx, identity.KeyUsers, "bob")
	if err := d.Users.Add(ctx, "bob", "battery staple"); err != nil {
		t.Fatal(err)
	}
	if m, err := identity.MigrateKeyLayout(ctx, rdb); err != nil || m.Moved != 0 || len(m.Kept) != 1 || m.Kept[0] != "bob" {
		t.Fatalf("with a conflict = %+v, %v", m, err)
	}
	if _, err := d.Users.CheckPassword(ctx, "bob", "battery staple"); err != nil {
		t.Fatalf("bob's new record: %v", err)
	}
}
