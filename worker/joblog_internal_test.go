package worker

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/claimcheck/claimcheck/internal/jobs"
)

// slowStore records batches, blocking each until the test lets it go: a
// Redis slower than the job.
type slowStore struct {
	mu      sync.Mutex
	batches [][]jobs.LogLine
	dropped int
	gate    chan struct{}
	entered chan struct{} // optional: told of each call before it blocks
}

func (s *slowStore) AppendLog(ctx context.Context, _ string, lines []jobs.LogLine, dropped int) (int64, error) {
	if s.entered != nil {
		s.entered <- struct{}{}
	}
	select {
	case <-s.gate:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches = append(s.batches, lines)
	s.dropped += dropped
	return 0, nil
}

// TestJobLogBoundedWhenStoreIsSlow: with the store stuck, a job writing
// without pause neither blocks nor grows the buffer past the log's caps;
// the oldest unsent lines are dropped and counted, and the final flush
// sends the newest in bounded batches.
func TestJobLogBoundedWhenStoreIsSlow(t *testing.T) {
	st := &slowStore{gate: make(chan struct{})}
	l := startJobLog(st, "j", slog.New(slog.DiscardHandler))
	const written = 3 * jobs.MaxLogLines
	for i := range written {
		l.line("line " + strings.Repeat("y", i%200))
	}
	l.mu.Lock()
	pending, bytes := len(l.pending), l.bytes
	l.mu.Unlock()
	// One batch may be in flight, taken out of the buffer.
	if pending > jobs.MaxLogLines || bytes > jobs.MaxLogBytes {
		t.Fatalf("buffer holds %d lines, %d bytes; caps %d, %d", pending, bytes, jobs.MaxLogLines, jobs.MaxLogBytes)
	}
	close(st.gate) // Redis catches up
	l.close()
	st.mu.Lock()
	defer st.mu.Unlock()
	sent := 0
	for _, b := range st.batches {
		size := 0
		for _, x := range b {
			size += len(x.Text)
		}
		if len(b) > logBatchLines || size > logBatchBytes {
			t.Fatalf("batch of %d lines, %d bytes; caps %d, %d", len(b), size, logBatchLines, logBatchBytes)
		}
		sent += len(b)
	}
	if sent+st.dropped != written || st.dropped == 0 {
		t.Fatalf("sent %d + dropped %d != written %d", sent, st.dropped, written)
	}
	last := st.batches[len(st.batches)-1]
	if want := "line " + strings.Repeat("y", (written-1)%200); last[len(last)-1].Text != want {
		t.Fatalf("last line sent %q, want the last written", last[len(last)-1].Text)
	}
	// Lines after close are not taken.
	l.line("late")
	if len(l.pending) != 0 {
		t.Fatalf("a line after close was buffered")
	}
}

// TestJobLogPacesFlushes: lines written while a batch is on its way go
// together in the next one, not one call per line.
func TestJobLogPacesFlushes(t *testing.T) {
	st := &slowStore{gate: make(chan struct{}), entered: make(chan struct{}, 16)}
	l := startJobLog(st, "j", slog.New(slog.DiscardHandler))
	l.line("first")
	<-st.entered // the first batch is on its way, held by the store
	for range 499 {
		l.line("x")
	}
	close(st.gate)
	l.close()
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.batches) != 2 || len(st.batches[0]) != 1 || len(st.batches[1]) != 499 {
		sizes := []int{}
		for _, b := range st.batches {
			sizes = append(sizes, len(b))
		}
		t.Fatalf("batches of %v lines, want [1 499]", sizes)
	}
}
