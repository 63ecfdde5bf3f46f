package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/blob"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/worker"
)

var anyObject = json.RawMessage(`{"type":"object"}`)

// quiet drops the worker's logs: the tests assert on job records instead.
var quiet = slog.New(slog.DiscardHandler)

type harness struct {
	rdb   redis.UniversalClient
	store *jobs.Store
	blobs *blob.Dir
}

func start(t *testing.T, types ...worker.Type) *harness {
	t.Helper()
	h := newHarness(t)
	t.Cleanup(h.worker(t, 0, types...).Shutdown)
	return h
}

// newHarness is a store and blob directory on a fresh Redis, with no worker.
func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{rdb: redistest.Client(t)}
	h.store = jobs.NewStore(h.rdb, nil)
	var err error
	if h.blobs, err = blob.NewDir(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	return h
}

// worker starts a worker on h (shutdownTimeout 0: the default).
func (h *harness) worker(t *testing.T, shutdownTimeout time.Duration, types ...worker.Type) *worker.Server {
	t.Helper()
	w, err := worker.New(worker.Config{
		ResultsDir:               h.blobs.Root(),
		Concurrency:              2,
		DelayedTaskCheckInterval: 50 * time.Millisecond,
		RetryDelay:               func(int, error) time.Duration { return 10 * time.Millisecond },
		ShutdownTimeout:          shutdownTimeout,
		Logger:                   quiet,
	}, h.rdb, types...)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	return w
}

