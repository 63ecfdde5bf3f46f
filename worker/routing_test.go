package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/registry"
	"github.com/claimcheck/claimcheck/worker"
)

// ranBy records which worker ran which job.
type ranBy struct {
	mu sync.Mutex
	m  map[string]string
}

func (r *ranBy) handler(name string) worker.Handler {
	return func(ctx context.Context, t *worker.Task) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.m[t.ID()] != "" {
			return fmt.Errorf("job %s ran twice", t.ID())
		}
		r.m[t.ID()] = name
		return nil
	}
}

func (r *ranBy) get(id string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[id]
}

// counted is a client of the package's Redis whose every command is recorded.
func counted(t *testing.T) (redis.UniversalClient, *redistest.Counter) {
	t.Helper()
	c := redistest.NewClient(t)
	counter := &redistest.Counter{}
	c.AddHook(counter)
	return c, counter
}

// submitTo does what the api does for a type in pool: record, then enqueue
// on the pool's queue.
func (h *harness) submitTo(t *testing.T, typ, pool, id string) {
	t.Helper()
	ctx := context.Background()
	queue := jobs.QueueName(pool, "default")
	if _, err := h.store.Create(ctx, jobs.NewJob{ID: id, Type: typ, Owner: "ann", Queue: queue, Timeout: 10 * time.Second, TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(jobs.TaskPayload{Job: id, Owner: "ann", Input: json.RawMessage(`{}`)})
	if _, err := asynq.NewClientFromRedisClient(h.rdb).EnqueueContext(ctx, asynq.NewTask(typ, payload),
		asynq.TaskID(id), asynq.Queue(queue), asynq.MaxRetry(1), asynq.Timeout(10*time.Second)); err != nil {
		t.Fatal(err)
	}
}

// TestTwoWorkersNeverTakeEachOthersJobs runs a "gpu" worker serving render
// and a default-pool worker serving primes on one Redis: every job runs on
// the worker of its type, and the gpu worker's Redis client never names a
// default-pool queue (nor the other way round), so neither could have
// dequeued the other's jobs.
func TestTwoWorkersNeverTakeEachOthersJobs(t *testing.T) {
	h := newHarness(t)
	ran := &ranBy{m: map[string]string{}}
	newWorker := func(name, typ, pool string) (*worker.Server, *redistest.Counter) {
		rdb, counter := counted(t)
		w, err := worker.New(worker.Config{ResultsDir: h.blobs.Root(), Concurrency: 2, MaxRunningJobs: -1, Logger: quiet}, rdb,
			worker.Type{Name: typ, Pool: pool, Timeout: time.Minute, Handle: ran.handler(name)})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.Shutdown)
		return w, counter
	}
	gpu, gpuCmds := newWorker("gpu-box", "render", "gpu")
	cpu, cpuCmds := newWorker("cpu-box", "primes", "")
	if p := gpu.Pools(); len(p) != 1 || p[0] != "gpu" {
		t.Fatalf("gpu worker pools = %v", p)
	}
	if p := cpu.Pools(); len(p) != 1 || p[0] != "default" {
		t.Fatalf("cpu worker pools = %v", p)
	}
	const n = 20
	for i := range n {
		h.submitTo(t, "render", "gpu", fmt.Sprintf("render-%d", i))
		h.submitTo(t, "primes", "default", fmt.Sprintf("primes-%d", i))
	}
	for i := range n {
		for _, tc := range []struct{ id, want string }{
			{fmt.Sprintf("render-%d", i), "gpu-box"},
			{fmt.Sprintf("primes-%d", i), "cpu-box"},
		} {
			if j := h.waitFinal(t, tc.id); j.State != jobs.StateSucceeded || j.Attempts != 1 {
				t.Fatalf("%s: %+v", tc.id, j)
			}
			if got := ran.get(tc.id); got != tc.want {
				t.Errorf("%s ran on %q, want %q", tc.id, got, tc.want)
			}
		}
	}
	// Asynq's keys name their queue in braces: asynq:{gpu-default}:pending.
	touched := func(c *redistest.Counter, queues ...string) []string {
		var out []string
		for _, cmd := range c.Commands() {
			for _, q := range queues {
				if strings.Contains(cmd, "asynq:{"+q+"}") {
					out = append(out, cmd)
				}
			}
		}
		return out
	}
	if bad := touched(gpuCmds, "critical", "default", "low"); len(bad) > 0 {
		t.Errorf("the gpu worker touched default-pool queues: %q", bad[:min(len(bad), 5)])
	}
	if bad := touched(cpuCmds, "gpu-critical", "gpu-default", "gpu-low"); len(bad) > 0 {
		t.Errorf("the cpu worker touched gpu-pool queues: %q", bad[:min(len(bad), 5)])
	}
	// Each did poll its own.
	if len(touched(gpuCmds, "gpu-default")) == 0 || len(touched(cpuCmds, "default")) == 0 {
		t.Fatal("a worker never polled its own queue: the check above proves nothing")
	}
	insp := asynq.NewInspectorFromRedisClient(h.rdb)
	for _, q := range []string{"gpu-default", "default"} {
		info, err := insp.GetQueueInfo(q)
		if err != nil || info.Processed != n || info.Failed != 0 {
			t.Fatalf("queue %s: %+v %v", q, info, err)
		}
	}
	// The registry counts each type's one worker, in its pool.
	cat, workers, err := registry.NewReader(h.rdb, registry.Config{}).Types(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if workers["render"] != 1 || workers["primes"] != 1 {
		t.Fatalf("workers = %v", workers)
	}
	if s, _ := cat.Lookup("render"); s.Pool != "gpu" {
		t.Fatalf("render announced in pool %q", s.Pool)
	}
}

func TestPoolsAreChecked(t *testing.T) {
	h := newHarness(t)
	typ := func(name, pool string) worker.Type {
		return worker.Type{Name: name, Pool: pool, Timeout: time.Minute, Handle: func(context.Context, *worker.Task) error { return nil }}
	}
	for _, tc := range []struct {
		name  string
		pools []string
		types []worker.Type
		want  string // in the error; "" means New succeeds
	}{
		{"default pools are the types'", nil, []worker.Type{typ("a", "gpu"), typ("b", "")}, ""},
		{"pools naming every type's pool", []string{"gpu", "default"}, []worker.Type{typ("a", "gpu"), typ("b", "")}, ""},
		{"a type outside the pools", []string{"gpu"}, []worker.Type{typ("a", "gpu"), typ("b", "cpu")}, `"b" is in pool "cpu"`},
		{"a bad pool name", []string{"GPU!"}, []worker.Type{typ("a", "gpu")}, `pool "GPU!"`},
		{"a type's bad pool name", nil, []worker.Type{typ("a", "gpu pool")}, `pool "gpu pool"`},
		{"a pool with none of the types", []string{"gpu", "cpu"}, []worker.Type{typ("a", "gpu")}, `"cpu" has none of this worker's types`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := worker.New(worker.Config{ResultsDir: h.blobs.Root(), Pools: tc.pools, Logger: quiet}, h.rdb, tc.types...)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if len(w.Pools()) != 2 {
					t.Fatalf("pools = %v", w.Pools())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want an error with %s", err, tc.want)
			}
		})
	}
}

// TestConflictingWorkerRefusesToStart: a second worker announcing a type
// name with another spec, while the first lives, does not start, and takes
// no job; once the first shuts down it may.
func TestConflictingWorkerRefusesToStart(t *testing.T) {
	h := newHarness(t)
	ran := &ranBy{m: map[string]string{}}
	mk := func(name, schema string) *worker.Server {
		w, err := worker.New(worker.Config{ResultsDir: h.blobs.Root(), Logger: quiet}, h.rdb,
			worker.Type{Name: "render", Timeout: time.Minute, InputSchema: json.RawMessage(schema), Handle: ran.handler(name)})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	first := mk("first", `{"type":"object"}`)
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	second := mk("second", `{"type":"object","required":["scene"]}`)
	err := second.Start()
	if !errors.Is(err, worker.ErrTypeConflict) || !strings.Contains(err.Error(), first.ID()) || !strings.Contains(err.Error(), `"render"`) ||
		strings.Count(err.Error(), "sha256:") != 2 {
		t.Fatalf("second Start = %v", err)
	}
	// The refused worker is not polling: the first runs every job.
	for i := range 5 {
		h.submitTo(t, "render", "default", fmt.Sprintf("r%d", i))
	}
	for i := range 5 {
		id := fmt.Sprintf("r%d", i)
		h.waitFinal(t, id)
		if got := ran.get(id); got != "first" {
			t.Fatalf("%s ran on %q", id, got)
		}
	}
	first.Shutdown()
	if err := second.Start(); err != nil {
		t.Fatalf("start once the first left: %v", err)
	}
	second.Shutdown()
}

// TestHeldPoolJobMovesForward: a job held back by the running-job cap in a
// pool's queue is moved forward in that queue when its owner's running job
// ends. The hold delay is an hour, so only the hand-off can start it.
func TestHeldPoolJobMovesForward(t *testing.T) {
	h := newHarness(t)
	g := &gate{}
	typ := g.blocking()
	typ.Pool = "gpu"
	w, err := worker.New(worker.Config{ResultsDir: h.blobs.Root(), Concurrency: 2, MaxRunningJobs: 1,
		HoldDelay: func(time.Duration) time.Duration { return time.Hour }, Logger: quiet}, h.rdb, typ)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Shutdown)
	t.Cleanup(func() { g.release("second") })
	ctx := context.Background()
	h.submitTo(t, "block", "gpu", "first")
	poll(t, 10*time.Second, func() (bool, string) {
		j, err := h.store.Get(ctx, "first")
		return err == nil && j.State == jobs.StateRunning, fmt.Sprintf("%+v %v", j, err)
	})
	h.submitTo(t, "block", "gpu", "second")
	insp := asynq.NewInspectorFromRedisClient(h.rdb)
	poll(t, 10*time.Second, func() (bool, string) {
		info, err := insp.GetTaskInfo("gpu-default", "second")
		return err == nil && info.State == asynq.TaskStateRetry, fmt.Sprintf("%+v %v", info, err)
	})
	g.release("first")
	poll(t, 10*time.Second, func() (bool, string) {
		j, err := h.store.Get(ctx, "second")
		return err == nil && j.State == jobs.StateRunning, fmt.Sprintf("%+v %v", j, err)
	})
}

// TestAJobOfAnotherTypeIsHandedBack: a worker that dequeues a type it does
// not run (its pool shared with a worker of other types; or a name it is
// a prefix of, which Asynq's mux would route to it) hands the job back,
// unfailed and with no attempt spent, and a worker that runs it does.
func TestAJobOfAnotherTypeIsHandedBack(t *testing.T) {
	h := newHarness(t)
	ran := &ranBy{m: map[string]string{}}
	mk := func(name, typ string) *worker.Server {
		w, err := worker.New(worker.Config{ResultsDir: h.blobs.Root(), Concurrency: 1, Logger: quiet,
			HoldDelay: func(time.Duration) time.Duration { return 10 * time.Millisecond }, DelayedTaskCheckInterval: 20 * time.Millisecond},
			h.rdb, worker.Type{Name: typ, Timeout: time.Minute, Handle: ran.handler(name)})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.Shutdown)
		return w
	}
	mk("old", "render")
	h.submitTo(t, "render-v2", "default", "v2")
	insp := asynq.NewInspectorFromRedisClient(h.rdb)
	// Handed back at least once, and nothing was spent or recorded.
	poll(t, 10*time.Second, func() (bool, string) {
		info, err := insp.GetTaskInfo("default", "v2")
		return err == nil && info.State == asynq.TaskStateRetry, fmt.Sprintf("%+v %v", info, err)
	})
	j, err := h.store.Get(context.Background(), "v2")
	if err != nil || j.State != jobs.StateQueued || j.Attempts != 0 || ran.get("v2") != "" {
		t.Fatalf("after the hand-back: %+v %v, ran on %q", j, err, ran.get("v2"))
	}
	mk("new", "render-v2")
	if j := h.waitFinal(t, "v2"); j.State != jobs.StateSucceeded || ran.get("v2") != "new" {
		t.Fatalf("v2: %+v ran on %q", j, ran.get("v2"))
	}
}
