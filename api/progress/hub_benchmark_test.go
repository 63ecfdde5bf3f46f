package progress

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/pubsub"
	"github.com/claimcheck/claimcheck/internal/redistest"
)

// fanOutScript is a job event as the job scripts emit it (logged, then
// announced), announced either on the global channel every progress
// process used to share (ARGV[3] "global": the baseline) or on the job's
// shard channel (what the scripts do now). Both modes run this same
// script, so they differ only in where the message goes.
var fanOutScript = redis.NewScript(`
local id = redis.call("XADD", KEYS[2], "MAXLEN", "~", "256", "*", "type", "progress", "data", ARGV[2])
local msg = ARGV[1] .. " " .. id .. " progress " .. ARGV[2]
if ARGV[3] == "global" then
  redis.call("PUBLISH", "cc:job-events", msg)
else
  redis.call("SPUBLISH", KEYS[1] .. "` + jobs.KeySuffixChannel + `", msg)
end
return id
`)

// BenchmarkHubFanOut: one progress process watching benchWatched of
// benchActive jobs that all report progress, on a 3-primary Redis Cluster.
// "global" is the former design (every event PUBLISHed on one channel,
// which the cluster broadcasts to every node; the process filters), "per-job"
// the hub's shard channels. It reports the messages the process receives
// (per published event and per second) and the delivery latency from the
// publishing script's caller to an event stream's client (the stream's
// loop writing SSE to an in-process client, no socket), p50 and p99.
//
//	go test -run '^$' -bench BenchmarkHubFanOut -benchtime 20000x ./api/progress/
func BenchmarkHubFanOut(b *testing.B) {
	const benchActive, benchWatched = 200, 10
	addrs := redistest.Cluster(b)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	b.Cleanup(func() { _ = rdb.Close() })
	ids := make([]string, benchActive)
	for i := range ids {
		ids[i] = fmt.Sprintf("01a23000-0000-7000-8000-%012d", i)
		runningJob(b, rdb, ids[i])
	}
	watched := ids[:benchWatched]
	for _, mode := range []string{"global", "per-job"} {
		b.Run(mode, func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var received func() int64
			ws := map[string]*Watcher{}
			switch mode {
			case "global":
				// The former hub: one subscription, every job's events
				// parsed and dropped unless someone here watches the job.
				var n atomic.Int64
				up := make(chan struct{})
				for _, id := range watched {
					ws[id] = &Watcher{job: id, ready: make(chan struct{}, 1)}
				}
				done := make(chan struct{})
				go func() {
					defer close(done)
					pubsub.Listen(ctx, rdb, "cc:job-events", func() {
						select {
						case <-up:
						default:
							close(up)
						}
					}, func(payload string) {
						n.Add(1)
						if id, ev, ok := jobs.ParseEventMessage(payload); ok {
							if w := ws[id]; w != nil {
								w.push(ev)
							}
						}
					})
				}()
				defer func() { cancel(); <-done }()
				<-up
				received = n.Load
			default:
				hub := NewHub(rdb, slog.New(slog.DiscardHandler))
				hub.Start(nil)
				defer hub.Close()
				for _, id := range watched {
					ws[id] = hub.Watch(id)
					defer ws[id].Close()
				}
				received = hub.Received
			}

			// Each watcher is served by an event stream's loop, as an SSE
			// client is; its client parses the events' data (the send time).
			svc := &Service{cfg: Config{Heartbeat: time.Hour, Now: time.Now}, logCache: newLogCache(logCacheBytes)}
			var mu sync.Mutex
			var lat []time.Duration
			var wg sync.WaitGroup
			for _, w := range ws {
				client := &sseClient{end: make(chan struct{}), record: func(d time.Duration) {
					mu.Lock()
					lat = append(lat, d)
					mu.Unlock()
				}}
				st := &stream{svc: svc, w: w, job: w.job, expires: time.Now().Add(time.Hour), last: "0-0"}
				stop := make(chan struct{})
				wg.Add(1)
				go func() {
					defer wg.Done()
					go func() { <-client.end; close(stop) }()
					st.loop(stop, client, func() bool { return true })
				}()
			}
			before := received()
			start := time.Now()
			var next atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					id := ids[int(next.Add(1))%len(ids)]
					data := strconv.Quote(strconv.FormatInt(time.Now().UnixNano(), 10))
					if err := fanOutScript.Run(ctx, rdb, []string{jobs.JobKey(id), jobs.JobKey(id) + jobs.KeySuffixEvents},
						id, data, mode).Err(); err != nil {
						b.Error(err)
						return
					}
				}
			})
			for _, id := range watched {
				if err := fanOutScript.Run(ctx, rdb, []string{jobs.JobKey(id), jobs.JobKey(id) + jobs.KeySuffixEvents},
					id, `"end"`, mode).Err(); err != nil {
					b.Fatal(err)
				}
			}
			wg.Wait() // every stream has sent its end marker: nothing in flight
			elapsed := time.Since(start)
			b.StopTimer()
			got := received() - before - benchWatched
			slices.Sort(lat)
			if len(lat) == 0 {
				b.Fatal("no event delivered")
			}
			b.ReportMetric(float64(got)/float64(b.N), "hub-msgs/event")
			b.ReportMetric(float64(got)/elapsed.Seconds(), "hub-msgs/s")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// sseClient parses the event stream it is written: each event's data is
// its send time (Unix ns, quoted) or "end".
type sseClient struct {
	end    chan struct{}
	record func(time.Duration)
	once   sync.Once
}

func (c *sseClient) Write(p []byte) (int, error) {
	now := time.Now()
	for _, line := range strings.Split(string(p), "\n") {
		d, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		if d == `"end"` {
			c.once.Do(func() { close(c.end) })
			continue
		}
		if ns, err := strconv.ParseInt(strings.Trim(d, `"`), 10, 64); err == nil {
			c.record(now.Sub(time.Unix(0, ns)))
		}
	}
	return len(p), nil
}
