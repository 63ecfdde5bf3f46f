package worker

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/claimcheck/claimcheck/internal/config"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
)

func TestDefaultResultsMinFreeMatchesConfig(t *testing.T) {
	if DefaultResultsMinFree != config.DefaultResultsMinFree {
		t.Fatalf("worker.DefaultResultsMinFree = %d, config's = %d", DefaultResultsMinFree, config.DefaultResultsMinFree)
	}
}

// TestPauseLetsRunningTaskFinish: a pause stops taking tasks but lets the
// running one end on its own (not handed back, not cancelled); a resume
// while it still runs waits for it, so no more than Concurrency run at
// once; then the task queued meanwhile runs on the new generation.
func TestPauseLetsRunningTaskFinish(t *testing.T) {
	rdb := redistest.Client(t)
	q := newQueueServer(rdb, asynq.Config{Concurrency: 1, Queues: map[string]int{"default": 1},
		TaskCheckInterval: 10 * time.Millisecond, ShutdownTimeout: 50 * time.Millisecond, LogLevel: asynq.ErrorLevel})
	var starts atomic.Int32
	q.started = func(err error) {
		if err != nil {
			t.Errorf("generation did not start: %v", err)
		}
		starts.Add(1)
	}
	release := make(chan struct{})
	first := make(chan struct{})
	var running, most atomic.Int32
	var done []string
	var doneCount atomic.Int32
	mux := asynq.NewServeMux()
	mux.HandleFunc("t", func(ctx context.Context, task *asynq.Task) error {
		n := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		if string(task.Payload()) == "first" {
			close(first)
			select {
			case <-release:
			case <-ctx.Done():
				t.Error("the running task was cancelled by the pause")
				return ctx.Err()
			}
		}
		done = append(done, string(task.Payload())) // one at a time: Concurrency 1
		doneCount.Add(1)
		return nil
	})
	if err := q.Start(mux); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Shutdown)
	c := asynq.NewClientFromRedisClient(rdb)
	enqueue := func(p string) {
		if _, err := c.Enqueue(asynq.NewTask("t", []byte(p)), asynq.TaskID(p)); err != nil {
			t.Fatal(err)
		}
	}
	enqueue("first")
	<-first
	if !q.pause() {
		t.Fatal("pause of a running worker reported nothing to pause")
	}
	enqueue("second")
	if resumed, err := q.resume(); !resumed || err != nil {
		t.Fatalf("resume = %v, %v", resumed, err)
	}
	if starts.Load() != 1 {
		t.Fatalf("a generation started while the paused one still ran a task (%d starts)", starts.Load())
	}
	close(release)
	waitfor.True(t, 10*time.Second, func() bool { return doneCount.Load() == 2 })
	if done[0] != "first" || done[1] != "second" || most.Load() != 1 || starts.Load() != 2 {
		t.Fatalf("done %v, at most %d at once, %d generations", done, most.Load(), starts.Load())
	}
	// The first task ended on its own: completed, not handed back.
	info, err := asynq.NewInspectorFromRedisClient(rdb).GetQueueInfo("default")
	if err != nil || info.Pending != 0 || info.Retry != 0 || info.Active != 0 {
		t.Fatalf("queue = %+v (%v)", info, err)
	}
}

// TestStoreUnusable: the check the code that saw a write fail asks for
// tells a broken store (and pauses) from a job's own failure.
func TestStoreUnusable(t *testing.T) {
	rdb := redistest.Client(t)
	root := filepath.Join(t.TempDir(), "results")
	s, err := New(Config{ResultsDir: root, ResultsMinFree: -1, ResultsCheckInterval: time.Hour, Logger: slog.New(slog.DiscardHandler)}, rdb, echoType)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	if s.storeUnusable() || s.srv.isPaused() {
		t.Fatal("a healthy store reported unusable")
	}
	if err := os.RemoveAll(root); err != nil {
		t.Fatal(err)
	}
	if !s.storeUnusable() || !s.srv.isPaused() || s.Ready() == nil {
		t.Fatalf("a vanished store: unusable %v, paused %v, Ready %v", s.storeUnusable(), s.srv.isPaused(), s.Ready())
	}
	if err := os.MkdirAll(root, 0o750); err != nil {
		t.Fatal(err)
	}
	if s.storeUnusable() || s.srv.isPaused() || s.Ready() != nil {
		t.Fatal("the store is back, the worker still paused")
	}
}
