// Package redisconn holds what every Redis client of claimcheck shares
// about Redis being away: the bound on one call (CallTimeout), the one
// test of whether an error means Redis did not answer (Unavailable), and a
// Monitor that logs once when Redis goes away and once when it is back,
// instead of one line per failed request.
//
// The api edge (package problem) maps Unavailable errors to 503
// redis-unavailable with Retry-After; code that knows Redis is away for
// another reason can wrap ErrUnavailable. It never retries or hides an
// error: callers see each failure as before, only classified.
package redisconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"weak"

	"github.com/redis/go-redis/v9"
)

// CallTimeout bounds one Redis call, its retries included, when the caller
// set no earlier deadline: a request never waits longer than this for a
// Redis that is frozen (SIGSTOP) or unreachable. The README documents it.
const CallTimeout = 2 * time.Second

// ErrUnavailable means Redis did not answer: unreachable, timed out, or
// still loading its data set.
var ErrUnavailable = errors.New("redis unavailable")

// Unavailable reports whether err means Redis could not be reached or
// would not answer yet: ErrUnavailable, a network error or timeout, a
// closed connection, an exhausted pool, a deadline that ran out, or a
// LOADING / MASTERDOWN / TRYAGAIN reply. A context the caller cancelled is
// not (the client went away), nor is any other Redis reply, which shows
// Redis answered.
func Unavailable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var ne net.Error
	var re redis.Error
	switch {
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, redis.ErrPoolTimeout), errors.Is(err, redis.ErrClosed),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.As(err, &ne):
		return true
	case errors.As(err, &re):
		msg := re.Error()
		return strings.HasPrefix(msg, "LOADING ") || strings.HasPrefix(msg, "MASTERDOWN ") || strings.HasPrefix(msg, "TRYAGAIN ")
	}
	return false
}

// Configure sets the timeouts that keep a call to a frozen Redis bounded,
// where the URL left them unset, and makes the client honour its callers'
// deadlines on the socket (go-redis ignores them by default).
func Configure(opt *redis.Options) {
	opt.ContextTimeoutEnabled = true
	defaultTimeouts(&opt.DialTimeout, &opt.ReadTimeout, &opt.WriteTimeout, &opt.PoolTimeout)
}

// ConfigureCluster is Configure for a Redis Cluster client.
func ConfigureCluster(opt *redis.ClusterOptions) {
	opt.ContextTimeoutEnabled = true
	defaultTimeouts(&opt.DialTimeout, &opt.ReadTimeout, &opt.WriteTimeout, &opt.PoolTimeout)
}

// ConfigureFailover is Configure for a client of a Sentinel group.
func ConfigureFailover(opt *redis.FailoverOptions) {
	opt.ContextTimeoutEnabled = true
	defaultTimeouts(&opt.DialTimeout, &opt.ReadTimeout, &opt.WriteTimeout, &opt.PoolTimeout)
}

func defaultTimeouts(ds ...*time.Duration) {
	for _, d := range ds {
		if *d == 0 {
			*d = CallTimeout
		}
	}
}

// Monitor watches a client's calls: it bounds each by its timeout and logs
// one ERROR "redis unavailable" when calls start failing for want of Redis
// and one INFO "redis available again" when one succeeds after that. A new
// outage within Quiet of the last one logged is counted, not logged, so a
// flapping Redis cannot flood the log either.
//
// Calls keep failing for a moment after Redis is back, and those failures
// are the outage that just ended, not a new one: a call that started
// before the recovery fails up to its bound later, and go-redis's pool,
// once enough dials have failed, answers every new dial with the last dial
// error ("connection refused") until its own probe, once a second,
// connects again, while the connections dialed since serve calls. So a
// failure within one call bound (Timeout) of the last success starts an
// outage that is counted, not logged, like one within Quiet, unless it
// lasts longer than that bound: then it is logged as it goes on. Without
// this, a busy client restarting Redis logged down, up, down, up… for one
// outage (a loaded cluster run of app's TestRedisAwayIs503).
type Monitor struct {
	logger  func() *slog.Logger
	now     func() time.Time
	timeout time.Duration
	quiet   time.Duration

	down atomic.Bool // read on every call without the lock

	mu        sync.Mutex
	since     time.Time // when this outage began
	failed    int       // calls failed in this outage
	logged    bool      // this outage's "down" line was written
	lastDown  time.Time // when the last "down" line was written
	lastUp    time.Time // when the last outage ended
	tail      bool      // this outage began within timeout of lastUp
	tailSince time.Time // when the run of tail outages this one is in began
	notLogged int       // outages not logged since the last logged one
}

