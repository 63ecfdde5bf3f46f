package main

import (
	"context"
	"strings"
	"testing"

	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/tokens"
)

func TestKeysRotateAndRetire(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t.Setenv("REDIS_URL", redistest.URL())
	heard := make(chan identity.Revocation, 4)
	ready := make(chan struct{})
	go func() {
		_ = identity.ListenRevocations(ctx, redistest.Client(t), func(r identity.Revocation) { heard <- r }, ready)
	}()
	<-ready
	<-heard // the "all" every subscription starts with

	dir := t.TempDir()
	if _, err := run(t, ctx, "", "keys", "generate", "--out", dir); err != nil {
		t.Fatal(err)
	}
	before, _ := tokens.LoadDir(dir)
	old, _ := before.Signer()

	out, err := run(t, ctx, "", "keys", "rotate", "--dir", dir)
	if err != nil || !strings.Contains(out, "-- "+old.ID) {
		t.Fatalf("rotate: %v\n%s", err, out)
	}
	if r := <-heard; r.Kind != identity.RevokedAll {
		t.Fatalf("rotate announced %v", r)
	}
	after, _ := tokens.LoadDir(dir)
	active, _ := after.Signer()
	if active.ID == old.ID || len(after.KIDs()) != 2 {
		t.Fatalf("after rotate: active %s, keys %v", active.ID, after.KIDs())
	}
	list, _ := run(t, ctx, "", "keys", "list", "--dir", dir)
	if !strings.Contains(list, active.ID+"  (active)") || !strings.Contains(list, old.ID) {
		t.Fatalf("list: %s", list)
	}

	if _, err := run(t, ctx, "", "keys", "retire", "--dir", dir, "--", active.ID); err == nil || !strings.Contains(err.Error(), "active") {
		t.Fatalf("retiring the active key: %v", err)
	}
	if _, err := run(t, ctx, "", "keys", "retire", "../../etc/passwd", "--dir", dir); err == nil {
		t.Fatal("retired a path")
	}
	if _, err := run(t, ctx, "", "keys", "retire", "--dir", dir, "--", old.ID); err != nil {
		t.Fatal(err)
	}
	if r := <-heard; r.Kind != identity.RevokedAll {
		t.Fatalf("retire announced %v", r)
	}
	if ks, _ := tokens.LoadDir(dir); len(ks.KIDs()) != 1 {
		t.Fatalf("after retire: %v", ks.KIDs())
	}
	if _, err := run(t, ctx, "", "keys", "retire", "--dir", dir, "--", old.ID); err == nil {
		t.Fatal("retired a key twice")
	}
}
