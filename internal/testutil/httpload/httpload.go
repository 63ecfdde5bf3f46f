// Package httpload compares HTTP handlers' throughput for benchmarks: it
// drives keep-alive clients against several servers in alternating batches,
// so CPU frequency changes and neighbours' load hit every target alike, and
// reports each one's rate and its ratio to the first (the baseline).
package httpload

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"
)

// Target is one server under comparison.
type Target struct {
	Name string
	// Request builds one request (called concurrently).
	Request func() *http.Request
	// Status is the status every response must have (200 when zero).
	Status int
}

// Compare runs rounds of batch requests against each target in turn with
// workers concurrent clients, and reports <name>-req/s for each and
// <name>/<baseline> as the median of the per-round throughput ratios.
func Compare(b *testing.B, workers, batch int, targets ...Target) {
	b.Helper()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers, MaxIdleConns: workers * len(targets)}}
	defer client.CloseIdleConnections()
	for _, t := range targets { // warm up: connections, caches
		run(b, client, workers, batch/4, t)
	}
	totals := make([]time.Duration, len(targets))
	ratios := make([][]float64, len(targets))
	rounds := 0
	for b.Loop() {
		rounds++
		var base time.Duration
		for i, t := range targets {
			d := run(b, client, workers, batch, t)
			totals[i] += d
			if i == 0 {
				base = d
			} else {
				ratios[i] = append(ratios[i], float64(base)/float64(d))
			}
		}
	}
	for i, t := range targets {
		b.ReportMetric(float64(rounds*batch)/totals[i].Seconds(), t.Name+"-req/s")
		if i > 0 {
			slices.Sort(ratios[i])
			b.ReportMetric(ratios[i][len(ratios[i])/2], t.Name+"/"+targets[0].Name)
		}
	}
}

func run(b *testing.B, client *http.Client, workers, n int, t Target) time.Duration {
	want := t.Status
	if want == 0 {
		want = http.StatusOK
	}
	errs := make(chan error, workers)
	start := time.Now()
	for range workers {
		go func() {
			for range n / workers {
				resp, err := client.Do(t.Request())
				if err != nil {
					errs <- err
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want {
					errs <- fmt.Errorf("%s: status %d", t.Name, resp.StatusCode)
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(start)
}
