package worker_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/worker"
)

// lostWorkerEnv, set to a Redis address, makes the test binary a worker
// that runs "block" jobs until it is killed (runLostWorker).
const lostWorkerEnv = "CLAIMCHECK_TEST_LOST_WORKER"

// blockForever is a job type whose attempts run until their context ends.
var blockForever = worker.Type{
	Name: "block", Timeout: time.Hour, InputSchema: anyObject,
	Handle: func(ctx context.Context, task *worker.Task) error {
		<-ctx.Done()
		return ctx.Err()
	},
}

// runLostWorker is the child process: a worker on addr that says "ready"
// on stdout and runs until it is killed.
func runLostWorker(addr string) {
	dir, err := os.MkdirTemp("", "lost-worker-")
	if err != nil {
		os.Exit(2)
	}
	w, err := worker.New(worker.Config{ResultsDir: dir, Concurrency: 1, HeartbeatInterval: 50 * time.Millisecond,
		ReconcileInterval: -1, ReapInterval: -1, Logger: quiet}, redis.NewClient(&redis.Options{Addr: addr}), blockForever)
	if err != nil {
		os.Exit(2)
	}
	if err := w.Start(); err != nil {
		os.Exit(2)
	}
	os.Stdout.WriteString("ready\n")
	select {}
}

// lostWorker starts the child worker process and waits until it runs.
func lostWorker(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), lostWorkerEnv+"="+redistest.Addr())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("child worker: %q, %v", line, err)
	}
	return cmd
}

// survivor is a worker that reconciles quickly: a job is lost after 300ms
// without a heartbeat, looked for every 100ms.
func (h *harness) survivor(t *testing.T) {
	t.Helper()
	w, err := worker.New(worker.Config{
		ResultsDir: h.blobs.Root(), Concurrency: 1, LostAfter: 300 * time.Millisecond,
		ReconcileInterval: 100 * time.Millisecond, HeartbeatInterval: 50 * time.Millisecond, ShutdownTimeout: 100 * time.Millisecond,
		Logger: quiet,
	}, h.rdb, blockForever)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Shutdown)
}

// killRunning starts job id (max retries maxRetry) on a child worker and
// SIGKILLs it mid-run; before the kill, prepare may tamper with Redis. It
// returns when the child is dead.
func (h *harness) killRunning(t *testing.T, id string, maxRetry int, prepare func()) time.Time {
	t.Helper()
	child := lostWorker(t)
	h.submitAs(t, "ann", "block", id, maxRetry)
	waitfor.True(t, 10*time.Second, func() bool {
		j, err := h.store.Get(context.Background(), id)
		return err == nil && j.State == jobs.StateRunning
	})
	if prepare != nil {
		prepare()
	}
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	return time.Now()
}

// waitState waits for job id to reach state want.
func (h *harness) waitState(t *testing.T, id string, want jobs.State) *jobs.Job {
	t.Helper()
	var j *jobs.Job
	waitfor.True(t, 20*time.Second, func() bool {
		var err error
		j, err = h.store.Get(context.Background(), id)
		return err == nil && j.State == want
	})
	return j
}

// The repro: a job with no retries whose worker is SIGKILLed while
// it runs ends failed "worker lost" instead of running forever.
func TestReconcilerFailsJobOfKilledWorker(t *testing.T) {
	h := newHarness(t)
	killed := h.killRunning(t, "j1", 0, nil)
	h.survivor(t)
	j := h.waitState(t, "j1", jobs.StateFailed)
	t.Logf("detected %v after the SIGKILL (LostAfter 300ms, ReconcileInterval 100ms)", time.Since(killed).Round(time.Millisecond))
	if j.Error == nil || *j.Error != "worker lost" || j.Attempts != 1 || j.FinishedAt == nil {
		t.Fatalf("job = %+v, error %v", j, j.Error)
	}
	if n, err := h.rdb.ZCard(context.Background(), jobs.KeyHeartbeats).Result(); err != nil || n != 0 {
		t.Fatalf("heartbeat entries left: %d, %v", n, err)
	}
}

// asynq #1144: the task's lease is deleted and its worker dies. The task
// would stay active forever; the record says retrying (a retry is left)
// and the task gets an expired lease, for asynq's recoverer to re-run it.
func TestReconcilerRestoresLostLease(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	lease := "asynq:{default}:lease"
	h.killRunning(t, "j1", 1, func() {
		if n, err := h.rdb.ZRem(ctx, lease, "j1").Result(); err != nil || n != 1 {
			t.Fatalf("lease not deleted: %d, %v", n, err)
		}
	})
	h.survivor(t)
	j := h.waitState(t, "j1", jobs.StateRetrying)
	if j.Error == nil || *j.Error != "worker lost" || j.Attempts != 1 {
		t.Fatalf("job = %+v, error %v", j, j.Error)
	}
	if score, err := h.rdb.ZScore(ctx, lease, "j1").Result(); err != nil || score != 0 {
		t.Fatalf("lease = %v, %v; want an expired one", score, err)
	}
}

// A live worker's job is never taken for lost, however long it runs.
func TestReconcilerLeavesLiveJob(t *testing.T) {
	h := newHarness(t)
	h.survivor(t)
	h.submitAs(t, "ann", "block", "j1", 0)
	h.waitState(t, "j1", jobs.StateRunning)
	// Its heartbeat keeps moving, past three LostAfter periods (and so
	// many reconcile passes) after it started, and it still runs.
	ctx := context.Background()
	first, err := h.rdb.ZScore(ctx, jobs.KeyHeartbeats, "j1").Result()
	if err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, 10*time.Second, func() bool {
		s, err := h.rdb.ZScore(ctx, jobs.KeyHeartbeats, "j1").Result()
		return err == nil && s >= first+900
	})
	j, err := h.store.Get(ctx, "j1")
	if err != nil || j.State != jobs.StateRunning || j.Error != nil {
		t.Fatalf("job = %+v, %v", j, err)
	}
}
