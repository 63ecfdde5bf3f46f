package worker_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/config"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/worker"
)

// lostWorkerEnv, set to a REDIS_URL, makes the test binary a worker that
// runs "block" jobs until it is killed (runLostWorker).
const lostWorkerEnv = "CLAIMCHECK_TEST_LOST_WORKER"

// blockForever is a job type whose attempts run until their context ends.
var blockForever = worker.Type{
	Name: "block", Timeout: time.Hour, InputSchema: anyObject,
	Handle: func(ctx context.Context, task *worker.Task) error {
		<-ctx.Done()
		return ctx.Err()
	},
}

// runLostWorker is the child process: a worker on url (a server's or a
// cluster's, as the test package has) that says "ready" on stdout and runs
// until it is killed.
func runLostWorker(url string) {
	dir, err := os.MkdirTemp("", "lost-worker-")
	if err != nil {
		os.Exit(2)
	}
	r, err := config.OpenRedis(context.Background(), url)
	if err != nil {
		os.Exit(2)
	}
	w, err := worker.New(worker.Config{ResultsDir: dir, Concurrency: 1, HeartbeatInterval: 50 * time.Millisecond,
		ReconcileInterval: -1, ReapInterval: -1, Logger: quiet}, r.Client, blockForever)
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
	cmd.Env = append(os.Environ(), lostWorkerEnv+"="+redistest.URL())
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
// without a heartbeat, looked for every 100ms. tune, if not nil, may change
// its config; its types are types, or blockForever.
func (h *harness) survivor(t *testing.T, tune func(*worker.Config), types ...worker.Type) {
	t.Helper()
	cfg := worker.Config{
		ResultsDir: h.blobs.Root(), Concurrency: 1, LostAfter: 300 * time.Millisecond,
		ReconcileInterval: 100 * time.Millisecond, HeartbeatInterval: 50 * time.Millisecond, ShutdownTimeout: 100 * time.Millisecond,
		DelayedTaskCheckInterval: 50 * time.Millisecond, RetryDelay: func(int, error) time.Duration { return 10 * time.Millisecond },
		Logger: quiet,
	}
	if tune != nil {
		tune(&cfg)
	}
	if len(types) == 0 {
		types = []worker.Type{blockForever}
	}
	w, err := worker.New(cfg, h.rdb, types...)
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
	h.survivor(t, nil)
	j := h.waitState(t, "j1", jobs.StateFailed)
	t.Logf("detected %v after the SIGKILL (LostAfter 300ms, ReconcileInterval 100ms)", time.Since(killed).Round(time.Millisecond))
	if j.Error == nil || *j.Error != "worker lost" || j.Attempts != 1 || j.FinishedAt == nil {
		t.Fatalf("job = %+v, error %v", j, j.Error)
	}
	if n, err := h.rdb.ZCard(context.Background(), jobs.KeyHeartbeats).Result(); err != nil || n != 0 {
		t.Fatalf("heartbeat entries left: %d, %v", n, err)
	}
}

// rerun is the "block" type as a surviving worker runs it: each attempt
// after the first stores its number as the result and succeeds, unless
// fail is set.
func rerun(fail bool) worker.Type {
	return worker.Type{
		// The spec is blockForever's (only the handler differs), or the
		// registry, which still lists the killed worker, refuses it.
		Name: blockForever.Name, Timeout: blockForever.Timeout, InputSchema: blockForever.InputSchema,
		Handle: func(ctx context.Context, task *worker.Task) error {
			if fail {
				return fmt.Errorf("attempt %d broke", task.Attempt())
			}
			w, err := task.Result("text/plain")
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(w, "attempt %d", task.Attempt())
			return err
		},
	}
}

// archiveActive does to active task id what Asynq does to a task it
// archives (asynq v0.26 rdb.Archive): off the active list and the lease
// set, into the archive, its retry count untouched.
func (h *harness) archiveActive(t *testing.T, id string) {
	t.Helper()
	ctx := context.Background()
	pipe := h.rdb.TxPipeline()
	rem := pipe.LRem(ctx, "asynq:{default}:active", 0, id)
	pipe.ZRem(ctx, "asynq:{default}:lease", id)
	pipe.ZAdd(ctx, "asynq:{default}:archived", redis.Z{Score: float64(time.Now().Unix()), Member: id})
	pipe.HSet(ctx, "asynq:{default}:t:"+id, "state", "archived")
	if _, err := pipe.Exec(ctx); err != nil || rem.Val() != 1 {
		t.Fatalf("archive %s: %v (%d removed from active)", id, err, rem.Val())
	}
}

// taskRetried reads the retry count and budget Asynq holds for task id.
func (h *harness) taskRetried(t *testing.T, id string) (retried, maxRetry int) {
	t.Helper()
	info, err := asynq.NewInspectorFromRedisClient(h.rdb).GetTaskInfo("default", id)
	if err != nil {
		t.Fatal(err)
	}
	return info.Retried, info.MaxRetry
}

// An orphan whose task Asynq archived while the job still has retries left
// is requeued, not failed: its next run is attempt 2, accepted as such,
// and the job gets exactly its max_retry budget (attempts 2 and 3 after
// the lost one, when every re-run fails), no more.
func TestReconcilerRequeuesArchivedOrphanWithRetriesLeft(t *testing.T) {
	for _, tc := range []struct {
		name         string
		fail         bool
		want         jobs.State
		wantAttempts int
		wantErr      string
	}{
		{name: "re-run succeeds", want: jobs.StateSucceeded, wantAttempts: 2},
		{name: "every re-run fails", fail: true, want: jobs.StateFailed, wantAttempts: 3, wantErr: "attempt 3 broke"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.killRunning(t, "j1", 2, nil)
			h.archiveActive(t, "j1")
			h.survivor(t, nil, rerun(tc.fail))
			j := h.waitState(t, "j1", tc.want)
			if j.Attempts != tc.wantAttempts {
				t.Fatalf("attempts = %d, want %d (job %+v)", j.Attempts, tc.wantAttempts, j)
			}
			if tc.wantErr == "" && j.Error != nil || tc.wantErr != "" && (j.Error == nil || *j.Error != tc.wantErr) {
				t.Fatalf("error = %v, want %q", j.Error, tc.wantErr)
			}
			// Asynq counts the lost attempt as a retry, and the budget is
			// the job's plus the spare (jobs.DeliveryRetries).
			if retried, budget := h.taskRetried(t, "j1"); retried != tc.wantAttempts-1 || budget != jobs.DeliveryRetries(2) {
				t.Fatalf("task retried %d of %d, want %d of %d", retried, budget, tc.wantAttempts-1, jobs.DeliveryRetries(2))
			}
		})
	}
}

