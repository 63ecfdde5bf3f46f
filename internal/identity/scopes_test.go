package identity_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/redistest"
)

func TestAPIKeyScopesExpiryAndLastUsed(t *testing.T) {
	d, clk := newDirectory(t, identity.SessionConfig{})
	keys := d.APIKeys
	ctx := context.Background()

	if _, _, err := keys.CreateKey(ctx, identity.KeySpec{User: "ann", Scopes: []string{"jobs:delete"}}); !errors.Is(err, identity.ErrBadScope) {
		t.Fatalf("unknown scope accepted: %v", err)
	}
	if _, _, err := keys.CreateKey(ctx, identity.KeySpec{User: "ann", ExpiresAt: clk.t.Add(-time.Second)}); err == nil {
		t.Fatal("key expiring in the past accepted")
	}
	readOnly, ro, err := keys.CreateKey(ctx, identity.KeySpec{User: "ann", Name: "dashboard",
		Scopes: []string{identity.ScopeJobsRead, identity.ScopeJobsRead}, ExpiresAt: clk.t.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ro.Scopes, []string{identity.ScopeJobsRead}) || ro.Prefix != readOnly.Reveal()[:12] || !strings.HasPrefix(ro.Prefix, "cck_") {
		t.Fatalf("created %+v", ro)
	}
	full, _, err := keys.Create(ctx, "ann", "ci", "")
	if err != nil {
		t.Fatal(err)
	}

	p, err := keys.Authenticate(ctx, readOnly)
	if err != nil || !p.Can(identity.ScopeJobsRead) || p.Can(identity.ScopeJobsSubmit) || !p.ExpiresAt.Equal(clk.t.Add(time.Hour).Truncate(time.Millisecond)) {
		t.Fatalf("read-only key principal %+v, %v", p, err)
	}
	if p, err := keys.Authenticate(ctx, full); err != nil || !p.Can(identity.ScopeJobsSubmit) || !p.ExpiresAt.IsZero() {
		t.Fatalf("full key principal %+v, %v", p, err)
	}

	byID := func() map[string]identity.APIKey {
		list, err := keys.ListUser(ctx, "ann")
		if err != nil || len(list) != 2 {
			t.Fatalf("list = %+v, %v", list, err)
		}
		return map[string]identity.APIKey{list[0].ID: list[0], list[1].ID: list[1]}
	}
	listed := byID()[ro.ID]
	if listed.LastUsed == nil || !listed.LastUsed.Equal(clk.t.Truncate(time.Millisecond)) || listed.ExpiresAt == nil || listed.Name != "dashboard" {
		t.Fatalf("listed %+v", listed)
	}
	// last_used is written at most once a minute…
	first := *listed.LastUsed
	clk.t = clk.t.Add(30 * time.Second)
	_, _ = keys.Authenticate(ctx, readOnly)
	if got := byID()[ro.ID].LastUsed; !got.Equal(first) {
		t.Fatalf("last used moved within a minute: %v", got)
	}
	clk.t = clk.t.Add(31 * time.Second)
	_, _ = keys.Authenticate(ctx, readOnly)
	if got := byID()[ro.ID].LastUsed; !got.Equal(clk.t.Truncate(time.Millisecond)) {
		t.Fatalf("last used not updated after a minute: %v", got)
	}
	// …and the key stops at its expiry, by the directory's clock.
	clk.t = clk.t.Add(time.Hour)
	if _, err := keys.Authenticate(ctx, readOnly); !errors.Is(err, identity.ErrUnauthenticated) {
		t.Fatalf("expired key authenticated: %v", err)
	}

	// Revoking is per owner: bob cannot revoke (or learn of) ann's key.
	if err := keys.RevokeOwn(ctx, "bob", ro.ID); !errors.Is(err, identity.ErrNotFound) {
		t.Fatalf("bob revoked ann's key: %v", err)
	}
	if err := keys.RevokeOwn(ctx, "ann", ro.ID); err != nil {
		t.Fatal(err)
	}
	if list, _ := keys.ListUser(ctx, "ann"); len(list) != 1 {
		t.Fatalf("after revoke: %+v", list)
	}
}

func TestRevocationsAreAnnouncedHereAndOnRedis(t *testing.T) {
	d, _ := newDirectory(t, identity.SessionConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var local []identity.Revocation
	d.Revocations.OnRevoke(func(r identity.Revocation) { local = append(local, r) })
	remote := make(chan identity.Revocation, 16)
	ready := make(chan struct{})
	go func() {
		_ = identity.ListenRevocations(ctx, redistest.Client(t), func(r identity.Revocation) { remote <- r }, ready)
	}()
	<-ready
	if r := <-remote; r.Kind != identity.RevokedAll {
		t.Fatalf("first message after subscribing = %v, want all", r)
	}

	_, sess, _ := d.Sessions.Create(ctx, "ann", "", "")
	_, key, _ := d.APIKeys.Create(ctx, "ann", "", "")
	if err := d.Sessions.Revoke(ctx, "ann", sess.ID); err != nil {
		t.Fatal(err)
	}
	if err := d.APIKeys.Revoke(ctx, key.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Sessions.RevokeAll(ctx, "ann"); err != nil {
		t.Fatal(err)
	}
	want := []identity.Revocation{{Kind: "session", ID: sess.ID}, {Kind: "apikey", ID: key.ID}, {Kind: "user", ID: "ann"}}
	if !slices.Equal(local, want) {
		t.Fatalf("local listener got %v, want %v", local, want)
	}
	// Each announcement is heard, in no promised order: on a cluster each
	// PUBLISH enters through whichever node the client picks.
	var heard []identity.Revocation
	for range want {
		heard = append(heard, <-remote)
	}
	if !sameRevocations(heard, want) {
		t.Fatalf("redis subscriber got %v, want %v in any order", heard, want)
	}
	if _, ok := identity.ParseRevocation("session"); ok {
		t.Fatal("a revocation without an id parsed")
	}
	if _, ok := identity.ParseRevocation("bogus x"); ok {
		t.Fatal("an unknown kind parsed")
	}
}

// sameRevocations reports whether a and b hold the same revocations in any
// order.
func sameRevocations(a, b []identity.Revocation) bool {
	key := func(r identity.Revocation) string { return r.String() }
	as, bs := make([]string, len(a)), make([]string, len(b))
	for i := range a {
		as[i] = key(a[i])
	}
	for i := range b {
		bs[i] = key(b[i])
	}
	slices.Sort(as)
	slices.Sort(bs)
	return slices.Equal(as, bs)
}
