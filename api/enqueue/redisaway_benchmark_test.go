package enqueue_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/config"
	"github.com/claimcheck/claimcheck/internal/redistest"
)

// BenchmarkSubmitRedisFrozen measures the README's bound on a request to a
// Redis that does not answer (redisconn.CallTimeout, 2 s): POST /v1/jobs
// against a SIGSTOP'd redis-server, on a client opened as the services
// open theirs (config.DialRedis), answers 503 with Retry-After; p50-ms and
// p99-ms are the time to that answer. "live" is the same request on the
// same server before it is stopped (202). "sigstopped-parallel" sends 8
// requests per CPU at once, more than the client's pool has connections
// (10 per CPU) would serve in time if a wait for a connection were not
// bounded too. Each frozen request costs the full bound, so run it with a
// count of iterations:
//
//	go test -run '^$' -bench SubmitRedisFrozen -benchtime 20x ./api/enqueue/
func BenchmarkSubmitRedisFrozen(b *testing.B) {
	for _, tc := range []struct {
		name             string
		frozen, parallel bool
	}{{"live", false, false}, {"sigstopped", true, false}, {"sigstopped-parallel", true, true}} {
		b.Run(tc.name, func(b *testing.B) {
			srv := redistest.Start(b)
			r, err := config.DialRedis(context.Background(), config.RedisConfig{URL: srv.URL(), Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(r.Close)
			f := newFixtureFor(b, r.Client)
			want := http.StatusAccepted
			if tc.frozen {
				srv.Pause()
				b.Cleanup(srv.Resume)
				want = http.StatusServiceUnavailable
			}
			var mu sync.Mutex
			var took []time.Duration
			post := func() bool {
				req := httptest.NewRequest("POST", "/v1/jobs", strings.NewReader(`{"type":"echo","input":{"n":7}}`))
				req.Header.Set("Authorization", "Bearer "+f.apiKey)
				req.Header.Set("Content-Type", "application/json")
				rec := httptest.NewRecorder()
				start := time.Now()
				f.handler.ServeHTTP(rec, req)
				d := time.Since(start)
				mu.Lock()
				took = append(took, d)
				mu.Unlock()
				if rec.Code != want || tc.frozen && rec.Header().Get("Retry-After") == "" {
					b.Errorf("%d (Retry-After %q) %.300s; want %d", rec.Code, rec.Header().Get("Retry-After"), rec.Body, want)
					return false
				}
				return true
			}
			b.ReportAllocs()
			if tc.parallel {
				b.SetParallelism(8)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() && post() {
					}
				})
			} else {
				for b.Loop() {
					if !post() {
						return
					}
				}
			}
			slices.Sort(took)
			pct := func(p float64) float64 {
				return float64(took[min(len(took)-1, int(p*float64(len(took))))].Microseconds()) / 1000
			}
			b.ReportMetric(pct(0.50), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
			b.ReportMetric(float64(took[len(took)-1].Microseconds())/1000, "max-ms")
		})
	}
}
