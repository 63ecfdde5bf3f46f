package worker

import (
	"context"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/redisconn"
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
		if s.loopFailed(slog.LevelError, "reap results", err) {
			return
		}
		if st.Results+st.Temps > 0 {
			s.log.Info("reaped expired results", "results", st.Results, "temp_files", st.Temps, "kept", st.Kept)
		}
	})
}

// Redis away. Each background loop (the reaper, heartbeats, the
// reconciler, the registry's announcer) and Asynq's own loops run every
// few seconds or faster; with Redis gone, logging each failure would be an
// ERROR per tick per loop. Instead the Redis client's redisconn.Monitor
// says once that Redis is down and once that it is back, and a loop's
// failure for want of Redis goes to debug. config.OpenRedis instruments the
// client; a worker handed one nobody instrumented keeps a Monitor of its
// own, which its loops tell of each outcome.

// watchRedis finds the Monitor of rdb, or makes the worker's own.
func (s *Server) watchRedis(rdb redis.UniversalClient) {
	if s.redis = redisconn.MonitorOf(rdb); s.redis == nil {
		s.redis, s.ownMonitor = redisconn.NewMonitor(redisconn.MonitorConfig{Logger: s.log}), true
	}
}

// redisAway tells the worker's own Monitor, if it has one, the outcome err
// of a background call, and reports whether err is Redis being away (or
// came while the Monitor says it is: Asynq's Inspector flattens the errors
// it returns), which the Monitor has already said.
func (s *Server) redisAway(err error) bool {
	if s.ownMonitor {
		s.redis.Observe(err)
	}
	return err != nil && (redisconn.Unavailable(err) || s.redis.Down())
}

// loopFailed logs a background loop's error err, if any, as msg at level,
// or at debug when it is Redis being away, and reports whether there was
// one. Every outcome, success included, goes through it.
func (s *Server) loopFailed(level slog.Level, msg string, err error, args ...any) bool {
	if err == nil {
		s.redisAway(nil)
		return false
	}
	if s.redisAway(err) {
		level = slog.LevelDebug
	}
	s.log.Log(context.Background(), level, msg, append(args, "err", err)...)
	return true
}
