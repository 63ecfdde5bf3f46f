package worker_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/claimcheck/claimcheck/internal/blob"
	"github.com/claimcheck/claimcheck/internal/config"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/syncbuf"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/worker"
)

// logLines returns the JSON log lines in s whose fields include every one
// of want ("key":value fragments).
func logLines(s string, want ...string) []string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		ok := line != ""
		for _, w := range want {
			ok = ok && strings.Contains(line, w)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// Bug F: a worker runs a job through a Redis outage (killed, then started
// again from its append-only file). Its background loops — heartbeats,
// the reaper, the registry's announcer — and Asynq's own fail on every
// tick, each at debug (the reconciler pauses); the Redis client's monitor says once
// that Redis is down and once that it is back, and nothing else is logged
// above debug meanwhile. Afterwards the loops work again, and the job that
// ran through the outage, longer than LostAfter, still runs.
func TestRedisOutageLogsOnceDownOnceUp(t *testing.T) {
	srv := redistest.Start(t)
	var logs syncbuf.Buffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	})
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx := context.Background()
	// The default quiet period: go-redis reconnects its pool one
	// connection at a time, and calls flap for a moment after Redis is back.
	r, err := config.DialRedis(ctx, config.RedisConfig{URL: srv.URL(), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	// A kept result, so that each reap asks Redis whether its job exists.
	results, err := blob.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store := jobs.NewStore(r.Client, nil)
	if _, err := store.Create(ctx, jobs.NewJob{ID: "kept", Type: "block", Owner: "ann", Queue: "default", Timeout: time.Hour, TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	bw, err := results.Create("kept", 1<<10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bw.Write([]byte("result")); err != nil || bw.Commit() != nil {
		t.Fatal("result not stored")
	}
	w, err := worker.New(worker.Config{
		ResultsDir: results.Root(), Concurrency: 1, HeartbeatInterval: 50 * time.Millisecond,
		ReconcileInterval: 50 * time.Millisecond, ReapInterval: 50 * time.Millisecond, ShutdownTimeout: 100 * time.Millisecond, Logger: logger,
	}, r.Client, blockForever)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Shutdown)
	if _, err := store.Create(ctx, jobs.NewJob{ID: "j1", Type: "block", Owner: "ann", Queue: "default", Timeout: time.Hour, TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(jobs.TaskPayload{Job: "j1", Owner: "ann", Input: json.RawMessage(`{}`)})
	if _, err := asynq.NewClientFromRedisClient(r.Client).EnqueueContext(ctx, asynq.NewTask("block", payload),
		asynq.TaskID("j1"), asynq.MaxRetry(jobs.DeliveryRetries(0)), asynq.Timeout(time.Hour)); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, 10*time.Second, func() bool {
		j, err := store.Get(ctx, "j1")
		return err == nil && j.State == jobs.StateRunning
	})

	before := len(logs.String())
	outage := func() string { return logs.String()[before:] }
	srv.Kill()
	// Every loop has failed more than once, the announcer (every 5 s)
	// included; the reconciler pauses while Redis is down.
	for _, msg := range []string{`"msg":"heartbeat not written"`, `"msg":"reap results"`, `"msg":"job types not announced`} {
		waitfor.True(t, 20*time.Second, func() bool { return len(logLines(outage(), msg)) >= 2 })
	}
	srv.Restart()
	waitfor.True(t, 20*time.Second, func() bool { return len(logLines(outage(), `"msg":"redis available again"`)) > 0 })
	// The loops work again: the running job's heartbeat moves.
	restarted := float64(time.Now().UnixMilli())
	waitfor.True(t, 10*time.Second, func() bool {
		s, err := r.Client.ZScore(ctx, jobs.KeyHeartbeats, "j1").Result()
		return err == nil && s >= restarted
	})

	// A job that ran through the outage is not taken for lost: its
	// heartbeat could not be written while Redis was away.
	if j, err := store.Get(ctx, "j1"); err != nil || j.State != jobs.StateRunning || j.Attempts != 1 {
		t.Fatalf("j1 after the outage = %+v, %v; want still running its first attempt", j, err)
	}

	got := outage()
	if d, u := len(logLines(got, `"msg":"redis unavailable"`)), len(logLines(got, `"msg":"redis available again"`)); d != 1 || u != 1 {
		t.Fatalf("%d down and %d up lines, want 1 and 1:\n%s", d, u, got)
	}
	loud := append(logLines(got, `"level":"ERROR"`), logLines(got, `"level":"WARN"`)...)
	if len(loud) != 1 || !strings.Contains(loud[0], `"msg":"redis unavailable"`) {
		t.Fatalf("lines above info during the outage, want only the down line:\n%s", strings.Join(loud, "\n"))
	}
	t.Logf("%d lines at debug during the outage", len(logLines(got, `"level":"DEBUG"`)))
}
