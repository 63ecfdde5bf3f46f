package progress

import (
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
)

func TestRecordCache(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	c := newRecordCache(4, 5*time.Second)
	c.now = func() time.Time { return now }
	v1, v2 := &jobs.Job{ID: "a", Version: 1}, &jobs.Job{ID: "a", Version: 2}

	j, gen := c.get("a")
	if j != nil {
		t.Fatal("hit on an empty cache")
	}
	c.fill("a", gen, v1)
	if j, _ := c.get("a"); j != v1 {
		t.Fatalf("after fill: %v", j)
	}

	// A change while a read is in flight: the read's (older) result is
	// not kept.
	c.invalidate("a")
	_, gen = c.get("a")
	c.invalidate("a") // the job changes again before the read returns
	c.fill("a", gen, v1)
	if j, _ := c.get("a"); j != nil {
		t.Fatalf("stale read kept: %v", j)
	}
	_, gen = c.get("a")
	c.fill("a", gen, v2)
	if j, _ := c.get("a"); j != v2 {
		t.Fatalf("fresh read not kept: %v", j)
	}

	// Entries expire, clear drops all, and the size is bounded.
	now = now.Add(6 * time.Second)
	if j, _ := c.get("a"); j != nil {
		t.Fatal("expired entry served")
	}
	_, gen = c.get("b")
	c.clear()
	c.fill("b", gen, &jobs.Job{ID: "b"})
	if j, _ := c.get("b"); j != nil {
		t.Fatal("a read from before clear was kept")
	}
	// A read from before clear must not land in the entry a newer read
	// reserved after it, even though both are the entry's first.
	_, old := c.get("x")
	c.clear()
	c.get("x") // a newer read reserves the entry
	stale, current := &jobs.Job{ID: "x", Version: 1}, &jobs.Job{ID: "x", Version: 2}
	c.fill("x", old, stale)
	if j, _ := c.get("x"); j != nil {
		t.Fatalf("a read from before clear was kept in a newer reservation: %v", j)
	}
	_, fresh := c.get("x")
	c.fill("x", fresh, current)
	if j, _ := c.get("x"); j != current {
		t.Fatalf("the newer read was not kept: %v", j)
	}
	c.clear()

	for _, id := range []string{"c", "d", "e", "f", "g", "h"} {
		_, g := c.get(id)
		c.fill(id, g, &jobs.Job{ID: id})
	}
	if n := len(c.m); n > 4 {
		t.Fatalf("cache holds %d entries, bound 4", n)
	}
}

// TestRecordCacheDropsExpiredEntries: entries that expired go at the next
// miss a TTL later, though the cache is far from full; a reservation whose
// read is in flight stays.
func TestRecordCacheDropsExpiredEntries(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	c := newRecordCache(1000, 5*time.Second)
	c.now = func() time.Time { return now }
	for _, id := range []string{"a", "b", "c"} {
		_, gen := c.get(id)
		c.fill(id, gen, &jobs.Job{ID: id})
	}
	_, inFlight := c.get("d")
	now = now.Add(6 * time.Second)
	c.get("e")
	c.mu.Lock()
	n := len(c.m)
	_, kept := c.m["d"]
	c.mu.Unlock()
	if n != 2 || !kept {
		t.Fatalf("after a TTL the cache holds %d entries (in-flight kept: %v), want d and e", n, kept)
	}
	c.fill("d", inFlight, &jobs.Job{ID: "d"})
	if j, _ := c.get("d"); j == nil {
		t.Fatal("the in-flight read's result was lost")
	}
}
