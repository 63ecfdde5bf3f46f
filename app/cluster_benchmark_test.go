package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/api/ratelimit"
	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/httpload"
	"github.com/claimcheck/claimcheck/tokens"
	"github.com/claimcheck/claimcheck/worker"
)

// BenchmarkOneRedisVsCluster compares, in one run, claimcheck on one
// redis-server with claimcheck on a Redis Cluster of three primaries. All
// of it runs on this machine, so the cluster's three nodes share its cores
// with each other, the worker and the load: the ratio is what the
// cluster's routing and one-slot steps cost here, not what three machines
// would give. "submit" is POST /v1/jobs over HTTP on loopback from 16
// clients in alternating rounds (httpload.Compare); "end-to-end" is rounds
// of 200 no-op jobs submitted by 16 clients and timed until every record
// says succeeded, one worker of concurrency 8 per stack, the two stacks
// alternating round by round.
//
//	go test -run '^$' -bench OneRedisVsCluster -benchtime 20x -count 3 ./app/
func BenchmarkOneRedisVsCluster(b *testing.B) {
	one := newTinyStack(b, redistest.Client(b))
	nodes := redistest.Cluster(b)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: nodes})
	b.Cleanup(func() { cc.Close() })
	cluster := newTinyStack(b, cc)
	if redistest.OnCluster() {
		b.Skip("the package's own server is a cluster on this run; the comparison needs a single one")
	}

	b.Run("submit", func(b *testing.B) {
		post := func(s *tinyStack) func() *http.Request {
			return func() *http.Request {
				r, _ := http.NewRequest("POST", s.api.URL+"/v1/jobs", bytes.NewReader([]byte(`{"type":"noop","input":{}}`)))
				r.Header.Set("Authorization", "Bearer "+s.key)
				r.Header.Set("Content-Type", "application/json")
				return r
			}
		}
		httpload.Compare(b, 16, 800,
			httpload.Target{Name: "one-redis", Request: post(one), Status: http.StatusAccepted},
			httpload.Target{Name: "cluster-3", Request: post(cluster), Status: http.StatusAccepted},
		)
	})

	b.Run("end-to-end", func(b *testing.B) {
		const round = 200
		var took [2]time.Duration
		var ratios []float64
		rounds := 0
		one.round(b, round) // warm: connections, scripts on every node
		cluster.round(b, round)
		for b.Loop() {
			rounds++
			d0 := one.round(b, round)
			d1 := cluster.round(b, round)
			took[0] += d0
			took[1] += d1
			ratios = append(ratios, float64(d0)/float64(d1)) // cluster's jobs/s over one server's
		}
		slices.Sort(ratios)
		b.ReportMetric(float64(rounds*round)/took[0].Seconds(), "one-redis-jobs/s")
		b.ReportMetric(float64(rounds*round)/took[1].Seconds(), "cluster-3-jobs/s")
		b.ReportMetric(ratios[len(ratios)/2], "cluster-3/one-redis")
	})
}

// tinyStack is an api and one worker serving a no-op job type on one Redis
// (a server or a cluster).
type tinyStack struct {
	rdb   redis.UniversalClient
	api   *httptest.Server
	key   string
	ran   atomic.Int64
	store *jobs.Store
}

func newTinyStack(tb testing.TB, rdb redis.UniversalClient) *tinyStack {
	tb.Helper()
	ctx := context.Background()
	s := &tinyStack{rdb: rdb, store: jobs.NewStore(rdb, nil)}
	cfg := app.Config{
		DataDir: tb.TempDir(), Argon2: cheapArgon2, Logger: slog.New(slog.DiscardHandler),
		MaxActiveJobs: -1, Limits: &ratelimit.Limits{}, // the load is one user's
		Worker: worker.Config{Concurrency: 8, MaxRunningJobs: -1},
		Types: []worker.Type{{Name: "noop", Timeout: time.Minute, InputSchema: json.RawMessage(`{"type":"object"}`),
			Handle: func(context.Context, *worker.Task) error { s.ran.Add(1); return nil }}},
	}.WithDefaults()
	keys, _, err := tokens.EnsureDir(cfg.JobKeyDir)
	if err != nil {
		tb.Fatal(err)
	}
	key, _, err := identity.NewAPIKeys(rdb, nil).Create(ctx, "ann", "bench", "")
	if err != nil {
		tb.Fatal(err)
	}
	s.key = key.Reveal()
	h, err := app.APIHandler(cfg, rdb, keys)
	if err != nil {
		tb.Fatal(err)
	}
	s.api = httptest.NewServer(h)
	tb.Cleanup(s.api.Close)
	startWorker(tb, cfg, rdb)
	return s
}

// round submits n no-op jobs from 16 clients and returns how long until
// every one of them is succeeded.
func (s *tinyStack) round(b *testing.B, n int) time.Duration {
	b.Helper()
	ctx := context.Background()
	ids := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				req, _ := http.NewRequest("POST", s.api.URL+"/v1/jobs", bytes.NewReader([]byte(`{"type":"noop","input":{}}`)))
				req.Header.Set("Authorization", "Bearer "+s.key)
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				var out struct{ ID string }
				err = json.NewDecoder(resp.Body).Decode(&out)
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted || err != nil {
					b.Errorf("submit: %d %v", resp.StatusCode, err)
					return
				}
				ids[i] = out.ID
			}
		}()
	}
	wg.Wait()
	// Records only move forward and succeeded is final: walk the ids once,
	// waiting at each until it is succeeded.
	for done := 0; ; {
		for done < n {
			j, err := s.store.Get(ctx, ids[done])
			if err != nil || j.State != jobs.StateSucceeded {
				break
			}
			done++
		}
		if done == n {
			return time.Since(start)
		}
		if time.Since(start) > time.Minute {
			b.Fatalf("a round of %d no-op jobs did not finish in a minute", n)
		}
		time.Sleep(2 * time.Millisecond) // polling the records, the condition being timed
	}
}
