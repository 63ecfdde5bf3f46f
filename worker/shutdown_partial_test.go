package worker_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/worker"
)

// TestNilAfterShutdownCancelIsNotASuccess: a handler that, told to stop
// (ErrShuttingDown), returns nil with half a result written has not
// succeeded: its bytes are not stored, the job is queued again without a
// retry spent, and the next run's result is the job's. A cancel requested
// while the job was being handed back still ends it canceled, not run.
func TestNilAfterShutdownCancelIsNotASuccess(t *testing.T) {
	h := newHarness(t)
	started := make(chan *worker.Task, 4)
	var second atomic.Bool
	typ := worker.Type{Name: "partial", Timeout: time.Minute, InputSchema: anyObject,
		Handle: func(ctx context.Context, task *worker.Task) error {
			started <- task
			w, err := task.Result("text/plain")
			if err != nil {
				return err
			}
			if second.Load() {
				_, err = io.WriteString(w, "the whole result")
				return err
			}
			io.WriteString(w, "half a res")
			<-ctx.Done()
			return nil // wrongly, but it happens
		}}
	first := h.worker(t, time.Minute, typ)
	h.submitAsAPI(t, "partial", "p1", 0)
	h.submitAsAPI(t, "partial", "p2", 0)
	waitTask(t, started)
	waitTask(t, started)
	first.Shutdown()
	for _, id := range []string{"p1", "p2"} {
		j, err := h.store.Get(context.Background(), id)
		if err != nil || j.State != jobs.StateQueued || j.Result != nil || j.Attempts != 1 {
			t.Fatalf("%s after the hand-back = %+v, %v; want queued with no result", id, j, err)
		}
		if _, err := h.blobs.Open(id); err == nil {
			t.Fatalf("%s: the half result was stored", id)
		}
	}
	if _, err := h.store.RequestCancel(context.Background(), "p2", jobs.AnyEpoch); err != nil {
		t.Fatal(err)
	}
	second.Store(true)
	w := h.worker(t, 0, typ)
	t.Cleanup(w.Shutdown)
	j := h.waitFinal(t, "p1")
	sum := sha256.Sum256([]byte("the whole result"))
	if j.State != jobs.StateSucceeded || j.Attempts != 1 || j.Result == nil || j.Result.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("p1 = %s after %d attempts, result %+v; want the next run's whole result", j.State, j.Attempts, j.Result)
	}
	if j := h.waitFinal(t, "p2"); j.State != jobs.StateCanceled {
		t.Fatalf("p2, cancelled while handed back, = %s", j.State)
	}
}
