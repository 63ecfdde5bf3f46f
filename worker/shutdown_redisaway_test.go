package worker_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redisconn"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/syncbuf"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/worker"
)

// TestShutdownWithRedisAway: SIGTERM while Redis is frozen or dead. Shutdown
// returns, and once Redis is back the job is not lost: a fresh worker
// finishes it. How long Shutdown took is logged, not asserted: with
// ShutdownTimeout 1 s and a frozen Redis it took 13–18 s here, spent in
// Asynq's Shutdown, whose every loop waits out its Redis call in turn
// (asynq v0.26; the hand-back cannot be recorded, so the job reruns as
// its next attempt once its lease expires, about 40 s later).
func TestShutdownWithRedisAway(t *testing.T) {
	t.Parallel() // Redis is frozen for most of a minute
	for _, fault := range []string{"SIGSTOP", "SIGKILL"} {
		t.Run(fault, func(t *testing.T) {
			t.Parallel()
			h, srv := faultHarness(t, "--appendonly", "yes", "--appendfsync", "always")
			rdb := h.rdb
			started := make(chan struct{}, 4)
			typ := worker.Type{Name: "away", Timeout: time.Minute, InputSchema: anyObject,
				Handle: func(ctx context.Context, task *worker.Task) error {
					started <- struct{}{}
					if task.Attempt() > 1 || task.Checkpoint() != nil {
						w, err := task.Result("text/plain")
						if err != nil {
							return err
						}
						_, err = io.WriteString(w, "done")
						return err
					}
					<-ctx.Done()
					return ctx.Err()
				}}
			first := h.worker(t, time.Second, typ)
			h.submitAsAPI(t, "away", "a1", 2)
			select {
			case <-started:
			case <-time.After(10 * time.Second):
				t.Fatal("job never started")
			}
			if fault == "SIGSTOP" {
				srv.Pause()
			} else {
				srv.Kill()
			}
			begin := time.Now()
			done := make(chan struct{})
			go func() { first.Shutdown(); close(done) }()
			select {
			case <-done:
			case <-time.After(60 * time.Second):
				t.Fatal("Shutdown with Redis away did not return within a minute")
			}
			t.Logf("Shutdown with Redis %s took %v", fault, time.Since(begin).Round(time.Millisecond))
			if fault == "SIGSTOP" {
				srv.Resume()
			} else {
				srv.Restart()
			}
			waitfor.True(t, 20*time.Second, func() bool { return rdb.Ping(context.Background()).Err() == nil })
			second := h.worker(t, 0, typ)
			t.Cleanup(second.Shutdown)
			var j *jobs.Job
			waitfor.True(t, 150*time.Second, func() bool {
				var err error
				j, err = h.store.Get(context.Background(), "a1")
				return err == nil && j.State.Final()
			})
			if j == nil || j.State != jobs.StateSucceeded {
				t.Fatalf("job after shutdown with Redis away: %+v", j)
			}
			t.Logf("succeeded after %v (attempts %d)", time.Since(begin).Round(time.Millisecond), j.Attempts)
		})
	}
}

// TestShutdownTellsHandlersFirstWithRedisFrozen: SIGTERM while Redis is
// frozen. The running handler hears of the shutdown (ErrShuttingDown) at
// once, not after the worker has given up withdrawing its job types from
// the registry (5 s against a frozen Redis), which would eat into the
// grace period the handler has to save its work. (Before: the withdrawal
// came first and was waited for.)
func TestShutdownTellsHandlersFirstWithRedisFrozen(t *testing.T) {
	srv := redistest.Start(t)
	opt := &redis.Options{Addr: srv.Addr()}
	redisconn.Configure(opt)
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	dir := t.TempDir()
	h := &harness{rdb: rdb, store: jobs.NewStore(rdb, nil)}
	logs := &syncbuf.Buffer{}
	started := make(chan struct{}, 1)
	told := make(chan string, 1)
	typ := worker.Type{Name: "frozen", Timeout: time.Minute, InputSchema: anyObject,
		Handle: func(ctx context.Context, task *worker.Task) error {
			started <- struct{}{}
			<-ctx.Done()
			told <- logs.String()
			return ctx.Err()
		}}
	w, err := worker.New(worker.Config{ResultsDir: dir, Concurrency: 1, ShutdownTimeout: time.Second,
		Logger: slog.New(slog.NewJSONHandler(logs, nil))}, rdb, typ)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	h.submitAsAPI(t, "frozen", "z1", 0)
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("job never started")
	}
	srv.Pause()
	t.Cleanup(srv.Resume)
	done := make(chan struct{})
	go func() { w.Shutdown(); close(done) }()
	select {
	case before := <-told:
		if strings.Contains(before, "job types not withdrawn") {
			t.Fatal("the handler was told of the shutdown only after the registry withdrawal gave up")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the handler was never told")
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if !strings.Contains(logs.String(), "job types not withdrawn") {
		t.Fatal("Shutdown returned before its registry withdrawal ended")
	}
}
