package jobs_test

import (
	"context"
	"testing"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
)

// BenchmarkAppendLog is one worker flush: a batch of 1000 lines of 80
// bytes appended to a log that is already full, so the script also trims
// 1000 lines. Baseline in the same run: the same 1000 lines with one
// round trip each (what the batching avoids).
//
//	go test -run '^$' -bench AppendLog -benchtime 200x -count 3 ./internal/jobs/
func BenchmarkAppendLog(b *testing.B) {
	ctx := context.Background()
	s := jobs.NewStore(redistest.Client(b), nil)
	create(b, s, "j1")
	batch := lines(1, 1000, 80)
	for range jobs.MaxLogLines / 1000 {
		if _, err := s.AppendLog(ctx, "j1", batch, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("batch-1000", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.AppendLog(ctx, "j1", batch, 0); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "lines/s")
	})
	b.Run("per-line-baseline", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for i := range batch {
				if _, err := s.AppendLog(ctx, "j1", batch[i:i+1], 0); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "lines/s")
	})
}
