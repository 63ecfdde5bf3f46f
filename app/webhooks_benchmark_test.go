package app_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/internal/delivery"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/internal/webhook"
)

// BenchmarkWebhookJobs runs b.N one-step jobs through a real worker (4
// slots) and deliverer (8 slots) to a receiver on loopback, with no
// webhook and with a completed webhook, and reports jobs/s; with the
// webhook also the completion → delivery latency (the record's
// finished_at to the receiver's arrival) at p50 and p99.
//
//	go test -run '^$' -bench BenchmarkWebhook -benchtime 400x ./app/
func BenchmarkWebhookJobs(b *testing.B) {
	for _, v := range []struct {
		name        string
		on, deliver bool
	}{
		{"webhook=false", false, false},
		// The job path's own cost: the hooks run and enqueue, but no
		// deliverer competes with the jobs for this machine's cores.
		{"webhook=true/deliverer=off", true, false},
		{"webhook=true", true, true},
	} {
		on := v.on
		b.Run(v.name, func(b *testing.B) {
			s, d := webhookStack(b, false, func(c *app.Config) { c.Webhooks.Concurrency = 8 })
			if !v.deliver {
				d.Shutdown()
			}
			var mu sync.Mutex
			arrived := map[string]time.Time{}
			rc := newReceiver(b, nil, func(_ int, r *hookRequest, _ *http.Request) int {
				mu.Lock()
				arrived[r.Payload.Data.Job.ID] = time.Now()
				mu.Unlock()
				return http.StatusNoContent
			})
			spec := webhook.Spec{URL: rc.srv.URL, Events: []string{"completed"}}
			store := jobs.NewStore(s.rdb, nil)
			b.ResetTimer()
			start := time.Now()
			subs := make([]submitted, b.N)
			for i := range subs {
				if on {
					subs[i] = s.submitWebhook(b, "wh-report", `{"n":1,"result":"x"}`, spec)
				} else {
					subs[i] = s.submitJob(b, "wh-report", `{"n":1,"result":"x"}`, nil)
				}
			}
			finished := make([]time.Time, b.N)
			for i, sub := range subs {
				waitfor.True(b, time.Minute, func() bool {
					j, err := store.Get(context.Background(), sub.ID)
					if err == nil && j.State.Final() {
						finished[i] = *j.FinishedAt
						return true
					}
					return false
				})
			}
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "jobs/s")
			b.ReportMetric(0, "ns/op")
			if !v.deliver {
				return
			}
			waitfor.True(b, time.Minute, func() bool { mu.Lock(); defer mu.Unlock(); return len(arrived) == b.N })
			lat := make([]time.Duration, 0, b.N)
			for i, sub := range subs {
				lat = append(lat, arrived[sub.ID].Sub(finished[i]))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

// BenchmarkWebhookDeliveries measures what one deliverer (8 slots)
// sustains: b.N completed events of jobs that ended, enqueued at once, delivered to a receiver on loopback that answers 204 at once.
//
//	go test -run '^$' -bench BenchmarkWebhookDeliveries -benchtime 2000x ./app/
func BenchmarkWebhookDeliveries(b *testing.B) {
	s, _ := webhookStack(b, false, func(c *app.Config) { c.Webhooks.Concurrency = 8 })
	var mu sync.Mutex
	n := 0
	rc := newReceiver(b, nil, func(int, *hookRequest, *http.Request) int { mu.Lock(); n++; mu.Unlock(); return http.StatusNoContent })
	spec := &webhook.Spec{URL: rc.srv.URL, Events: []string{"completed"}}
	store := jobs.NewStore(s.rdb, nil)
	ctx := context.Background()
	ids := make([]string, b.N)
	for i := range ids {
		ids[i] = fmt.Sprintf("bench-%d", i)
		// Ended jobs, as a worker leaves them (the completed mark refuses
		// any other).
		if _, err := store.Create(ctx, jobs.NewJob{ID: ids[i], Type: "wh-report", Owner: "ann", Queue: "default", TTL: time.Hour, Webhook: spec}); err != nil {
			b.Fatal(err)
		}
		if _, err := store.ConfirmJob(ctx, jobs.Confirmation{ID: ids[i], Owner: "ann", TTL: time.Hour}); err != nil {
			b.Fatal(err)
		}
		if _, err := store.StartAttempt(ctx, jobs.Attempt{ID: ids[i], Queue: "default", Number: 1, Lease: time.Minute}); err != nil {
			b.Fatal(err)
		}
		if _, err := store.Succeed(ctx, ids[i], 1, jobs.Result{}, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	ev := delivery.NewEvents(s.rdb, nil)
	b.ResetTimer()
	start := time.Now()
	for _, id := range ids {
		if err := ev.Completed(ctx, id, spec); err != nil {
			b.Fatal(err)
		}
	}
	waitfor.True(b, 5*time.Minute, func() bool { mu.Lock(); defer mu.Unlock(); return n >= b.N })
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(0, "ns/op")
}
