package progress

import (
	"context"
	"strings"
	"testing"

	"github.com/claimcheck/claimcheck/internal/jobs"
)

// fakeLogs is a log store that counts full reads.
type fakeLogs struct {
	last  map[string]int64
	reads int
}

func (f *fakeLogs) LogLast(_ context.Context, id string) (int64, error) { return f.last[id], nil }

func (f *fakeLogs) LogAfter(_ context.Context, id string, after int64, limit int) (*jobs.LogPage, error) {
	f.reads++
	p := &jobs.LogPage{Last: f.last[id]}
	for n := after + 1; n <= f.last[id] && len(p.Lines) < limit; n++ {
		p.Lines = append(p.Lines, jobs.LogLine{N: n, Text: strings.Repeat("x", 100)})
	}
	return p, nil
}

// TestLogCacheBoundedAndNeverStale: pages of an unchanged log are read
// once; a new line is a new read; the cache's memory stays under its
// bound, the oldest page going first; short pages are not kept.
func TestLogCacheBoundedAndNeverStale(t *testing.T) {
	ctx := context.Background()
	page := minCachedLines * (100 + logLineOverhead)
	c := newLogCache(2*page + page/2) // room for two pages
	f := &fakeLogs{last: map[string]int64{"a": minCachedLines, "b": minCachedLines, "c": minCachedLines, "short": 3}}
	read := func(id string) *jobs.LogPage {
		t.Helper()
		p, err := c.get(ctx, f, id, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	read("a")
	read("a")
	if f.reads != 1 {
		t.Fatalf("an unchanged log read %d times", f.reads)
	}
	f.last["a"]++
	if p := read("a"); f.reads != 2 || len(p.Lines) != minCachedLines+1 {
		t.Fatalf("after a new line: %d reads, %d lines", f.reads, len(p.Lines))
	}
	read("b")
	read("c") // evicts a
	if c.bytes > c.maxBytes || len(c.pages) != 2 || c.pages[logKey{job: "a", limit: 1000}] != nil {
		t.Fatalf("cache holds %d bytes (max %d), %d pages", c.bytes, c.maxBytes, len(c.pages))
	}
	read("short")
	read("short")
	if f.reads != 6 || len(c.pages) != 2 {
		t.Fatalf("short pages: %d reads, %d pages kept", f.reads, len(c.pages))
	}
}
