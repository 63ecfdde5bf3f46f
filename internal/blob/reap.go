package blob

import (
	"context"
	"fmt"
	"time"
)

// ReapStats says what one Reap pass removed.
type ReapStats struct {
	Results, Temps, Kept int
}

// Reap removes results whose job record has expired (exist reports, per
// key, whether it has one; the record's TTL is the retention clock, so a
// result whose record exists is never touched, however old its file) and temporary files older than staleTemp, which a
// writer that crashed left behind. Blobs committed after the listing are
// not seen, so concurrent writers are safe; records are never recreated
// under the same id, so a record found gone stays gone.
func (d *Dir) Reap(ctx context.Context, exist func(ctx context.Context, keys []string) ([]bool, error), staleTemp time.Duration, now time.Time) (ReapStats, error) {
	entries, err := d.List()
	if err != nil {
		return ReapStats{}, err
	}
	return reap(ctx, entries, exist, staleTemp, now, d.RemoveTemp, d.Delete)
}

// reap is Reap over entries, whichever store listed them.
func reap(ctx context.Context, entries []Entry, exist func(ctx context.Context, keys []string) ([]bool, error), staleTemp time.Duration, now time.Time,
	removeTemp, remove func(string) error) (ReapStats, error) {
	var st ReapStats
	var keys []string
	for _, e := range entries {
		switch {
		case e.Temp && now.Sub(e.ModTime) > staleTemp:
			if err := removeTemp(e.Key); err != nil {
				return st, err
			}
			st.Temps++
		case !e.Temp:
			keys = append(keys, e.Key)
		}
	}
	for len(keys) > 0 {
		batch := keys[:min(len(keys), 500)]
		keys = keys[len(batch):]
		live, err := exist(ctx, batch)
		if err != nil {
			return st, fmt.Errorf("reap: %w", err)
		}
		for i, key := range batch {
			if live[i] {
				st.Kept++
				continue
			}
			if err := remove(key); err != nil {
				return st, err
			}
			st.Results++
		}
	}
	return st, nil
}
