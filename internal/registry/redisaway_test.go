package registry_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/syncbuf"
)

// With Redis gone, each failed heartbeat is a debug line, not an ERROR:
// the client's monitor says once that Redis is down (bug F). RedisAway is
// told every outcome, successes included.
func TestHeartbeatWithRedisAwayLogsAtDebug(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	var logs syncbuf.Buffer
	cfg := config(newClock(), "w1")
	cfg.Now = nil // real time: the heartbeat ticks
	cfg.Heartbeat = 20 * time.Millisecond
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	start(t, rdb, cfg, spec("echo", "", schemaN))
	srv.Kill()
	waitfor(t, func() bool {
		return strings.Count(logs.String(), `"msg":"job types not announced: redis unavailable"`) >= 3
	})
	if s := logs.String(); strings.Contains(s, `"level":"ERROR"`) || !strings.Contains(s, `"level":"DEBUG"`) {
		t.Fatalf("heartbeats with Redis away:\n%s", s)
	}
}
