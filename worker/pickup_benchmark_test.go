package worker_test

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/claimcheck/claimcheck/internal/blob"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/worker"
)

// BenchmarkPickupLatency measures enqueue → handler start on an idle worker.
// One iteration is one job; after each, the benchmark waits a random part of
// the poll interval so samples fall across the worker's polling phase rather
// than locking onto it. Reported: p50-ms and p99-ms.
//
//	go test -run '^$' -bench 'PickupLatency/claimcheck' -benchtime 400x ./worker/
//	go test -run '^$' -bench 'PickupLatency/asynq-default' -benchtime 40x ./worker/
func BenchmarkPickupLatency(b *testing.B) {
	b.Run("claimcheck", func(b *testing.B) {
		h, started := startLatencyWorker(b, 0)
		gap := 20 * time.Millisecond
		runPickup(b, gap, started, func(id string) {
			ctx := context.Background()
			if _, err := h.store.Create(ctx, jobs.NewJob{ID: id, Type: "noop", Queue: "default", Timeout: time.Minute, TTL: time.Hour}); err != nil {
				b.Fatal(err)
			}
			payload, _ := json.Marshal(jobs.TaskPayload{Job: id})
			if _, err := h.client.EnqueueContext(ctx, asynq.NewTask("noop", payload), asynq.TaskID(id)); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("asynq-default", func(b *testing.B) {
		// Baseline: a bare asynq server with its default configuration
		// (TaskCheckInterval 1s) and a handler that only reports.
		rdb := redistest.Client(b)
		started := make(chan time.Time, 1)
		srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Concurrency: 2, LogLevel: asynq.FatalLevel})
		mux := asynq.NewServeMux()
		mux.HandleFunc("noop", func(context.Context, *asynq.Task) error { started <- time.Now(); return nil })
		if err := srv.Start(mux); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(srv.Shutdown)
		client := asynq.NewClientFromRedisClient(rdb)
		runPickup(b, time.Second, started, func(id string) {
			if _, err := client.Enqueue(asynq.NewTask("noop", nil), asynq.TaskID(id)); err != nil {
				b.Fatal(err)
			}
		})
	})
}

type latencyHarness struct {
	harness
	client *asynq.Client
}

func startLatencyWorker(b *testing.B, interval time.Duration) (*latencyHarness, chan time.Time) {
	started := make(chan time.Time, 1)
	rdb := redistest.Client(b)
	h := &latencyHarness{harness: harness{rdb: rdb, store: jobs.NewStore(rdb, nil)}, client: asynq.NewClientFromRedisClient(rdb)}
	var err error
	if h.blobs, err = blob.NewDir(b.TempDir()); err != nil {
		b.Fatal(err)
	}
	w, err := worker.New(worker.Config{ResultsDir: h.blobs.Root(), Concurrency: 2, TaskCheckInterval: interval, Logger: quiet}, rdb, worker.Type{
		Name: "noop", Timeout: time.Minute, InputSchema: anyObject,
		Handle: func(context.Context, *worker.Task) error { started <- time.Now(); return nil },
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := w.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(w.Shutdown)
	return h, started
}

func runPickup(b *testing.B, gap time.Duration, started <-chan time.Time, enqueue func(id string)) {
	var lat []time.Duration
	i := 0
	for b.Loop() {
		b.StopTimer()
		time.Sleep(rand.N(gap)) // spread samples over the poll phase (not a test wait)
		b.StartTimer()
		i++
		t0 := time.Now()
		enqueue("pickup-" + strconv.Itoa(i))
		select {
		case t1 := <-started:
			lat = append(lat, t1.Sub(t0))
		case <-time.After(10 * time.Second):
			b.Fatal("job not picked up within 10s")
		}
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkIdleWorkerRedisLoad reports how many Redis commands per second
// an idle worker issues (INFO total_commands_processed over one-second
// windows), at claimcheck's default poll interval and at asynq's.
//
//	go test -run '^$' -bench IdleWorkerRedisLoad -benchtime 3x ./worker/
func BenchmarkIdleWorkerRedisLoad(b *testing.B) {
	for _, tc := range []struct {
		name     string
		interval time.Duration
	}{{"claimcheck-10ms", 0}, {"asynq-default-1s", time.Second}} {
		b.Run(tc.name, func(b *testing.B) {
			if redistest.Kind() != "redis-server" {
				b.Skip("needs redis-server's INFO")
			}
			h, _ := startLatencyWorker(b, tc.interval)
			time.Sleep(500 * time.Millisecond) // let start-up traffic settle (not a test wait)
			count := func() float64 {
				n, _ := strconv.ParseFloat(redistest.Info(h.rdb, "stats", "total_commands_processed"), 64)
				return n
			}
			var total float64
			var windows int
			for b.Loop() {
				c0 := count()
				time.Sleep(time.Second)
				total += count() - c0 - 1 // minus our own INFO
				windows++
			}
			b.ReportMetric(total/float64(windows), "redis-cmds/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}
