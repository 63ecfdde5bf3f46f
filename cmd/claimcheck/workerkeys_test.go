package main

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/tokens"
	"github.com/claimcheck/claimcheck/tokens/pubkeys"
	"github.com/claimcheck/claimcheck/worker"
)

// workerKeyDirs are the only key directories a worker process may hold:
// its receipt keys, and the webhook deliverer's when it runs beside it.
var workerKeyDirs = []string{"workers", "webhooks", "webhook-links"}

// TestWorkerHoldsOnlyItsOwnKeys: `claimcheck worker` creates and publishes
// its receipt keys and no other process's (no api, gateway or progress
// key), publishes a rotated key once told keys changed, and keeps the old
// one published; and worker.Config has no field for another process's keys.
func TestWorkerHoldsOnlyItsOwnKeys(t *testing.T) {
	rdb := redistest.Client(t)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := run(t, ctx, "", "worker", "--redis-url", redistest.URL(), "--data-dir", dir, "--log-level", "error")
		done <- err
	}()
	published := func() []string {
		kids, _ := rdb.HKeys(context.Background(), pubkeys.Key(tokens.KindReceipt)).Result()
		slices.Sort(kids)
		return kids
	}
	waitfor.True(t, 20*time.Second, func() bool { return len(published()) > 0 })
	keyDir := filepath.Join(dir, "keys", "workers")
	ks, err := tokens.LoadDir(keyDir)
	if err != nil {
		t.Fatal(err)
	}
	first := ks.KIDs()
	if !slices.Equal(published(), first) {
		t.Fatalf("published %v, the worker's keys are %v", published(), first)
	}

	// A rotation announced as `claimcheck keys rotate` announces it.
	k, _, err := tokens.RotateDir(keyDir)
	if err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, 10*time.Second, func() bool {
		_ = identity.NewRevocations(rdb).Announce(context.Background(), identity.Revocation{Kind: identity.RevokedAll})
		return slices.Contains(published(), k.ID)
	})
	if got := published(); len(got) != 2 || !slices.Contains(got, first[0]) {
		t.Fatalf("after rotation published %v, want the old key %s and the new %s", got, first[0], k.ID)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("worker: %v", err)
	}

	entries, err := os.ReadDir(filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !slices.Contains(workerKeyDirs, e.Name()) {
			t.Errorf("the worker made key directory %s: a worker holds only %v", e.Name(), workerKeyDirs)
		}
	}

	keyTypes := []reflect.Type{reflect.TypeFor[*tokens.KeySet](), reflect.TypeFor[tokens.KeySource](), reflect.TypeFor[*tokens.Key]()}
	for _, f := range reflect.VisibleFields(reflect.TypeFor[worker.Config]()) {
		if slices.Contains(keyTypes, f.Type) && f.Name != "ReceiptKeys" && !strings.HasPrefix(f.Name, "Webhook") {
			t.Errorf("worker.Config.%s holds keys: a worker holds only its receipt keys and the webhook deliverer's", f.Name)
		}
	}
}
