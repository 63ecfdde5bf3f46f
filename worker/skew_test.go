package worker_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/worker"
)

// TestReconcilerWithASkewedClockSparesLiveWorkers: a worker whose clock
// runs LostAfter and more ahead of the running worker's reads that
// worker's fresh heartbeats as old. A worker whose heartbeat still moves
// is alive, whatever the clocks say: its job (no retry left, reporting
// progress) is neither failed "worker lost" nor stopped, and succeeds as
// its first attempt. (Before: the skewed reconciler failed it on its first
// pass, while it ran.)
func TestReconcilerWithASkewedClockSparesLiveWorkers(t *testing.T) {
	h := newHarness(t)
	finish := make(chan struct{})
	stopped := make(chan error, 1)
	live := worker.Type{Name: "live", Timeout: time.Minute, InputSchema: anyObject,
		Handle: func(ctx context.Context, task *worker.Task) error {
			for {
				task.Progress(50, "working")
				select {
				case <-finish:
					w, err := task.Result("text/plain")
					if err != nil {
						return err
					}
					_, err = io.WriteString(w, "done")
					return err
				case <-ctx.Done():
					stopped <- context.Cause(ctx)
					return ctx.Err()
				case <-time.After(20 * time.Millisecond):
				}
			}
		}}
	runner, err := worker.New(worker.Config{ResultsDir: h.blobs.Root(), Concurrency: 1, HeartbeatInterval: 50 * time.Millisecond,
		ReconcileInterval: -1, Logger: quiet}, h.rdb, live)
	if err != nil {
		t.Fatal(err)
	}
	if err := runner.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(runner.Shutdown)
	h.submitAsAPI(t, "live", "k1", 0)
	h.waitState(t, "k1", jobs.StateRunning)

	// A reconciler on another machine, its clock 20 s ahead; it runs jobs
	// of another pool, so it never takes k1 itself.
	skewed, err := worker.New(worker.Config{ResultsDir: t.TempDir(), Concurrency: 1, Pools: []string{"elsewhere"},
		LostAfter: 300 * time.Millisecond, ReconcileInterval: 50 * time.Millisecond, Logger: quiet}, h.rdb,
		worker.Type{Name: "other", Pool: "elsewhere", Timeout: time.Minute, InputSchema: anyObject,
			Handle: func(context.Context, *worker.Task) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	worker.SetReconcilerClock(skewed, func() time.Time { return time.Now().Add(20 * time.Second) })
	if err := skewed.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(skewed.Shutdown)
	// Long enough for the skewed reconciler to have judged k1 many times
	// over: its verdict is a matter of passes, not of time.
	waitfor.True(t, 20*time.Second, func() bool { return worker.ReconcilePasses(skewed) >= 20 })

	select {
	case cause := <-stopped:
		t.Fatalf("the live attempt was stopped: %v", cause)
	default:
	}
	if j, err := h.store.Get(context.Background(), "k1"); err != nil || j.State != jobs.StateRunning || j.Error != nil {
		t.Fatalf("k1 while its worker lives = %+v, %v; want running, no error", j, err)
	}
	close(finish)
	j := h.waitFinal(t, "k1")
	if j.State != jobs.StateSucceeded || j.Attempts != 1 {
		t.Fatalf("k1 = %s after %d attempts, error %v; want succeeded after 1", j.State, j.Attempts, j.Error)
	}
}
