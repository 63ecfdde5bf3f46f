package progress

import (
	"context"
	"sort"
	"sync"

	"github.com/claimcheck/claimcheck/internal/jobs"
)

// logCache keeps the logs this process read recently, whole, so that
// readers of a log share one read of it. A full log is 10,000 entries and
// about 1 MiB: ~15 ms of Redis's one core to read, where a status read
// from Redis is ~0.02 ms. Without sharing, anyone with a job token could
// loop GET /logs (with any ?after=, or reconnect an event stream) on their
// own job and pin the Redis every worker and api shares.
//
// An entry is a job's kept lines as of its last line number (the log's
// "n", which every append raises). A reader first reads that number alone
// (LogLast, one HGET): the same, and the entry is served, sliced after the
// reader's line; higher, and only the lines after the entry's are read
// and appended, the oldest dropped by the log's own caps as the store's
// append did (a line never changes once written, and lines go only from
// the front). Concurrent refreshes of one job wait for one read. Memory is
// bounded by maxBytes of line text (plus a per-line overhead); the least
// recently filled entries go first.
type logCache struct {
	maxBytes int

	mu       sync.Mutex
	entries  map[string]*logEntry
	order    []string // least recently filled first
	bytes    int
	inflight map[string]chan struct{}
}

// logEntry is one job's kept lines; never changed once cached (a refresh
// makes a new one, which may share the old one's array).
type logEntry struct {
	lines   []jobs.LogLine
	last    int64
	dropped int64
	size    int
}

// logLineOverhead is what a cached line costs beyond its text.
const logLineOverhead = 64

func newLogCache(maxBytes int) *logCache {
	return &logCache{maxBytes: maxBytes, entries: map[string]*logEntry{}, inflight: map[string]chan struct{}{}}
}

// logStore is what the cache reads.
type logStore interface {
	LogLast(ctx context.Context, id string) (int64, error)
	LogAfter(ctx context.Context, id string, after int64, limit int) (*jobs.LogPage, error)
}

// get returns the lines of job id's log after line after (all of them:
// a log keeps at most jobs.MaxLogLines), reading from store only what the
// cache lacks. The page shares the cache's lines: callers must not change
// them.
func (c *logCache) get(ctx context.Context, store logStore, id string, after int64) (*jobs.LogPage, error) {
	for {
		last, err := store.LogLast(ctx, id)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		e := c.entries[id]
		if e != nil && e.last == last {
			c.mu.Unlock()
			return e.page(after), nil
		}
		if wait, busy := c.inflight[id]; busy {
			c.mu.Unlock()
			select {
			case <-wait: // probably fresh now
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		done := make(chan struct{})
		c.inflight[id] = done
		c.mu.Unlock()

		fresh, err := refresh(ctx, store, id, e, last)
		c.mu.Lock()
		delete(c.inflight, id)
		close(done)
		if err == nil {
			c.putLocked(id, fresh)
		}
		c.mu.Unlock()
		if err != nil {
			return nil, err
		}
		return fresh.page(after), nil
	}
}

// refresh reads what e lacks of the log (all of it without e, or when the
// log went back: expired and begun again).
func refresh(ctx context.Context, store logStore, id string, e *logEntry, last int64) (*logEntry, error) {
	if e == nil || e.last > last {
		p, err := store.LogAfter(ctx, id, 0, jobs.MaxLogLines)
		if err != nil {
			return nil, err
		}
		return newEntry(p.Lines, p.Last, p.Dropped), nil
	}
	p, err := store.LogAfter(ctx, id, e.last, jobs.MaxLogLines)
	if err != nil {
		return nil, err
	}
	// Appending past e's length never changes what e's readers see.
	lines := append(e.lines, p.Lines...)
	bytes := 0
	for _, l := range lines {
		bytes += len(l.Text)
	}
	// The caps, as the store's append applies them.
	for len(lines) > 0 && (len(lines) > jobs.MaxLogLines || bytes > jobs.MaxLogBytes) {
		bytes -= len(lines[0].Text)
		lines = lines[1:]
	}
	return newEntry(lines, max(p.Last, e.last), p.Dropped), nil
}

func newEntry(lines []jobs.LogLine, last, dropped int64) *logEntry {
	e := &logEntry{lines: lines, last: last, dropped: dropped}
	for _, l := range lines {
		e.size += len(l.Text) + logLineOverhead
	}
	return e
}

// page is the entry's lines after line after, as Store.LogAfter gives
// them.
func (e *logEntry) page(after int64) *jobs.LogPage {
	i := sort.Search(len(e.lines), func(i int) bool { return e.lines[i].N > after })
	p := &jobs.LogPage{Lines: e.lines[i:len(e.lines):len(e.lines)], Last: e.last, Dropped: e.dropped}
	switch {
	case len(p.Lines) > 0:
		p.Skipped = p.Lines[0].N - max(after, 0) - 1
	case p.Last > after:
		p.Skipped = p.Last - max(after, 0)
	}
	return p
}

func (c *logCache) putLocked(id string, e *logEntry) {
	if old := c.entries[id]; old != nil {
		c.bytes -= old.size
		delete(c.entries, id)
		for i, x := range c.order {
			if x == id {
				c.order = append(c.order[:i], c.order[i+1:]...)
				break
			}
		}
	}
	if e.size > c.maxBytes {
		return
	}
	for c.bytes+e.size > c.maxBytes && len(c.order) > 0 {
		oldest := c.order[0]
		c.order = c.order[1:]
		c.bytes -= c.entries[oldest].size
		delete(c.entries, oldest)
	}
	c.entries[id] = e
	c.order = append(c.order, id)
	c.bytes += e.size
}
