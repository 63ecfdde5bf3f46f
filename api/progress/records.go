package progress

import (
	"sync"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
)

// recordCache keeps job records this process read recently, so a client
// polling a job costs no Redis round trip. It is kept right by the hub:
// every change to a job is published on the job's channel (from inside the
// script that made it), and the hub drops the job's entry when it hears of
// it, or when its subscription to the job is lost, made again or dropped.
// Only a job the hub is subscribed to may be cached (Service.job asks
// Hub.hold first). The TTL only bounds how long a record that expired in
// Redis can still be served from here.
//
// A read racing a change is handled with a generation per entry: a miss
// reserves the entry (bumping its generation) before reading Redis, a
// change bumps it again, and the read's result is kept only if nothing
// changed meanwhile. Generations come from one counter for the whole cache,
// so an entry dropped (by clear or eviction) and made again never reuses a
// generation an older read still holds.
type recordCache struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu  sync.Mutex
	m   map[string]*record
	seq uint64 // the last generation handed out
	// swept is when expired entries were last dropped: at most once a
	// TTL, so a cache that never fills still holds only what is fresh.
	swept time.Time
}

type record struct {
	job     *jobs.Job
	fetched time.Time
	gen     uint64
}

func newRecordCache(max int, ttl time.Duration) *recordCache {
	return &recordCache{ttl: ttl, max: max, now: time.Now, m: map[string]*record{}}
}

// get returns a cached record, or nil and a reservation for fill.
func (c *recordCache) get(id string) (*jobs.Job, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.m[id]
	if r != nil && r.job != nil && c.now().Sub(r.fetched) < c.ttl {
		return r.job, 0
	}
	if r == nil {
		if len(c.m) >= c.max {
			c.evictLocked()
		} else if now := c.now(); now.Sub(c.swept) >= c.ttl {
			c.sweepLocked(now)
		}
		r = &record{}
		c.m[id] = r
	}
	c.seq++
	r.gen, r.job = c.seq, nil
	return nil, r.gen
}

// fill stores a record read under reservation gen, unless the job changed
// (or the entry was dropped) since.
func (c *recordCache) fill(id string, gen uint64, j *jobs.Job) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.m[id]; r != nil && r.gen == gen {
		r.job, r.fetched = j, c.now()
	}
}

// invalidate drops job id's record: it changed.
func (c *recordCache) invalidate(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.m[id]; r != nil {
		c.seq++
		r.gen, r.job = c.seq, nil
	}
}

// clear drops everything (the hub may have missed changes).
func (c *recordCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m = map[string]*record{}
}

// evictLocked makes room: expired entries first, then arbitrary ones.
// sweepLocked drops the entries that have expired (not reservations: a read
// is filling them). Without it a process serving many jobs, each read a few
// times, held every record it ever read until the cache was full (the
// fault harness's soak saw the heap grow by about 2 KiB a job).
func (c *recordCache) sweepLocked(now time.Time) {
	c.swept = now
	for id, r := range c.m {
		if r.job != nil && now.Sub(r.fetched) >= c.ttl {
			delete(c.m, id)
		}
	}
}

func (c *recordCache) evictLocked() {
	now := c.now()
	for id, r := range c.m {
		if r.job == nil || now.Sub(r.fetched) >= c.ttl {
			delete(c.m, id)
		}
	}
	for id := range c.m {
		if len(c.m) < c.max*3/4 {
			return
		}
		delete(c.m, id)
	}
}