// MonitorConfig configures Instrument. Zero values take the defaults.
type MonitorConfig struct {
	// Logger receives the down and up lines; nil means slog.Default() at
	// the time of logging.
	Logger *slog.Logger
	// Timeout bounds one call (default CallTimeout).
	Timeout time.Duration
	// Quiet is the least time between two "down" lines (default 30 s; a
	// negative value means none).
	Quiet time.Duration
}

// Instrument adds a Monitor to c and returns it; MonitorOf(c) returns it
// too, for code that is handed the client (a worker's background loops,
// Asynq's logger) to stay quiet while the Monitor has said Redis is down.
func Instrument(c redis.UniversalClient, cfg MonitorConfig) *Monitor {
	m := NewMonitor(cfg)
	c.AddHook(hook{m})
	switch c := c.(type) {
	case *redis.Client:
		remember(c, m)
	case *redis.ClusterClient:
		remember(c, m)
	}
	return m
}

// remember files m under c, weakly.
func remember[T any](c *T, m *Monitor) {
	key := weak.Make(c)
	monitors.Store(key, m)
	runtime.AddCleanup(c, func(k weak.Pointer[T]) { monitors.Delete(k) }, key)
}

// monitors maps each instrumented client (weakly: a client that is no
// longer used is collected, and its entry dropped) to its Monitor. A
// client carries no metadata of its own, and the code that needs its
// Monitor (package worker's loops) is handed only the client, through an
// API that may not name this package.
var monitors sync.Map // weak.Pointer[redis.Client or redis.ClusterClient] → *Monitor

// MonitorOf returns the Monitor Instrument added to c, or nil when c was
// not instrumented (or is neither a *redis.Client nor a
// *redis.ClusterClient).
func MonitorOf(c redis.UniversalClient) *Monitor {
	var m any
	var ok bool
	switch c := c.(type) {
	case *redis.Client:
		if c != nil {
			m, ok = monitors.Load(weak.Make(c))
		}
	case *redis.ClusterClient:
		if c != nil {
			m, ok = monitors.Load(weak.Make(c))
		}
	}
	if !ok {
		return nil
	}
	return m.(*Monitor)
}

// NewMonitor returns a Monitor watching no client: its owner tells it each
// outcome with Observe. It is for code handed a client nobody instrumented,
// so that its own failures still say once that Redis is down, not once
// each.
func NewMonitor(cfg MonitorConfig) *Monitor {
	m := &Monitor{timeout: cfg.Timeout, quiet: cfg.Quiet, logger: slog.Default, now: time.Now}
	if cfg.Logger != nil {
		m.logger = func() *slog.Logger { return cfg.Logger }
	}
	if m.timeout <= 0 {
		m.timeout = CallTimeout
	}
	if m.quiet == 0 {
		m.quiet = 30 * time.Second
	}
	return m
}

// Observe tells m the outcome of one call made without its hook (see
// NewMonitor): an Unavailable error may log "redis unavailable"; after
// one, a success or any other error (Redis answered) logs "redis
// available again".
func (m *Monitor) Observe(err error) { m.observe(err) }

// Down reports whether the last calls failed for want of Redis.
func (m *Monitor) Down() bool { return m.down.Load() }

