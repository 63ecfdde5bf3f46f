package worker

import (
	"context"
	"time"
)

// reapLoop runs blob.Dir.Reap every interval until stop is closed.
func (s *Server) reapLoop(stop <-chan struct{}) {
	t := time.NewTicker(s.cfg.ReapInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ReapInterval)
			st, err := s.blobs.Reap(ctx, s.store.Exist, s.cfg.StaleTemp, time.Now())
			cancel()
			if err != nil {
				s.log.Error("reap results", "err", err)
			} else if st.Results+st.Temps > 0 {
				s.log.Info("reaped expired results", "results", st.Results, "temp_files", st.Temps, "kept", st.Kept)
			}
		}
	}
}
