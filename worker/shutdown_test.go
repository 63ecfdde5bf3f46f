package worker_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/blob"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redisconn"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/worker"
)

// submitAsAPI is submit with the delivery budget the api gives a task
// (jobs.DeliveryRetries: one spare, for hand-backs).
func (h *harness) submitAsAPI(t *testing.T, typ, id string, maxRetry int) {
	t.Helper()
	ctx := context.Background()
	if _, err := h.store.Create(ctx, jobs.NewJob{ID: id, Type: typ, Owner: "ann", Queue: "default", MaxRetry: maxRetry, Timeout: time.Minute, TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(jobs.TaskPayload{Job: id, Owner: "ann", Input: json.RawMessage(`{}`)})
	c := asynq.NewClientFromRedisClient(h.rdb)
	if _, err := c.EnqueueContext(ctx, asynq.NewTask(typ, payload), asynq.TaskID(id),
		asynq.MaxRetry(jobs.DeliveryRetries(maxRetry)), asynq.Timeout(time.Minute)); err != nil {
		t.Fatal(err)
	}
}

// TestShutdownCancelsHandlersAtOnce: SIGTERM's Shutdown cancels a running
// handler's context with ErrShuttingDown at the start of the grace period
// (here a minute long), not at its end. The handler saves a checkpoint and
// returns; its job is queued again before Shutdown returns, spends no
// retry, and the next worker's attempt starts from the checkpoint.
// (Before: the handler heard nothing until the grace period ran out, and
// whatever it had done was thrown away.)
func TestShutdownCancelsHandlersAtOnce(t *testing.T) {
	h := newHarness(t)
	started := make(chan *worker.Task, 2)
	causes := make(chan error, 2)
	typ := worker.Type{
		Name: "resumable", Timeout: time.Minute, InputSchema: anyObject,
		Handle: func(ctx context.Context, task *worker.Task) error {
			started <- task
			if string(task.Checkpoint()) == "step 7" {
				w, err := task.Result("text/plain")
				if err != nil {
					return err
				}
				_, err = io.WriteString(w, "resumed from "+string(task.Checkpoint()))
				return err
			}
			<-ctx.Done()
			causes <- context.Cause(ctx)
			if err := task.SaveCheckpoint([]byte("step 7")); err != nil {
				return err
			}
			return ctx.Err()
		},
	}
	first := h.worker(t, time.Minute, typ)
	h.submitAsAPI(t, "resumable", "sd1", 0)
	if task := waitTask(t, started); task.Attempt() != 1 || task.Checkpoint() != nil {
		t.Fatalf("first run: attempt %d, checkpoint %q", task.Attempt(), task.Checkpoint())
	}
	stopped := make(chan struct{})
	go func() { first.Shutdown(); close(stopped) }()
	select {
	case cause := <-causes:
		if !errors.Is(cause, worker.ErrShuttingDown) {
			t.Fatalf("handler's context cause %v, want ErrShuttingDown", cause)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler's context was not cancelled when shutdown began")
	}
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown still waits although its only handler returned")
	}
	j, err := h.store.Get(context.Background(), "sd1")
	if err != nil {
		t.Fatal(err)
	}
	if j.State != jobs.StateQueued || j.Error != nil {
		t.Fatalf("after the hand-back the job is %s (error %v), want queued", j.State, j.Error)
	}

	second := h.worker(t, 0, typ)
	t.Cleanup(second.Shutdown)
	if task := waitTask(t, started); task.Attempt() != 1 || string(task.Checkpoint()) != "step 7" {
		t.Fatalf("second run: attempt %d, checkpoint %q; want attempt 1 from %q", task.Attempt(), task.Checkpoint(), "step 7")
	}
	j = h.waitFinal(t, "sd1")
	if j.State != jobs.StateSucceeded || j.Attempts != 1 {
		t.Fatalf("job = %s after %d attempts, want succeeded after 1", j.State, j.Attempts)
	}
	if n, _ := h.rdb.Exists(context.Background(), jobs.CheckpointKey("sd1")).Result(); n != 0 {
		t.Fatal("the checkpoint outlived its job")
	}
}

func waitTask(t *testing.T, ch <-chan *worker.Task) *worker.Task {
	t.Helper()
	select {
	case task := <-ch:
		return task
	case <-time.After(10 * time.Second):
		t.Fatal("the job never started")
		return nil
	}
}

// TestSuccessSurvivesARedisBlip: a handler finishes, its result is stored,
// and Redis dies before the record says so. The worker keeps the success
// (a finished marker beside the result) and writes the record when Redis
// answers again: the job succeeds once, as attempt 1, and is not run again.
// (Before: the failed write was charged as a failed attempt and the job ran
// again.)
func TestSuccessSurvivesARedisBlip(t *testing.T) {
	h, srv := faultHarness(t)
	var runs atomic.Int32
	typ := worker.Type{
		Name: "blip", Timeout: time.Minute, InputSchema: anyObject, MaxRetry: 3,
		Handle: func(ctx context.Context, task *worker.Task) error {
			runs.Add(1)
			w, err := task.Result("text/plain")
			if err != nil {
				return err
			}
			if _, err := io.WriteString(w, "the answer"); err != nil {
				return err
			}
			srv.Kill() // Redis dies as the handler returns
			return nil
		},
	}
	w := h.worker(t, 0, typ)
	t.Cleanup(w.Shutdown)
	h.submitAsAPI(t, "blip", "b1", 3)
	// The worker notes the success beside the result while Redis is away.
	waitfor.True(t, 20*time.Second, func() bool {
		_, ok, _ := h.blobs.FinishedResult("b1")
		return ok
	})
	srv.Restart()
	j := h.waitFinal(t, "b1")
	sum := sha256.Sum256([]byte("the answer"))
	if j.State != jobs.StateSucceeded || j.Attempts != 1 || j.Result == nil || j.Result.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("job = %s after %d attempts, result %+v; want succeeded after 1 with the handler's bytes", j.State, j.Attempts, j.Result)
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("the handler ran %d times, want once", n)
	}
	// The marker goes once the record's write (and the slot's release
	// after it) has returned.
	waitfor.True(t, 10*time.Second, func() bool {
		_, ok, _ := h.blobs.FinishedResult("b1")
		return !ok
	})
}

// faultHarness is a harness on a private redis-server of its own, which the
// test may freeze, kill and restart, with the timeouts services use.
func faultHarness(t *testing.T, serverArgs ...string) (*harness, *redistest.Process) {
	t.Helper()
	srv := redistest.Start(t, serverArgs...)
	opt := &redis.Options{Addr: srv.Addr()}
	redisconn.Configure(opt)
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	h := &harness{rdb: rdb, store: jobs.NewStore(rdb, nil)}
	var err error
	if h.blobs, err = blob.NewDir(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	return h, srv
}

// TestFinishedResultIsRecordedNotRerun: a job whose result an earlier
// attempt stored, with a finished marker, but whose record still says it
// has to run (that worker stopped before Redis came back) is recorded as
// succeeded with that result by the next worker, which does not run it.
func TestFinishedResultIsRecordedNotRerun(t *testing.T) {
	h := newHarness(t)
	bw, err := h.blobs.Create("f1", 0)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(bw, "made earlier")
	if err := bw.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := h.blobs.MarkFinished("f1", blob.Finished{ContentType: "text/plain", Size: bw.Size(), SHA256: bw.SHA256(), Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int32
	w := h.worker(t, 0, worker.Type{Name: "once", Timeout: time.Minute, InputSchema: anyObject,
		Handle: func(ctx context.Context, task *worker.Task) error { runs.Add(1); return nil }})
	t.Cleanup(w.Shutdown)
	h.submitAsAPI(t, "once", "f1", 0)
	j := h.waitFinal(t, "f1")
	if j.State != jobs.StateSucceeded || j.Result == nil || j.Result.SHA256 != bw.SHA256() || j.Result.ContentType != "text/plain" {
		t.Fatalf("job = %s, result %+v; want succeeded with the stored result", j.State, j.Result)
	}
	if runs.Load() != 0 {
		t.Fatal("the job ran again although its result was stored")
	}
}

// TestFinishedResultOfAnotherRunIsKept: while a job runs, another run of it
// (a task delivered twice during an outage) stores its result and marks it
// finished. This run's success must not replace those bytes: the record and
// the stored result agree, and they are the other run's.
func TestFinishedResultOfAnotherRunIsKept(t *testing.T) {
	h := newHarness(t)
	var other blob.Finished
	w := h.worker(t, 0, worker.Type{Name: "twice", Timeout: time.Minute, InputSchema: anyObject,
		Handle: func(ctx context.Context, task *worker.Task) error {
			// The other run, finishing first.
			bw, err := h.blobs.Create(task.ID(), 0)
			if err != nil {
				return err
			}
			io.WriteString(bw, "the other run's bytes")
			if err := bw.Commit(); err != nil {
				return err
			}
			other = blob.Finished{ContentType: "text/plain", Size: bw.Size(), SHA256: bw.SHA256(), Attempt: 1}
			if err := h.blobs.MarkFinished(task.ID(), other); err != nil {
				return err
			}
			out, err := task.Result("text/plain")
			if err != nil {
				return err
			}
			_, err = io.WriteString(out, "this run's different bytes")
			return err
		}})
	t.Cleanup(w.Shutdown)
	h.submitAsAPI(t, "twice", "t1", 0)
	j := h.waitFinal(t, "t1")
	if j.State != jobs.StateSucceeded || j.Result == nil || j.Result.SHA256 != other.SHA256 {
		t.Fatalf("job = %s, result %+v; want the other run's %s", j.State, j.Result, other.SHA256)
	}
	if b := h.stored(t, "t1"); b != "the other run's bytes" {
		t.Fatalf("stored result %q, want the other run's bytes", b)
	}
}

// TestStoreFailureMidJobHandsTheJobBack: the one attempt that meets a
// results store gone bad before the health check saw it is not charged:
// the worker pauses, the job is queued again with its retry unspent, and
// with the store back another worker runs it to success as attempt 1. (Before: the attempt
// failed, and with no retry left the job failed with it.)
func TestStoreFailureMidJobHandsTheJobBack(t *testing.T) {
	h := newHarness(t)
	root := filepath.Join(t.TempDir(), "results")
	w := h.uncheckedStoreWorker(t, root)
	if err := os.Rename(root, root+".away"); err != nil {
		t.Fatal(err)
	}
	h.submitAsAPI(t, "store", "mid1", 0)
	waitfor.True(t, 10*time.Second, func() bool { return w.Ready() != nil })
	waitfor.True(t, 10*time.Second, func() bool {
		j, err := h.store.Get(context.Background(), "mid1")
		return err == nil && j.State == jobs.StateQueued && j.Attempts == 1
	})
	// The store is back; this worker would see it at its next check, an
	// hour away: another worker runs the job.
	if err := os.Rename(root+".away", root); err != nil {
		t.Fatal(err)
	}
	h.storeWorker(t, root, -1, io.Discard)
	j := h.waitFinal(t, "mid1")
	if j.State != jobs.StateSucceeded || j.Attempts != 1 {
		t.Fatalf("job %s after %d attempts (error %v), want succeeded as attempt 1", j.State, j.Attempts, j.Error)
	}
}
