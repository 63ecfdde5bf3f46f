package identity_test

import (
	"context"
	"testing"

	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/secret"
)

// TestRevocationCrossesNodes: a listener subscribed through one node
// hears a revocation published through another. On a cluster a PUBLISH
// reaches the other nodes' subscribers over the cluster bus, which is what
// lets every gateway and api instance hear every revocation whichever node
// each happens to use.
func TestRevocationCrossesNodes(t *testing.T) {
	a, b := redistest.TwoPrimaries(t, redistest.Client(t))
	if redistest.OnCluster() && a.Options().Addr == b.Options().Addr {
		t.Fatal("both clients are on one node")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	heard := make(chan identity.Revocation, 8)
	ready := make(chan struct{})
	go func() { _ = identity.ListenRevocations(ctx, a, func(r identity.Revocation) { heard <- r }, ready) }()
	<-ready
	if r := <-heard; r.Kind != identity.RevokedAll {
		t.Fatalf("first message %v, want all", r)
	}
	want := identity.Revocation{Kind: identity.RevokedSession, ID: "0123456789abcdef"}
	if err := identity.NewRevocations(b).Announce(ctx, want); err != nil {
		t.Fatal(err)
	}
	if r := <-heard; r != want {
		t.Fatalf("heard %v, want %v", r, want)
	}
}

// TestAuthenticateIsOneRoundTrip pins the cost of authentication, which
// every request pays: one command (one script on the credential's record)
// for a session and for an API key, and nothing in the user's slot.
func TestAuthenticateIsOneRoundTrip(t *testing.T) {
	admin, clk := newDirectory(t, identity.SessionConfig{})
	ctx := context.Background()
	counter := &redistest.Counter{}
	rdb := redistest.NewClient(t)
	rdb.AddHook(counter)
	d := identity.NewDirectory(rdb, identity.SessionConfig{}, cheap, clk.now)
	sess, _, err := admin.Sessions.Create(ctx, "ann", "", "")
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := admin.APIKeys.Create(ctx, "ann", "", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cred secret.Secret
	}{{"session", sess}, {"api key", key}} {
		// Once first, so the script is loaded on its node: a cold
		// EVALSHA adds an EVAL once per process and node, not per request.
		if _, err := d.Authenticate(ctx, tc.cred); err != nil {
			t.Fatal(err)
		}
		counter.Reset()
		if _, err := d.Authenticate(ctx, tc.cred); err != nil {
			t.Fatal(err)
		}
		if cmds := counter.Commands(); len(cmds) != 1 {
			t.Errorf("%s: authenticating sent %d commands %q, want 1", tc.name, len(cmds), cmds)
		}
	}
}
