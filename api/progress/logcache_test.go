package progress

import (
	"context"
	"strings"
	"testing"

	"github.com/claimcheck/claimcheck/internal/jobs"
)

// fakeLogs is a log store of lines first..last per job, 100 bytes each,
// that records the reads.
type fakeLogs struct {
	first, last map[string]int64
	reads       []int64 // the after of each LogAfter
}

func (f *fakeLogs) LogLast(_ context.Context, id string) (int64, error) { return f.last[id], nil }

func (f *fakeLogs) LogAfter(_ context.Context, id string, after int64, limit int) (*jobs.LogPage, error) {
	f.reads = append(f.reads, after)
	p := &jobs.LogPage{Last: f.last[id], Dropped: f.first[id] - 1}
	for n := max(after+1, f.first[id]); n <= f.last[id] && len(p.Lines) < limit; n++ {
		p.Lines = append(p.Lines, jobs.LogLine{N: n, Text: strings.Repeat("x", 100)})
	}
	return p, nil
}

// TestLogCacheSharedTailReadAndBounded: every reader of an unchanged log,
// whatever its after, is served from one read; a grown log costs a read of
// its new lines only, trimmed by the log's caps as the store trims; the
// cache's memory stays under its bound, the oldest entry going first.
func TestLogCacheSharedTailReadAndBounded(t *testing.T) {
	ctx := context.Background()
	f := &fakeLogs{first: map[string]int64{"a": 1, "b": 1, "c": 1}, last: map[string]int64{"a": jobs.MaxLogLines, "b": 10, "c": 10}}
	c := newLogCache(jobs.MaxLogLines*(100+logLineOverhead) + 15*(100+logLineOverhead))
	read := func(id string, after int64) *jobs.LogPage {
		t.Helper()
		p, err := c.get(ctx, f, id, after)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, after := range []int64{0, 1, 5000, 9999, jobs.MaxLogLines, 1 << 40} {
		p := read("a", after)
		if want := max(0, jobs.MaxLogLines-after); int64(len(p.Lines)) != want || (want > 0 && p.Lines[0].N != after+1) {
			t.Fatalf("after %d: %d lines, want %d", after, len(p.Lines), want)
		}
	}
	if len(f.reads) != 1 {
		t.Fatalf("an unchanged log read %d times (%v)", len(f.reads), f.reads)
	}
	// Two lines more: the store trimmed two (the line cap); only the new
	// ones are read.
	f.last["a"] += 2
	f.first["a"] += 2
	p := read("a", 0)
	if len(f.reads) != 2 || f.reads[1] != jobs.MaxLogLines {
		t.Fatalf("reads after growth: %v, want one after line %d", f.reads, jobs.MaxLogLines)
	}
	if len(p.Lines) != jobs.MaxLogLines || p.Lines[0].N != 3 || p.Lines[len(p.Lines)-1].N != jobs.MaxLogLines+2 || p.Skipped != 2 {
		t.Fatalf("after growth: %d lines %d..%d, skipped %d", len(p.Lines), p.Lines[0].N, p.Lines[len(p.Lines)-1].N, p.Skipped)
	}
	read("b", 0)
	read("c", 0) // no room for a, b and c
	if c.bytes > c.maxBytes || c.entries["a"] != nil || c.entries["b"] == nil || c.entries["c"] == nil {
		t.Fatalf("cache holds %d bytes (max %d), %d entries", c.bytes, c.maxBytes, len(c.entries))
	}
}
