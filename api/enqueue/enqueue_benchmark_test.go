package enqueue_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/claimcheck/claimcheck/api/enqueue"
	"github.com/claimcheck/claimcheck/internal/jobs"
)

// BenchmarkSubmit compares POST /v1/jobs (API-key lookup, body decode,
// schema validation, job record, enqueue, token mint, JSON answer) with a
// raw asynq.Client.Enqueue of the same payload on the same Redis, both with
// 8 concurrent callers per CPU. Target: Submit throughput ≥ 0.5× raw.
//
//	go test -run '^$' -bench Submit -benchtime 3s -count 3 ./api/enqueue/
func BenchmarkSubmit(b *testing.B) {
	b.Run("raw-asynq-enqueue", func(b *testing.B) {
		f := newFixture(b, nil)
		client := asynq.NewClientFromRedisClient(f.rdb)
		payload := []byte(`{"job":"0000","input":{"n":7}}`)
		b.ReportAllocs()
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := client.EnqueueContext(context.Background(), asynq.NewTask("echo", payload)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	for _, ap := range []bool{false, true} {
		name := "post-v1-jobs"
		if ap {
			name += "-autopipelined"
		}
		b.Run(name, func(b *testing.B) { benchmarkPost(b, newFixtureOn(b, nil, ap)) })
	}
}

func benchmarkPost(b *testing.B, f *fixture) {
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rec := f.post(`{"type":"echo","input":{"n":7}}`)
			if rec.Code != http.StatusAccepted {
				b.Errorf("%d %s", rec.Code, rec.Body)
				return
			}
		}
	})
}

