package worker_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/blob"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/tokens"
	"github.com/claimcheck/claimcheck/tokens/pubkeys"
	"github.com/claimcheck/claimcheck/tokens/tokenstest"
	"github.com/claimcheck/claimcheck/worker"
)

func receiptKeys(t *testing.T) *tokens.KeySet {
	return tokenstest.NewKeySet(t)
}

func (h *harness) receiptWorker(t *testing.T, ks *tokens.KeySet, types ...worker.Type) *worker.Server {
	t.Helper()
	w, err := worker.New(worker.Config{
		ResultsDir: h.blobs.Root(), Concurrency: 2, DelayedTaskCheckInterval: 50 * time.Millisecond,
		RetryDelay: func(int, error) time.Duration { return 10 * time.Millisecond }, Logger: quiet, ReceiptKeys: ks,
	}, h.rdb, types...)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Shutdown)
	return w
}

// TestReceiptsOfEveryKindOfSuccess: with receipt keys, Start publishes
// them, and a job that made no result and one whose result an earlier run
// stored (recorded from its finished marker) both get receipts stating
// exactly what the record says.
func TestReceiptsOfEveryKindOfSuccess(t *testing.T) {
	h := newHarness(t)
	ks := receiptKeys(t)
	var ran atomic.Int32
	w := h.receiptWorker(t, ks,
		worker.Type{Name: "nothing", Timeout: time.Minute, InputSchema: anyObject,
			Handle: func(context.Context, *worker.Task) error { ran.Add(1); return nil }},
	)
	ctx := context.Background()
	if kids, _ := h.rdb.HKeys(ctx, pubkeys.Key(tokens.KindReceipt)).Result(); len(kids) != 1 || kids[0] != ks.KIDs()[0] {
		t.Fatalf("published receipt keys %v, want %v", kids, ks.KIDs())
	}
	v := &tokens.ReceiptVerifier{Keys: ks}
	empty := sha256.Sum256(nil)
	input := sha256.Sum256([]byte(`{}`))

	h.submit(t, "nothing", "none", 0)
	j := h.waitFinal(t, "none")
	tok, err := h.store.Receipt(ctx, "none")
	if err != nil || j.State != jobs.StateSucceeded {
		t.Fatalf("job %s, receipt %v", j.State, err)
	}
	c, err := v.VerifyReceipt(tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.Job != "none" || c.Type != "nothing" || c.Result.Size != 0 || c.Result.SHA256 != hex.EncodeToString(empty[:]) || c.Result.ContentType != "" ||
		c.InputSHA256 != hex.EncodeToString(input[:]) || c.Attempts != 1 || c.Worker != w.ID() || !c.Finished().Equal(*j.FinishedAt) {
		t.Fatalf("receipt of a job without a result = %+v (record %+v)", c, j)
	}

	// A result stored by an earlier run that could not record it: the
	// worker records it without running the job, and states it.
	bw, err := h.blobs.Create("marked", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(bw, "made earlier")
	res := blob.Finished{ContentType: "text/plain", Size: bw.Size(), SHA256: bw.SHA256(), Attempt: 1}
	if err := bw.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := h.blobs.MarkFinished("marked", res); err != nil {
		t.Fatal(err)
	}
	before := ran.Load()
	h.submit(t, "nothing", "marked", 0)
	j = h.waitFinal(t, "marked")
	tok, err = h.store.Receipt(ctx, "marked")
	if err != nil {
		t.Fatal(err)
	}
	if c, err = v.VerifyReceipt(tok); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("made earlier"))
	if ran.Load() != before || c.Result.SHA256 != hex.EncodeToString(sum[:]) || c.Result.SHA256 != j.Result.SHA256 || c.Result.Size != 12 || c.Result.ContentType != "text/plain" {
		t.Fatalf("receipt of a recorded earlier result = %+v (record %+v, ran %d)", c.Result, j.Result, ran.Load()-before)
	}
}

// TestNoReceiptKeysNoReceipt: a worker embedded without receipt keys runs
// jobs the same and makes no receipt; one given a set that cannot sign is
// refused at New.
func TestNoReceiptKeysNoReceipt(t *testing.T) {
	h := start(t, worker.Type{Name: "nothing", Timeout: time.Minute, InputSchema: anyObject,
		Handle: func(context.Context, *worker.Task) error { return nil }})
	h.submit(t, "nothing", "plain", 0)
	if j := h.waitFinal(t, "plain"); j.State != jobs.StateSucceeded {
		t.Fatalf("job %s", j.State)
	}
	ctx := context.Background()
	if _, err := h.store.Receipt(ctx, "plain"); !errors.Is(err, jobs.ErrNoReceipt) {
		t.Fatalf("receipt of a keyless worker's job: %v", err)
	}
	if n, _ := h.rdb.Exists(ctx, pubkeys.Key(tokens.KindReceipt)).Result(); n != 0 {
		t.Fatal("a keyless worker published receipt keys")
	}
	k, _ := tokens.GenerateKey()
	verifyOnly, _ := tokens.NewKeySet(nil, &tokens.Key{ID: k.ID, Public: k.Public})
	if _, err := worker.New(worker.Config{ResultsDir: h.blobs.Root(), ReceiptKeys: verifyOnly, Logger: quiet}, h.rdb,
		worker.Type{Name: "nothing", Timeout: time.Minute, Handle: func(context.Context, *worker.Task) error { return nil }}); err == nil {
		t.Fatal("New accepted receipt keys that cannot sign")
	}
}