// observe records one call's outcome.
func (m *Monitor) observe(err error) {
	unavailable := Unavailable(err)
	if !unavailable {
		if errors.Is(err, context.Canceled) || !m.down.Load() {
			return // says nothing about Redis, or nothing changed
		}
		m.up()
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	m.failed++
	if m.down.Load() {
		// An outage taken for the last one's tail is logged once it
		// outlasts a call bound: it is a new one after all.
		if m.tail && !m.logged && now.Sub(m.tailSince) >= m.timeout && m.quietOver(now) {
			m.tail = false
			m.notLogged-- // this one is logged after all
			m.logDown(now, err)
		}
		return
	}
	m.down.Store(true)
	m.since = now
	m.failed = 1
	wasTail := m.tail
	m.tail = !m.lastUp.IsZero() && now.Sub(m.lastUp) < m.timeout
	if m.tail && !wasTail {
		m.tailSince = now // a late success between tails does not restart the count
	}
	// A run of tails that outlasts the bound is an outage too, even when
	// calls keep succeeding in it now and then.
	m.logged = (!m.tail || now.Sub(m.tailSince) >= m.timeout) && m.quietOver(now)
	if m.logged {
		m.tail = false
	}
	if !m.logged {
		m.notLogged++
		return
	}
	m.logDown(now, err)
}

// quietOver reports whether a "down" line may be written at now.
func (m *Monitor) quietOver(now time.Time) bool {
	return m.quiet < 0 || m.lastDown.IsZero() || now.Sub(m.lastDown) >= m.quiet
}

func (m *Monitor) logDown(now time.Time, err error) {
	m.logged = true
	m.lastDown = now
	m.logger().Error("redis unavailable", "err", err, "outages_not_logged", m.notLogged,
		"hint", "requests that need Redis answer 503 redis-unavailable until it is back")
	m.notLogged = 0
}

func (m *Monitor) up() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.down.Load() {
		return
	}
	m.down.Store(false)
	now := m.now()
	m.lastUp = now
	if m.logged {
		m.tail = false
		m.logger().Info("redis available again", "down_for", now.Sub(m.since).Round(time.Millisecond).String(), "failed_calls", m.failed)
	}
}

// blocking are the commands that wait on the server by design; their own
// timeout argument bounds them, not CallTimeout.
var blocking = map[string]bool{
	"blpop": true, "brpop": true, "brpoplpush": true, "blmove": true, "blmpop": true,
	"bzpopmin": true, "bzpopmax": true, "bzmpop": true, "xread": true, "xreadgroup": true, "wait": true,
}

// bounded is ctx with at most d left, cancelled when ctx is. It is not a
// child of ctx in the context tree: a request handler's ctx may be a
// *gin.Context, which gin hands to another request once the handler
// returns, while a timer that fired at the deadline may still be removing
// itself from its parent (a data race, seen under -race with a SIGSTOP'd
// Redis, where every call runs to its deadline). So the timer hangs off a
// detached copy of ctx (its values, no cancellation), ctx's own end is
// passed on with context.AfterFunc, whose stop runs before the call
// returns, and ctx's deadline, if sooner, is kept.
func bounded(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl))
	}
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d)
	if ctx.Done() == nil {
		return tctx, cancel
	}
	stop := context.AfterFunc(ctx, func() {
		// A deadline of ctx's is tctx's too (d above), which ends with
		// DeadlineExceeded by itself; a cancel here would race it and
		// turn a timeout (Unavailable: 503) into a cancel (the caller
		// went away). Nested calls (a script's EVALSHA, then EVAL) hit
		// exactly that.
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			cancel()
		}
	})
	return tctx, func() {
		stop()
		cancel()
	}
}

type hook struct{ m *Monitor }

func (h hook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h hook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !blocking[cmd.Name()] {
			var cancel context.CancelFunc
			ctx, cancel = bounded(ctx, h.m.timeout)
			defer cancel()
		}
		err := next(ctx, cmd)
		h.m.observe(err)
		return err
	}
}

func (h hook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		ctx, cancel := bounded(ctx, h.m.timeout)
		defer cancel()
		err := next(ctx, cmds)
		h.m.observe(err)
		return err
	}
}

// Logger is go-redis's logger (redis.SetLogger) routed to slog.Default()
// at debug level: its own lines ("pool.go: failed to dial …") repeat per
// connection attempt and are plain text; the Monitor says the same once.
type Logger struct{}

// Printf logs one go-redis line at debug.
func (Logger) Printf(ctx context.Context, format string, v ...any) {
	if l := slog.Default(); l.Enabled(ctx, slog.LevelDebug) {
		l.DebugContext(ctx, "go-redis", "line", strings.TrimSpace(fmt.Sprintf(format, v...)))
	}
}
