package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/worker"
)

// gate holds each job's handler until the test releases that job.
type gate struct {
	mu sync.Mutex
	ch map[string]chan struct{}
}

func (g *gate) of(id string) chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ch == nil {
		g.ch = map[string]chan struct{}{}
	}
	c, ok := g.ch[id]
	if !ok {
		c = make(chan struct{})
		g.ch[id] = c
	}
	return c
}

func (g *gate) release(id string) { close(g.of(id)) }

// blocking is a job type whose attempts run until the test releases them.
func (g *gate) blocking() worker.Type {
	return worker.Type{
		Name: "block", Timeout: time.Hour, InputSchema: anyObject,
		Handle: func(ctx context.Context, task *worker.Task) error {
			select {
			case <-g.of(task.ID()):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		},
	}
}

// submitAs does what the API does for owner's job: record, then enqueue
// with the id as TaskID (the task kept after it completes, so the test can
// read its retry count).
func (h *harness) submitAs(t *testing.T, owner, typ, id string, maxRetry int) {
	t.Helper()
	ctx := context.Background()
	if _, err := h.store.Create(ctx, jobs.NewJob{ID: id, Type: typ, Owner: owner, Queue: "default", MaxRetry: maxRetry, Timeout: time.Hour, TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(jobs.TaskPayload{Job: id, Owner: owner, Input: json.RawMessage(`{}`)})
	c := asynq.NewClientFromRedisClient(h.rdb)
	if _, err := c.EnqueueContext(ctx, asynq.NewTask(typ, payload), asynq.TaskID(id), asynq.MaxRetry(jobs.DeliveryRetries(maxRetry)),
		asynq.Timeout(time.Hour), asynq.Retention(time.Hour)); err != nil {
		t.Fatal(err)
	}
}

// poll waits for cond, failing with cond's last description of what it saw.
func poll(t *testing.T, within time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, saw)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestFinding5PerUserRunningCap: with a cap of 2 running jobs per owner and
// a worker that runs 4 at once, alice's five long jobs take two slots, and
// bob's job runs beside them instead of waiting for hers. Her other three
// stay queued with the reason in their records, spend no attempt and no
// retry (they have none: max_retry 0), and start as soon as one of her
// running jobs ends: the hold delay is an hour here, so only the hand-off
// from the ending job can start them.
func TestFinding5PerUserRunningCap(t *testing.T) {
	h := newHarness(t)
	g := &gate{}
	w, err := worker.New(worker.Config{
		ResultsDir:               h.blobs.Root(),
		Concurrency:              4,
		MaxRunningJobs:           2,
		HoldDelay:                func(time.Duration) time.Duration { return time.Hour },
		DelayedTaskCheckInterval: 20 * time.Millisecond,
		Logger:                   quiet,
	}, h.rdb, g.blocking())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Shutdown)
	ctx := context.Background()
	insp := asynq.NewInspectorFromRedisClient(h.rdb)

	alice := []string{"a1", "a2", "a3", "a4", "a5"}
	for _, id := range alice {
		h.submitAs(t, "alice", "block", id, 0)
	}
	t.Cleanup(func() {
		for _, id := range append(alice, "b1") {
			select {
			case <-g.of(id):
			default:
				g.release(id)
			}
		}
	})
	// states reads alice's jobs: which run, which are held (queued, with a
	// reason, their task waiting in Asynq's retry set with no retry spent).
	states := func() (running, held, done []string, saw string) {
		var b strings.Builder
		for _, id := range alice {
			j, err := h.store.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%s=%s/%d", id, j.State, j.Attempts)
			switch {
			case j.State == jobs.StateRunning:
				running = append(running, id)
			case j.State == jobs.StateSucceeded:
				done = append(done, id)
			case j.State == jobs.StateQueued && j.HoldReason != nil && j.Attempts == 0:
				fmt.Fprintf(&b, "(%q)", *j.HoldReason)
				if !strings.Contains(*j.HoldReason, "2 of your jobs are running") || !strings.Contains(*j.HoldReason, "at most 2") {
					t.Fatalf("%s: hold reason %q", id, *j.HoldReason)
				}
				if info, err := insp.GetTaskInfo("default", id); err == nil && info.State == asynq.TaskStateRetry && info.Retried == 0 {
					held = append(held, id)
				}
			}
			b.WriteString(" ")
		}
		if len(running) > 2 {
			t.Fatalf("alice has %d jobs running at once, cap 2: %s", len(running), b.String())
		}
		return running, held, done, b.String()
	}
	poll(t, 10*time.Second, func() (bool, string) {
		running, held, _, saw := states()
		return len(running) == 2 && len(held) == 3, saw
	})

	h.submitAs(t, "bob", "block", "b1", 0)
	poll(t, 10*time.Second, func() (bool, string) {
		j, err := h.store.Get(ctx, "b1")
		return err == nil && j.State == jobs.StateRunning, fmt.Sprintf("bob's job %+v %v", j, err)
	})
	if running, held, _, saw := states(); len(running) != 2 || len(held) != 3 {
		t.Fatalf("while bob's job runs: %s", saw)
	}

	// Release alice's running jobs one by one: each time a held one takes
	// the freed slot, until all five are done.
	for n := 1; n <= len(alice); n++ {
		running, _, _, _ := states()
		if len(running) == 0 {
			t.Fatalf("nothing of alice's is running, %d done", n-1)
		}
		g.release(running[0])
		poll(t, 10*time.Second, func() (bool, string) {
			running, _, done, saw := states()
			return len(done) == n && len(running) == min(2, len(alice)-n), saw
		})
	}
	for _, id := range alice {
		j, _ := h.store.Get(ctx, id)
		info, err := insp.GetTaskInfo("default", id)
		if err != nil || j.Attempts != 1 || info.Retried != 0 || j.HoldReason != nil || j.Error != nil {
			t.Fatalf("%s: job %+v, task %+v %v", id, j, info, err)
		}
	}
	g.release("b1")
	if j := h.waitFinal(t, "b1"); j.State != jobs.StateSucceeded {
		t.Fatalf("bob's job = %+v", j)
	}
}