// asynq #1144, end to end: the task's lease is deleted and its worker
// dies. The task would stay active forever (and with a restored lease wait
// up to a minute for Asynq's recoverer); the reconciler puts it back in
// its queue at once, and the job's second attempt runs and succeeds.
func TestReconcilerReRunsTaskThatLostItsLease(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	lease := "asynq:{default}:lease"
	killed := h.killRunning(t, "j1", 1, func() {
		if n, err := h.rdb.ZRem(ctx, lease, "j1").Result(); err != nil || n != 1 {
			t.Fatalf("lease not deleted: %d, %v", n, err)
		}
	})
	h.survivor(t, nil, rerun(false))
	j := h.waitState(t, "j1", jobs.StateSucceeded)
	t.Logf("re-run succeeded %v after the SIGKILL (LostAfter 300ms, ReconcileInterval 100ms)", time.Since(killed).Round(time.Millisecond))
	if j.Attempts != 2 || j.Error != nil || j.Result == nil || j.Result.Size != int64(len("attempt 2")) {
		t.Fatalf("job = %+v", j)
	}
	f, err := h.blobs.Open("j1")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if b, _ := io.ReadAll(f); string(b) != "attempt 2" {
		t.Fatalf("result = %q", b)
	}
	if retried, _ := h.taskRetried(t, "j1"); retried != 1 {
		t.Fatalf("task retried %d times, want 1", retried)
	}
}

