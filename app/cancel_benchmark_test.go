package app_test

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
)

// BenchmarkCancelLatency measures POST /v1/jobs/{id}/cancel on a running
// job until its handler has returned and the record says canceled: the
// issue promises this within a second. The handler ("block") reports
// progress once and then only waits on its context, so the cancellation must
// arrive through Asynq's cancel message, not the record's flag.
//
//	go test -run '^$' -bench CancelLatency -benchtime 50x ./app/
func BenchmarkCancelLatency(b *testing.B) {
	s := newStack(b)
	var lat []time.Duration
	for b.Loop() {
		sub := s.submit(b, `{"type":"block"}`)
		s.waitState(b, sub, jobs.StateRunning)
		start := time.Now()
		resp := do(b, "POST", s.progress.URL+"/v1/jobs/"+sub.ID+"/cancel", sub.Token, nil)
		if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusOK {
			b.Fatalf("cancel: %d", resp.StatusCode)
		}
		waitfor.True(b, 10*time.Second, func() bool { return s.get(b, sub).State == jobs.StateCanceled })
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99-ms")
	b.ReportMetric(0, "ns/op")
}
