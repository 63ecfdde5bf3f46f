package worker

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
)

// BenchmarkJobLogThroughput is one job writing log lines as fast as it can
// through the attempt's writer into a real Redis, and the final flush.
// ns/op is what one Task.Logf line costs the handler (it never waits for
// Redis); stored-lines/s is what reached the log per second of writing, and
// dropped-% the share the writer dropped because the job outran its pace
// (5 000 lines/s). Baseline in the same run: a job writing 4 000 lines/s
// (under the pace) loses none.
//
//	go test -run '^$' -bench JobLogThroughput -benchtime 200000x -count 3 ./worker/
func BenchmarkJobLogThroughput(b *testing.B) {
	for _, tc := range []struct {
		name  string
		pause time.Duration // between lines; zero: flat out
	}{{"flat-out", 0}, {"4000-lines-per-s", 250 * time.Microsecond}} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			s := jobs.NewStore(redistest.Client(b), nil)
			if _, err := s.Create(ctx, jobs.NewJob{ID: "j", Type: "t", Owner: "o", Queue: "default", TTL: time.Hour}); err != nil {
				b.Fatal(err)
			}
			if tc.pause > 0 && b.N > 20_000 {
				b.Skip("paced run: use -benchtime 20000x or less")
			}
			cs := &countingStore{inner: s}
			l := startJobLog(cs, "j", slog.New(slog.DiscardHandler))
			b.ReportAllocs()
			start := time.Now()
			next := start
			for b.Loop() {
				l.line("compile step: a line of about eighty bytes, as build tools print them .....")
				if tc.pause > 0 {
					next = next.Add(tc.pause)
					for time.Now().Before(next) {
					}
				}
			}
			l.close()
			took := time.Since(start) // the final flush included
			b.ReportMetric(float64(cs.lines)/took.Seconds(), "stored-lines/s")
			b.ReportMetric(100*float64(cs.dropped)/float64(b.N), "dropped-%")
			if cs.lines+cs.dropped != b.N {
				b.Fatalf("stored %d + dropped %d != written %d", cs.lines, cs.dropped, b.N)
			}
		})
	}
}

// countingStore counts what the writer hands the store.
type countingStore struct {
	inner          logAppender
	lines, dropped int
}

func (c *countingStore) AppendLog(ctx context.Context, id string, lines []jobs.LogLine, dropped int) (int64, error) {
	n, err := c.inner.AppendLog(ctx, id, lines, dropped)
	if err == nil {
		c.lines += len(lines)
		c.dropped += dropped
	}
	return n, err
}
