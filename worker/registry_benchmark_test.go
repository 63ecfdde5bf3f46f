package worker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/registry"
	"github.com/claimcheck/claimcheck/worker"
)

// BenchmarkIdleWorkerFleetTypes reports the Redis commands per second one
// idle worker sends (counted by a hook on its own client, so the rest of
// the fleet's traffic is not in it; a script call is one command) with 1
// job type in the fleet and with 20 (its own, plus 19 announced by other
// announcers in other pools, heartbeating). The baseline is a bare asynq
// server polling the same three queues at the same interval: Asynq's own
// polling only. registry-cmds/s is the part that names a registry key.
//
//	go test -run '^$' -bench IdleWorkerFleetTypes -benchtime 10x ./worker/
func BenchmarkIdleWorkerFleetTypes(b *testing.B) {
	for _, tc := range []struct {
		name  string
		fleet int // job types in the fleet; 0: bare asynq
	}{{"asynq-only", 0}, {"fleet-types=1", 1}, {"fleet-types=20", 20}} {
		b.Run(tc.name, func(b *testing.B) {
			shared := redistest.Client(b) // flushed; the fleet's other clients
			results := b.TempDir()
			for i := 1; i < tc.fleet; i++ {
				// Others' types, in their own pools, kept alive meanwhile.
				a, err := registry.NewAnnouncer(shared, registry.Config{WorkerID: fmt.Sprintf("other-%d", i), Logger: quiet},
					jobs.TypeSpec{Name: fmt.Sprintf("type-%d", i), Pool: fmt.Sprintf("pool-%d", i), Timeout: time.Minute})
				if err != nil {
					b.Fatal(err)
				}
				if err := a.Start(context.Background()); err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _ = a.Stop(context.Background()) })
			}
			rdb := redis.NewClient(&redis.Options{Addr: redistest.Addr()})
			b.Cleanup(func() { rdb.Close() })
			counter := &redistest.Counter{}
			rdb.AddHook(counter)
			noop := func(context.Context, *worker.Task) error { return nil }
			if tc.fleet == 0 {
				srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Concurrency: 2, Queues: jobs.Queues(),
					TaskCheckInterval: 10 * time.Millisecond, DelayedTaskCheckInterval: time.Second, LogLevel: asynq.FatalLevel})
				if err := srv.Start(asynq.NewServeMux()); err != nil {
					b.Fatal(err)
				}
				b.Cleanup(srv.Shutdown)
			} else {
				w, err := worker.New(worker.Config{ResultsDir: results, Concurrency: 2, ReapInterval: -1, Logger: quiet}, rdb,
					worker.Type{Name: "mine", Timeout: time.Minute, Handle: noop})
				if err != nil {
					b.Fatal(err)
				}
				if err := w.Start(); err != nil {
					b.Fatal(err)
				}
				b.Cleanup(w.Shutdown)
			}
			time.Sleep(500 * time.Millisecond) // let start-up traffic settle (not a test wait)
			counter.Reset()
			start := time.Now()
			for b.Loop() {
				time.Sleep(time.Second)
			}
			elapsed := time.Since(start).Seconds()
			reg := 0
			for _, c := range counter.Commands() {
				if strings.Contains(c, registry.KeyPrefix) {
					reg++
				}
			}
			b.ReportMetric(float64(counter.Count())/elapsed, "cmds/s")
			b.ReportMetric(float64(reg)/elapsed, "registry-cmds/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}
