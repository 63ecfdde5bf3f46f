package progress

import (
	"context"
	"sync"

	"github.com/claimcheck/claimcheck/internal/jobs"
)

// logCache keeps the log pages this process read recently, so that readers
// of a log that has not changed share one read of it. A full page of a
// full log is 10,000 entries and about 1 MiB: ~15 ms of Redis's one core,
// where a status read from Redis is ~0.02 ms. Without sharing, anyone with
// a job token could loop GET /logs (or reconnect an event stream) on their
// own job and pin the Redis every worker and api shares.
//
// A page is keyed by (job, after, limit) and tagged with the log's last
// line number as read in the same transaction; a reader first reads that
// number alone (LogLast, one HGET) and uses the cached page only if it is
// the same: a log's lines never change once written, only new ones come,
// and a trim comes only with a new line. Short pages are not kept. Concurrent misses for one key wait
// for one read. Memory is bounded by maxBytes of line text (plus a small
// per-line overhead); the oldest pages go first.
type logCache struct {
	maxBytes int

	mu       sync.Mutex
	pages    map[logKey]*cachedPage
	order    []logKey // oldest first
	bytes    int
	inflight map[logKey]chan struct{}
}

type logKey struct {
	job          string
	after, limit int64
}

type cachedPage struct {
	page *jobs.LogPage
	size int
}

const (
	// logLineOverhead is what a cached line costs beyond its text.
	logLineOverhead = 64
	// minCachedLines: a shorter page is cheap to read again and is not
	// kept (a follower's reads after its last line are mostly empty).
	minCachedLines = 64
)

func newLogCache(maxBytes int) *logCache {
	return &logCache{maxBytes: maxBytes, pages: map[logKey]*cachedPage{}, inflight: map[logKey]chan struct{}{}}
}

// logStore is what the cache reads.
type logStore interface {
	LogLast(ctx context.Context, id string) (int64, error)
	LogAfter(ctx context.Context, id string, after int64, limit int) (*jobs.LogPage, error)
}

// get returns the page of job id's log after line after, at most limit
// lines, read from store unless a cached one is still the log's. The page
// is shared: callers must not change it.
func (c *logCache) get(ctx context.Context, store logStore, id string, after int64, limit int) (*jobs.LogPage, error) {
	key := logKey{job: id, after: after, limit: int64(limit)}
	for {
		last, err := store.LogLast(ctx, id)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		if p := c.pages[key]; p != nil && p.page.Last == last {
			c.mu.Unlock()
			return p.page, nil
		}
		if wait, busy := c.inflight[key]; busy {
			c.mu.Unlock()
			select {
			case <-wait: // read again: it is probably cached now
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		done := make(chan struct{})
		c.inflight[key] = done
		c.mu.Unlock()

		page, err := store.LogAfter(ctx, id, after, limit)
		c.mu.Lock()
		delete(c.inflight, key)
		close(done)
		if err == nil {
			c.putLocked(key, page)
		}
		c.mu.Unlock()
		return page, err
	}
}

func (c *logCache) putLocked(key logKey, page *jobs.LogPage) {
	if len(page.Lines) < minCachedLines {
		return
	}
	size := 0
	for _, l := range page.Lines {
		size += len(l.Text) + logLineOverhead
	}
	if size > c.maxBytes {
		return
	}
	if old := c.pages[key]; old != nil {
		c.bytes -= old.size
		c.order = deleteKey(c.order, key)
	}
	for c.bytes+size > c.maxBytes && len(c.order) > 0 {
		oldest := c.order[0]
		c.order = c.order[1:]
		c.bytes -= c.pages[oldest].size
		delete(c.pages, oldest)
	}
	c.pages[key] = &cachedPage{page: page, size: size}
	c.order = append(c.order, key)
	c.bytes += size
}

func deleteKey(keys []logKey, k logKey) []logKey {
	for i, x := range keys {
		if x == k {
			return append(keys[:i], keys[i+1:]...)
		}
	}
	return keys
}
