package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/claimcheck/claimcheck/internal/blob"
	"github.com/claimcheck/claimcheck/internal/jobs"
)

// ReapStats says what one Reap pass removed.
type ReapStats struct {
	Results, Temps, Kept int
}

// Reap removes results whose job record has expired (the record's TTL is
// the retention clock, so a result whose record exists is never touched,
// however old its file) and temporary files older than staleTemp, which a
// writer that crashed left behind. Blobs committed after the listing are
// not seen, so concurrent writers are safe; records are never recreated
// under the same id, so a record found gone stays gone.
func Reap(ctx context.Context, store *jobs.Store, blobs *blob.Dir, staleTemp time.Duration, now time.Time) (ReapStats, error) {
	var st ReapStats
	entries, err := blobs.List()
	if err != nil {
		return st, err
	}
	var keys []string
	for _, e := range entries {
		switch {
		case e.Temp && now.Sub(e.ModTime) > staleTemp:
			if err := blobs.RemoveTemp(e.Key); err != nil {
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
		live, err := store.Exist(ctx, batch)
		if err != nil {
			return st, fmt.Errorf("reap: %w", err)
		}
		for i, key := range batch {
			if live[i] {
				st.Kept++
				continue
			}
			if err := blobs.Delete(key); err != nil {
				return st, err
			}
			st.Results++
		}
	}
	return st, nil
}

// reapLoop runs Reap every interval until stop is closed.
func (s *Server) reapLoop(stop <-chan struct{}) {
	t := time.NewTicker(s.cfg.ReapInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ReapInterval)
			st, err := Reap(ctx, s.store, s.blobs, s.cfg.StaleTemp, time.Now())
			cancel()
			if err != nil {
				s.log.Error("reap results", "err", err)
			} else if st.Results+st.Temps > 0 {
				s.log.Info("reaped expired results", "results", st.Results, "temp_files", st.Temps, "kept", st.Kept)
			}
		}
	}
}
