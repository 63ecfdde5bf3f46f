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

// TestMonitorTakesFailuresJustAfterRecoveryForTheOutagesTail: after Redis
// is back, calls that started before go on failing for up to their bound,
// and go-redis's pool answers new dials with its last dial error until its
// once-a-second probe connects, while other calls succeed. Those failures
// are the ended outage's tail, not outages of their own: one down and one
// up line, even with the quiet period off. A failure that outlasts the
// bound is a new outage and is logged, with its up line.
func TestMonitorTakesFailuresJustAfterRecoveryForTheOutagesTail(t *testing.T) {
	var logs syncbuf.Buffer
	m := redisconn.NewMonitor(redisconn.MonitorConfig{Logger: slog.New(slog.NewJSONHandler(&logs, nil)), Timeout: 2 * time.Second, Quiet: -1})
	now := time.Unix(1_700_000_000, 0)
	redisconn.SetClock(m, func() time.Time { return now })
	refused := fmt.Errorf("dial tcp 127.0.0.1:1: %w", syscall.ECONNREFUSED)
	count := func() (down, up int) {
		s := logs.String()
		return strings.Count(s, `"msg":"redis unavailable"`), strings.Count(s, `"msg":"redis available again"`)
	}
	want := func(what string, down, up int) {
		t.Helper()
		if d, u := count(); d != down || u != up {
			t.Fatalf("%s: %d down and %d up lines, want %d and %d:\n%s", what, d, u, down, up, logs.String())
		}
	}

	m.Observe(refused)
	now = now.Add(3 * time.Second)
	m.Observe(refused)
	m.Observe(nil)
	want("an outage", 1, 1)
	// Back for 100 ms: the pool's stale dial error, a success, again.
	for range 3 {
		now = now.Add(100 * time.Millisecond)
		m.Observe(refused)
		if !m.Down() {
			t.Fatal("a failed call left the monitor saying Redis is up")
		}
		now = now.Add(50 * time.Millisecond)
		m.Observe(nil)
		if m.Down() {
			t.Fatal("a successful call left the monitor saying Redis is down")
		}
	}
	want("its tail", 1, 1)

	// Failing again 1 s after the last success, and still 2 s later: a new
	// outage, logged once it outlasts the bound, and its end too.
	now = now.Add(time.Second)
	m.Observe(refused)
	want("a failure within the bound", 1, 1)
	now = now.Add(2 * time.Second)
	m.Observe(refused)
	m.Observe(refused)
	want("a failure that outlasts the bound", 2, 1)
	m.Observe(nil)
	want("the new outage's end", 2, 2)

	// Long after: an outage is logged at its first failure, as before.
	now = now.Add(time.Minute)
	m.Observe(refused)
	want("a later outage", 3, 2)

	// An outage that begins just after a recovery, with a late success of
	// a call from before in it, is logged once it outlasts the bound from
	// its first failure, not from the late success.
	m.Observe(nil)
	now = now.Add(500 * time.Millisecond)
	m.Observe(refused)
	now = now.Add(time.Second)
	m.Observe(nil)
	now = now.Add(100 * time.Millisecond)
	m.Observe(refused)
	want("a new outage's first 1.1 s", 3, 3)
	now = now.Add(time.Second)
	m.Observe(refused)
	want("a new outage 2.1 s after its first failure", 4, 3)
	m.Observe(nil)
	want("its end", 4, 4)
}
