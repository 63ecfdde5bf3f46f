package enqueue_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
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
			req := httptest.NewRequest("POST", "/v1/jobs", strings.NewReader(`{"type":"echo","input":{"n":7}}`))
			req.Header.Set("Authorization", "Bearer "+f.apiKey)
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			f.handler.ServeHTTP(rec, req)
			if rec.Code != http.StatusAccepted {
				b.Errorf("%d %s", rec.Code, rec.Body)
				return
			}
		}
	})
}