// submit does what the API does: record, then enqueue with the id as TaskID.
func (h *harness) submit(t *testing.T, typ, id string, maxRetry int) {
	t.Helper()
	ctx := context.Background()
	if _, err := h.store.Create(ctx, jobs.NewJob{ID: id, Type: typ, Owner: "ann", Queue: "default", MaxRetry: maxRetry, Timeout: 10 * time.Second, TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(jobs.TaskPayload{Job: id, Input: json.RawMessage(`{}`)})
	c := asynq.NewClientFromRedisClient(h.rdb)
	if _, err := c.EnqueueContext(ctx, asynq.NewTask(typ, payload), asynq.TaskID(id), asynq.MaxRetry(maxRetry), asynq.Timeout(10*time.Second)); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) waitFinal(t *testing.T, id string) *jobs.Job {
	t.Helper()
	var j *jobs.Job
	waitfor.True(t, 10*time.Second, func() bool {
		var err error
		j, err = h.store.Get(context.Background(), id)
		return err == nil && j.State.Final()
	})
	return j
}

func TestSuccessStoresResult(t *testing.T) {
	h := start(t, worker.Type{
		Name: "echo", Timeout: time.Minute, InputSchema: anyObject,
		Handle: func(ctx context.Context, task *worker.Task) error {
			task.Progress(50, "half")
			w, err := task.Result("text/plain")
			if err != nil {
				return err
			}
			_, err = io.WriteString(w, "result of "+task.ID())
			return err
		},
	})
	h.submit(t, "echo", "j1", 0)
	j := h.waitFinal(t, "j1")
	if j.State != jobs.StateSucceeded || j.Result == nil || j.Result.Size != int64(len("result of j1")) || j.Progress.Percent != 100 || j.Attempts != 1 {
		t.Fatalf("job = %+v", j)
	}
	if b := h.stored(t, "j1"); b != "result of j1" {
		t.Fatalf("blob = %q", b)
	}
}

// stored is job id's stored result.
func (h *harness) stored(t *testing.T, id string) string {
	t.Helper()
	f, err := h.blobs.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestFailingHandlerRetriesThenFails(t *testing.T) {
	var calls atomic.Int32
	h := start(t, worker.Type{
		Name: "flaky", Timeout: time.Minute, InputSchema: anyObject,
		Handle: func(ctx context.Context, task *worker.Task) error {
			calls.Add(1)
			w, _ := task.Result("text/plain")
			io.WriteString(w, "partial")
			return fmt.Errorf("attempt %d broke", task.Attempt())
		},
	})
	h.submit(t, "flaky", "f1", 2)
	j := h.waitFinal(t, "f1")
	if j.State != jobs.StateFailed || j.Error == nil || *j.Error != "attempt 3 broke" || j.Attempts != 3 || calls.Load() != 3 {
		t.Fatalf("job = %+v (error %v), calls %d", j, j.Error, calls.Load())
	}
	if _, err := h.blobs.Open("f1"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("failed job left a result: %v", err)
	}
}

func TestPermanentErrorsAndPanicsDoNotRetry(t *testing.T) {
	var calls atomic.Int32
	h := start(t,
		worker.Type{
			Name: "bad", Timeout: time.Minute, InputSchema: anyObject,
			Handle: func(ctx context.Context, task *worker.Task) error {
				calls.Add(1)
				return fmt.Errorf("input makes no sense: %w", worker.ErrPermanent)
			},
		},
		worker.Type{
			Name: "panics", Timeout: time.Minute, InputSchema: anyObject,
			Handle: func(ctx context.Context, task *worker.Task) error {
				calls.Add(1)
				var m map[string]int
				m["x"] = 1 // nil map write: a handler bug must not take the worker down
				return nil
			},
		})
	h.submit(t, "bad", "b1", 5)
	h.submit(t, "panics", "p1", 5)
	for _, id := range []string{"b1", "p1"} {
		j := h.waitFinal(t, id)
		if j.State != jobs.StateFailed || j.Attempts != 1 || j.Error == nil {
			t.Fatalf("%s = %+v", id, j)
		}
	}
	if calls.Load() != 2 {
		t.Fatalf("handlers ran %d times, want 2", calls.Load())
	}
}

func TestCancelRequestedBeforeStartNeverRuns(t *testing.T) {
	var ran atomic.Bool
	h := start(t, worker.Type{
		Name: "never", Timeout: time.Minute, InputSchema: anyObject,
		Handle: func(context.Context, *worker.Task) error { ran.Store(true); return nil },
	})
	ctx := context.Background()
	if _, err := h.store.Create(ctx, jobs.NewJob{ID: "c1", Type: "never", Queue: "default", Timeout: time.Second, TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.RequestCancel(ctx, "c1", jobs.AnyEpoch); err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(jobs.TaskPayload{Job: "c1"})
	if _, err := asynq.NewClientFromRedisClient(h.rdb).Enqueue(asynq.NewTask("never", payload), asynq.TaskID("c1")); err != nil {
		t.Fatal(err)
	}
	j := h.waitFinal(t, "c1")
	// The task must also leave Asynq's queues, not linger as pending.
	insp := asynq.NewInspectorFromRedisClient(h.rdb)
	waitfor.True(t, 5*time.Second, func() bool {
		q, err := insp.GetQueueInfo("default")
		return err == nil && q.Pending == 0 && q.Active == 0
	})
	if j.State != jobs.StateCanceled || ran.Load() {
		t.Fatalf("state %s, handler ran %v", j.State, ran.Load())
	}
}

func TestProgressStopsHandlerOnCancelRequest(t *testing.T) {
	started := make(chan struct{})
	var sawDone atomic.Bool
	h := start(t, worker.Type{
		Name: "loop", Timeout: time.Minute, InputSchema: anyObject,
		Handle: func(ctx context.Context, task *worker.Task) error {
			close(started)
			for i := 0; ; i++ {
				task.Progress(float64(i%100), "tick")
				select {
				case <-ctx.Done():
					sawDone.Store(true)
					return ctx.Err()
				case <-time.After(5 * time.Millisecond):
				}
			}
		},
	})
	h.submit(t, "loop", "l1", 3)
	<-started
	// Only the flag: no Asynq cancellation message. The next progress
	// write must notice it.
	if _, err := h.store.RequestCancel(context.Background(), "l1", jobs.AnyEpoch); err != nil {
		t.Fatal(err)
	}
	j := h.waitFinal(t, "l1")
	if j.State != jobs.StateCanceled || !sawDone.Load() || j.Attempts != 1 {
		t.Fatalf("job = %+v, handler saw ctx done: %v", j, sawDone.Load())
	}
}

func TestNewRejectsBadRegistrations(t *testing.T) {
	rdb := redistest.Client(t)
	blobs, _ := blob.NewDir(t.TempDir())
	ok := func(context.Context, *worker.Task) error { return nil }
	for name, types := range map[string][]worker.Type{
		"none":       nil,
		"no handler": {{Name: "a"}},
		"duplicate":  {{Name: "a", Handle: ok}, {Name: "a", Handle: ok}},
	} {
		if _, err := worker.New(worker.Config{ResultsDir: blobs.Root()}, rdb, types...); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}

func TestResultOverItsTypeLimitFailsOnce(t *testing.T) {
	var calls atomic.Int32
	h := start(t, worker.Type{
		Name: "big", Timeout: time.Minute, InputSchema: anyObject, MaxRetry: 3, MaxResultBytes: 1000,
		Handle: func(ctx context.Context, task *worker.Task) error {
			calls.Add(1)
			w, _ := task.Result("application/octet-stream")
			for range 5 {
				_, _ = w.Write(make([]byte, 300)) // errors swallowed: the limit still holds
			}
			return nil
		},
	})
	h.submit(t, "big", "b1", 3)
	j := h.waitFinal(t, "b1")
	if j.State != jobs.StateFailed || j.Error == nil || !strings.Contains(*j.Error, "1000-byte limit for big jobs") || calls.Load() != 1 {
		t.Fatalf("job = %+v (error %v), %d attempts", j, j.Error, calls.Load())
	}
	if _, err := h.blobs.Open("b1"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("a partial result is visible: %v", err)
	}
}

// TestShutdownHandsRunningJobsBack shuts a worker down while its job runs
// past the grace period: asynq puts the task back in its queue, and the job
// must neither fail nor spend a retry for it (it has none left here).
// Another worker then runs it to success as the same attempt.
func TestShutdownHandsRunningJobsBack(t *testing.T) {
	h := newHarness(t)
	started := make(chan int, 2)
	release := make(chan struct{})
	long := worker.Type{
		Name: "long", Timeout: time.Minute, InputSchema: anyObject,
		Handle: func(ctx context.Context, task *worker.Task) error {
			started <- task.Attempt()
			select {
			case <-release:
				w, err := task.Result("text/plain")
				if err != nil {
					return err
				}
				_, err = io.WriteString(w, "done")
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		},
	}
	first := h.worker(t, 50*time.Millisecond, long)
	h.submit(t, "long", "s1", 0)
	waitStarted := func(who string) int {
		t.Helper()
		select {
		case attempt := <-started:
			return attempt
		case <-time.After(10 * time.Second):
			t.Fatalf("%s worker never started the job", who)
			return 0
		}
	}
	waitStarted("first")
	first.Shutdown()

	second := h.worker(t, 0, long)
	t.Cleanup(second.Shutdown)
	if attempt := waitStarted("second"); attempt != 1 {
		t.Fatalf("the handed-back job ran as attempt %d, want 1", attempt)
	}
	close(release)
	j := h.waitFinal(t, "s1")
	if j.State != jobs.StateSucceeded || j.Attempts != 1 || j.Error != nil {
		t.Fatalf("job = %+v (error %v)", j, j.Error)
	}
}
