package app_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/testutil/httpload"
)

// BenchmarkJobStatusWithLogs measures what job logs cost the status route
// (none expected: it never reads a log, and a log write neither drops the
// job's cached record nor wakes a long-poll). Same progress service, three
// jobs, in alternating batches: "quiet", a finished job that logged nothing
// (the baseline); "full", a finished job whose log is full; "logging", a
// running job whose log grows by 100 lines every 10 ms, ten times the rate
// a worker ever flushes at.
//
//	go test -run '^$' -bench JobStatusWithLogs -benchtime 10x -count 3 ./app/
func BenchmarkJobStatusWithLogs(b *testing.B) {
	s := newStack(b)
	ctx := context.Background()
	quiet := s.submit(b, `{"type":"count"}`)
	s.waitState(b, quiet, jobs.StateSucceeded)
	full := s.submit(b, fmt.Sprintf(`{"type":"logger","input":{"lines":%d}}`, jobs.MaxLogLines))
	s.waitState(b, full, jobs.StateSucceeded)
	busy := s.submit(b, `{"type":"logger","input":{"lines":1,"then":1}}`)
	s.waitState(b, busy, jobs.StateRunning)
	defer func() { s.step <- struct{}{} }()

	store := jobs.NewStore(s.rdb, nil)
	stop := make(chan struct{})
	defer close(stop)
	batch := make([]jobs.LogLine, 100)
	for i := range batch {
		batch[i] = jobs.LogLine{Time: time.Now(), Text: fmt.Sprintf("spam %d from a busy job, a line of about eighty bytes or so .....", i)}
	}
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				_, _ = store.AppendLog(ctx, busy.ID, batch, 0)
			}
		}
	}()
	get := func(sub submitted) func() *http.Request {
		return func() *http.Request {
			r, _ := http.NewRequest("GET", s.progress.URL+"/v1/jobs/"+sub.ID, nil)
			r.Header.Set("Authorization", "Bearer "+sub.Token)
			return r
		}
	}
	httpload.Compare(b, 8, 2000,
		httpload.Target{Name: "quiet", Request: get(quiet)},
		httpload.Target{Name: "full", Request: get(full)},
		httpload.Target{Name: "logging", Request: get(busy)},
	)
}
