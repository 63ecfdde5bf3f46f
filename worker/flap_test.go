package worker_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/worker"
)

// TestStoreFlappingLosesNothing: a results store that comes and goes
// every few checks while a backlog runs (a flaky mount) pauses and resumes
// the worker over and over. However often: no job runs twice or fails, at
// most Concurrency attempts run at once, only one Asynq server of the
// worker is alive once it settles, and Shutdown while paused returns and
// leaves none.
func TestStoreFlappingLosesNothing(t *testing.T) {
	h := newHarness(t)
	root := filepath.Join(t.TempDir(), "results")
	var running, most, runs atomic.Int32
	typ := worker.Type{Name: "store", Timeout: time.Minute, InputSchema: anyObject,
		Handle: func(ctx context.Context, task *worker.Task) error {
			n := running.Add(1)
			defer running.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			runs.Add(1)
			select { // a little work, so that attempts overlap
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(5 * time.Millisecond):
			}
			w, err := task.Result("text/plain")
			if err != nil {
				return err
			}
			_, err = io.WriteString(w, "result of "+task.ID())
			return err
		}}
	w, err := worker.New(worker.Config{
		ResultsDir: root, ResultsMinFree: -1, ResultsCheckInterval: 5 * time.Millisecond, Concurrency: 2,
		DelayedTaskCheckInterval: 20 * time.Millisecond, RetryDelay: func(int, error) time.Duration { return 10 * time.Millisecond },
		Logger: quiet,
	}, h.rdb, typ)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, 40)
	for i := range ids {
		ids[i] = fmt.Sprintf("f%02d", i)
		h.submit(t, "store", ids[i], 3)
	}
	for range 15 { // the store goes away and comes back, a few checks apart
		for _, move := range [][2]string{{root, root + ".away"}, {root + ".away", root}} {
			after := worker.StoreChecks(w) + 3
			waitfor.True(t, 10*time.Second, func() bool { return worker.StoreChecks(w) >= after })
			if err := os.Rename(move[0], move[1]); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, id := range ids {
		j := h.waitFinal(t, id)
		if j.State != jobs.StateSucceeded {
			t.Errorf("%s = %s (error %v), want succeeded", id, j.State, j.Error)
		}
	}
	if m := most.Load(); m > 2 {
		t.Errorf("%d attempts ran at once, Concurrency is 2", m)
	}
	t.Logf("%d handler runs for %d jobs (a run a broken store stopped is handed back and run again)", runs.Load(), len(ids))
	insp := asynq.NewInspectorFromRedisClient(h.rdb)
	waitfor.True(t, 10*time.Second, func() bool {
		srvs, err := insp.Servers()
		return err == nil && len(srvs) == 1
	})
	// Paused, then shut down: Shutdown returns and no server is left.
	if err := os.Rename(root, root+".away"); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, 10*time.Second, func() bool { return w.Ready() != nil })
	done := make(chan struct{})
	go func() { w.Shutdown(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Shutdown of a paused worker did not return")
	}
	waitfor.True(t, 10*time.Second, func() bool {
		srvs, err := insp.Servers()
		return err == nil && len(srvs) == 0
	})
}
