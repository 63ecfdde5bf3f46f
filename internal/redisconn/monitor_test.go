package redisconn_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/redisconn"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/syncbuf"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
)

// TestMonitorLogsEachOutageOnce kills Redis twice with many failing calls
// in each outage: the first outage is one "down" and one "up" line, and
// the second, within the quiet period, adds none — it is counted in the
// next down line instead. Every failed call is still Unavailable to its
// caller, and the frozen server's calls end (bounded) too.
func TestMonitorLogsEachOutageOnce(t *testing.T) {
	srv := redistest.Start(t)
	var logs syncbuf.Buffer
	opt := &redis.Options{Addr: srv.Addr()}
	redisconn.Configure(opt)
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	m := redisconn.Instrument(c, redisconn.MonitorConfig{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	ctx := context.Background()
	count := func() (down, up int) {
		s := logs.String()
		return strings.Count(s, `"msg":"redis unavailable"`), strings.Count(s, `"msg":"redis available again"`)
	}
	outage := func(stop, back func(), calls int) {
		t.Helper()
		stop()
		for range calls {
			if err := c.Get(ctx, "k").Err(); !redisconn.Unavailable(err) {
				t.Fatalf("Get with Redis away: %v, want an Unavailable error", err)
			}
		}
		if !m.Down() {
			t.Fatal("the monitor does not know Redis is down")
		}
		back()
		// go-redis fails fast for a moment after dials failed, until its
		// pool's own probe connects again.
		waitfor.True(t, 10*time.Second, func() bool { return c.Get(ctx, "k").Err() == redis.Nil })
		if m.Down() {
			t.Fatal("the monitor still thinks Redis is down")
		}
	}
	outage(srv.Kill, srv.Restart, 10)
	if d, u := count(); d != 1 || u != 1 {
		t.Fatalf("first outage: %d down and %d up lines, want 1 and 1:\n%s", d, u, logs.String())
	}
	outage(srv.Pause, srv.Resume, 2)
	if d, u := count(); d != 1 || u != 1 {
		t.Fatalf("second outage within the quiet period: %d down and %d up lines, want still 1 and 1:\n%s", d, u, logs.String())
	}
}

// MonitorOf finds the Monitor Instrument added to a client, and none for a
// client nobody instrumented.
func TestMonitorOf(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	other := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = c.Close(); _ = other.Close() })
	m := redisconn.Instrument(c, redisconn.MonitorConfig{})
	if got := redisconn.MonitorOf(c); got != m {
		t.Fatalf("MonitorOf(instrumented) = %p, want %p", got, m)
	}
	if got := redisconn.MonitorOf(other); got != nil {
		t.Fatalf("MonitorOf(not instrumented) = %p, want nil", got)
	}
}

// A Monitor watching no client logs what it is told with Observe: one
// down line for many failures, one up line for the success after them,
// nothing for a reply error while Redis is up.
func TestNewMonitorObserve(t *testing.T) {
	var logs syncbuf.Buffer
	m := redisconn.NewMonitor(redisconn.MonitorConfig{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	m.Observe(errors.New("ERR wrong number of arguments"))
	m.Observe(nil)
	for range 5 {
		m.Observe(fmt.Errorf("heartbeat: %w", syscall.ECONNREFUSED))
	}
	if !m.Down() {
		t.Fatal("not down after refused connections")
	}
	m.Observe(nil)
	m.Observe(nil)
	s := logs.String()
	if d, u := strings.Count(s, `"msg":"redis unavailable"`), strings.Count(s, `"msg":"redis available again"`); d != 1 || u != 1 || m.Down() {
		t.Fatalf("%d down and %d up lines (down now: %v), want 1 and 1:\n%s", d, u, m.Down(), s)
	}
	if !strings.Contains(s, `"failed_calls":5`) {
		t.Fatalf("up line does not count the 5 failed calls:\n%s", s)
	}
}
