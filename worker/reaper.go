package worker

import (
	"context"
	"time"
)

// every calls fn, with a context that ends after timeout, once every
// interval until stop is closed: the shape of the worker's background
// services (reaper, heartbeats, reconciler).
func every(stop <-chan struct{}, interval, timeout time.Duration, fn func(ctx context.Context)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		fn(ctx)
		cancel()
	}
}

// reapLoop runs blob.Dir.Reap every interval until stop is closed.
func (s *Server) reapLoop(stop <-chan struct{}) {
	every(stop, s.cfg.ReapInterval, s.cfg.ReapInterval, func(ctx context.Context) {
		st, err := s.blobs.Reap(ctx, s.store.Exist, s.cfg.StaleTemp, time.Now())
		if err != nil {
			s.log.Error("reap results", "err", err)
		} else if st.Results+st.Temps > 0 {
			s.log.Info("reaped expired results", "results", st.Results, "temp_files", st.Temps, "kept", st.Kept)
		}
	})
}