// BenchmarkSubmitHostile1MiB is the whole of POST /v1/jobs (API-key lookup
// in Redis, reading and decoding the body, input limits, schema) for the
// costliest hostile bodies, against a small body refused by its schema
// ("baseline"). A 1 MiB body (the body limit) is refused with 422 at /input
// after a scan of its envelope; one over it is refused (413) as it is read.
// With
// BenchmarkValidateHostile1MiB in internal/jobs (the input alone) it bounds
// one request's CPU.
//
//	go test -run '^$' -bench SubmitHostile -benchtime 200x -count 3 ./api/enqueue/
func BenchmarkSubmitHostile1MiB(b *testing.B) {
	// body fills {"type":"sleep","input":{"tags":[item,…]}} to size bytes.
	body := func(item string, size int) string {
		var sb strings.Builder
		sb.WriteString(`{"type":"sleep","input":{"tags":[` + item)
		for sb.Len()+len(item)+4 <= size {
			sb.WriteString("," + item)
		}
		sb.WriteString("]}}")
		return sb.String()
	}
	limit := jobs.DefaultMaxInputBytes + enqueue.EnvelopeBytes
	f := newFixture(b, nil)
	for _, tc := range []struct {
		name, body string
		status     int
	}{
		{"baseline", `{"type":"sleep","input":{"seconds":-1}}`, http.StatusUnprocessableEntity},
		{"1MiB-1e1000000", body("1e1000000", enqueue.DefaultMaxBody), http.StatusUnprocessableEntity},
		{"1MiB-small-numbers", body("0", enqueue.DefaultMaxBody), http.StatusUnprocessableEntity},
		{"2MiB-1e1000000", body("1e1000000", 2<<20), http.StatusRequestEntityTooLarge},
		{"80KiB-1e1000000", body("1e1000000", limit), http.StatusUnprocessableEntity},
		{"80KiB-small-numbers", body("0", limit), http.StatusUnprocessableEntity},
		{"64KiB-small-numbers", body("0", jobs.DefaultMaxInputBytes), http.StatusUnprocessableEntity},
		{"80KiB-deep-nesting", `{"type":"sleep","input":{"tags":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `}}`, http.StatusUnprocessableEntity},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(tc.body)))
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest("POST", "/v1/jobs", strings.NewReader(tc.body))
				req.Header.Set("Authorization", "Bearer "+f.apiKey)
				req.Header.Set("Content-Type", "application/json")
				rec := httptest.NewRecorder()
				f.handler.ServeHTTP(rec, req)
				if rec.Code != tc.status {
					b.Fatalf("%d %.200s", rec.Code, rec.Body)
				}
			}
		})
	}
}

// BenchmarkSubmitConfirm prices the confirm round trip of an all-or-nothing
// submission (issue 12 part 2: the record is created pending, the task
// enqueued, then the record confirmed). Each iteration runs, on one Redis,
// one after the other (interleaved, so that a busy machine slows all
// alike), and reports the median of each in µs:
//
//   - post-µs: the whole POST /v1/jobs, confirm included;
//   - pending-enqueue-confirm-µs: its Redis sequence alone
//     (jobs.Store.Create pending, asynq Enqueue, jobs.Store.Confirm), and
//     confirm-µs the Confirm in it;
//   - queued-enqueue-µs: the sequence without the confirm (the record
//     created queued at once, as before the pending step), the baseline;
//   - raw-enqueue-µs: the asynq Enqueue alone;
//
// and the ratios sequence-ratio (with confirm ÷ without), confirm-share
// (confirm ÷ POST) and post-vs-raw (POST ÷ raw Enqueue).
//
//	go test -run '^$' -bench SubmitConfirm -benchtime 2000x -count 3 ./api/enqueue/
func BenchmarkSubmitConfirm(b *testing.B) {
	f := newFixture(b, nil)
	ctx := context.Background()
	store := jobs.NewStore(f.rdb, nil)
	client := asynq.NewClientFromRedisClient(f.rdb)
	payload := []byte(`{"job":"0000","input":{"n":7}}`)
	newJob := func(pending bool) jobs.NewJob {
		id, err := uuid.NewV7()
		if err != nil {
			b.Fatal(err)
		}
		nj := jobs.NewJob{ID: id.String(), Type: "echo", Owner: "ann", Queue: "default", MaxRetry: 3, Timeout: time.Minute, TTL: time.Hour}
		if pending {
			nj.PendingTTL = enqueue.PendingTTL
		}
		return nj
	}
	enqueueTask := func(id string) {
		opts := []asynq.Option{asynq.MaxRetry(jobs.DeliveryRetries(3))}
		if id != "" {
			opts = append(opts, asynq.TaskID(id))
		}
		if _, err := client.EnqueueContext(ctx, asynq.NewTask("echo", payload), opts...); err != nil {
			b.Fatal(err)
		}
	}
	var post, withConfirm, confirm, without, raw []time.Duration
	timed := func(into *[]time.Duration, fn func()) {
		start := time.Now()
		fn()
		*into = append(*into, time.Since(start))
	}
	for b.Loop() {
		timed(&post, func() {
			rec := f.post(`{"type":"echo","input":{"n":7}}`)
			if rec.Code != http.StatusAccepted {
				b.Fatalf("%d %s", rec.Code, rec.Body)
			}
		})
		timed(&withConfirm, func() {
			nj := newJob(true)
			if _, err := store.Create(ctx, nj); err != nil {
				b.Fatal(err)
			}
			enqueueTask(nj.ID)
			timed(&confirm, func() {
				if st, err := store.Confirm(ctx, nj.ID, nj.Owner, "", nj.TTL, 0); err != nil || st != jobs.StateQueued {
					b.Fatalf("confirm: %v, %v", st, err)
				}
			})
		})
		timed(&without, func() {
			nj := newJob(false)
			if j, err := store.Create(ctx, nj); err != nil || j.State != jobs.StateQueued {
				b.Fatalf("create: %+v, %v", j, err)
			}
			enqueueTask(nj.ID)
		})
		timed(&raw, func() { enqueueTask("") })
	}
	median := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2].Nanoseconds()) / 1000
	}
	p, w, c, wo, r := median(post), median(withConfirm), median(confirm), median(without), median(raw)
	b.ReportMetric(p, "post-µs")
	b.ReportMetric(w, "pending-enqueue-confirm-µs")
	b.ReportMetric(c, "confirm-µs")
	b.ReportMetric(wo, "queued-enqueue-µs")
	b.ReportMetric(r, "raw-enqueue-µs")
	b.ReportMetric(w/wo, "sequence-ratio")
	b.ReportMetric(c/p, "confirm-share")
	b.ReportMetric(p/r, "post-vs-raw")
}