// A SIGKILLed worker's job with a retry left says retrying at once, while
// its task stays active under the lease the dead worker took (30 s); once
// that lease has expired (simulated: it is moved into the past) the
// reconciler puts the task back in its queue at once rather than leave it
// to Asynq's recoverer (30 s after the expiry, at its next look, once a
// minute), and the second attempt runs and succeeds.
func TestReconcilerReRunsJobOnceItsLeaseExpires(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.killRunning(t, "j1", 1, nil)
	h.survivor(t, nil, rerun(false))
	j := h.waitState(t, "j1", jobs.StateRetrying)
	if j.Error == nil || *j.Error != "worker lost" || j.Attempts != 1 {
		t.Fatalf("job = %+v, error %v", j, j.Error)
	}
	info, err := asynq.NewInspectorFromRedisClient(h.rdb).GetTaskInfo("default", "j1")
	if err != nil || info.State != asynq.TaskStateActive {
		t.Fatalf("task = %+v, %v; want still active under its lease", info, err)
	}
	expired := float64(time.Now().Add(-time.Minute).Unix())
	if n, err := h.rdb.ZAddXX(ctx, "asynq:{default}:lease", redis.Z{Score: expired, Member: "j1"}).Result(); err != nil || n != 0 {
		t.Fatalf("lease not moved: %d, %v", n, err)
	}
	j = h.waitState(t, "j1", jobs.StateSucceeded)
	if j.Attempts != 2 || j.Error != nil {
		t.Fatalf("job = %+v", j)
	}
	if retried, _ := h.taskRetried(t, "j1"); retried != 1 {
		t.Fatalf("task retried %d times, want 1", retried)
	}
}

// A job with no retry left whose lease was deleted is failed, and its task
// gets an expired lease, so that Asynq's recoverer ends it too rather than
// leave it active forever.
func TestReconcilerRestoresLostLeaseOfFinalAttempt(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	lease := "asynq:{default}:lease"
	h.killRunning(t, "j1", 0, func() {
		if n, err := h.rdb.ZRem(ctx, lease, "j1").Result(); err != nil || n != 1 {
			t.Fatalf("lease not deleted: %d, %v", n, err)
		}
	})
	h.survivor(t, nil)
	j := h.waitState(t, "j1", jobs.StateFailed)
	if j.Error == nil || *j.Error != "worker lost" || j.Attempts != 1 {
		t.Fatalf("job = %+v, error %v", j, j.Error)
	}
	if score, err := h.rdb.ZScore(ctx, lease, "j1").Result(); err != nil || score != 0 {
		t.Fatalf("lease = %v, %v; want an expired one", score, err)
	}
}

// A job failed by the reconciler frees its running-job slot at once: with
// a cap of one running job, ann's held job B starts as soon as her job A's
// worker is found lost, not when A's slot lease (an hour and a minute)
// runs out; the hold delay is an hour, so only the hand-off can start it.
func TestReconcilerReleasesSlotOfFailedJob(t *testing.T) {
	h := newHarness(t)
	capOne := func(c *worker.Config) {
		c.MaxRunningJobs = 1
		c.HoldDelay = func(time.Duration) time.Duration { return time.Hour }
	}
	h.killRunning(t, "a", 0, func() {
		// While A's worker still lives, B is taken by the survivor and
		// held: A has ann's only slot.
		h.submitAs(t, "ann", "block", "b", 0)
		h.survivor(t, capOne)
		waitfor.True(t, 10*time.Second, func() bool {
			j, err := h.store.Get(context.Background(), "b")
			return err == nil && j.State == jobs.StateQueued && j.HoldReason != nil
		})
	})
	a := h.waitState(t, "a", jobs.StateFailed)
	if a.Error == nil || *a.Error != "worker lost" {
		t.Fatalf("a = %+v", a)
	}
	b := h.waitState(t, "b", jobs.StateRunning)
	if b.Attempts != 1 || b.HoldReason != nil {
		t.Fatalf("b = %+v", b)
	}
	if ids, err := h.rdb.ZRange(context.Background(), jobs.OwnerRunningKey("ann"), 0, -1).Result(); err != nil || len(ids) != 1 || ids[0] != "b" {
		t.Fatalf("ann's slots = %v, %v; want [b]", ids, err)
	}
}

// A live worker's job is never taken for lost, however long it runs.
func TestReconcilerLeavesLiveJob(t *testing.T) {
	h := newHarness(t)
	h.survivor(t, nil)
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
