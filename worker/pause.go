package worker

import (
	"context"
	"fmt"
	"sync"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// queueServer is the worker's Asynq server, made pausable: pause stops
// this worker taking tasks and resume starts it again, for as long as the
// results store cannot take results (health.go).
//
// Why a fresh asynq.Server per resume. Asynq offers three ways to not take
// tasks, and only one stops this worker alone:
//
//   - Inspector.PauseQueue pauses a queue for every worker of the pool,
//     healthy ones with their own disks included: one worker's broken
//     disk would stop the fleet. Not used.
//   - A middleware that hands each task back while unhealthy still
//     dequeues the backlog over and over, moves every task to the retry
//     set (reordering the queue, delaying the jobs a healthy worker could
//     run now) and keeps the worker busy doing nothing. Not used.
//   - asynq.Server.Stop stops pulling tasks while the running ones finish
//     (their leases are still extended, their cancellations still heard).
//     A server cannot start again after it was stopped, so resume builds
//     a new one on the same Redis client and starts it with the same
//     handler. Each asynq.Server has its own server id, heartbeat and
//     state in Redis, and one built from a Redis client does not close it
//     on Shutdown, so the two generations never meet.
//
// A stopped generation is shut down as soon as its last running task ends
// (so no task is handed back for a pause), and the next generation starts
// only then: a worker never runs more than Concurrency attempts at once,
// at the price that resuming waits for the attempts that were running when
// it paused.
//
//	      Start            pause                  last task ends
//	new ───────▶ running ───────▶ stopped+draining ──────────────▶ paused
//	                ▲                    │ resume                     │ resume
//	                │                    ▼                            │
//	                └──────────── resume pending ◀────────────────────┘
//	                 (starts when the draining generation is shut down)
//
// Stop and Shutdown have asynq.Server's meaning for the whole: Stop takes
// no task any more (resume no longer starts one), Shutdown gives running
// tasks of every generation ShutdownTimeout, then hands them back.
type queueServer struct {
	rdb redis.UniversalClient
	cfg asynq.Config

	mu       sync.Mutex
	handler  asynq.Handler // set by Start
	cur      *generation   // taking tasks; nil while paused, stopped, or before Start
	draining int           // stopped generations not shut down yet
	paused   bool
	closed   bool // Stop or Shutdown was called: nothing starts again
	quit     chan struct{}
	wg       sync.WaitGroup // the draining generations' goroutines
	// onShutdown runs first in Shutdown (it ends the health monitor, so
	// nothing resumes while shutting down).
	onShutdown func()
	// started, when set, is told of each generation that starts or fails
	// to (tests).
	started func(err error)
}

func newQueueServer(rdb redis.UniversalClient, cfg asynq.Config) *queueServer {
	return &queueServer{rdb: rdb, cfg: cfg, quit: make(chan struct{})}
}

// generation is one asynq.Server and the tasks its handler runs now.
type generation struct {
	srv     *asynq.Server
	mu      sync.Mutex
	running int
	stopped bool
	idle    chan struct{} // closed once stopped with no task running
}

func (g *generation) handle(h asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		g.mu.Lock()
		g.running++
		g.mu.Unlock()
		defer func() {
			g.mu.Lock()
			g.running--
			g.idleIfDone()
			g.mu.Unlock()
		}()
		return h.ProcessTask(ctx, t)
	})
}

// stop has the generation take no new task.
func (g *generation) stop() {
	g.srv.Stop()
	g.mu.Lock()
	g.stopped = true
	g.idleIfDone()
	g.mu.Unlock()
}

func (g *generation) idleIfDone() {
	if g.stopped && g.running == 0 {
		select {
		case <-g.idle:
		default:
			close(g.idle)
		}
	}
}

// Start begins taking tasks with h, unless paused: then the first
// generation starts at resume.
func (q *queueServer) Start(h asynq.Handler) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.handler = h
	if q.paused {
		return nil
	}
	return q.startLocked()
}

// startLocked starts a new generation; q.mu is held.
func (q *queueServer) startLocked() error {
	g := &generation{srv: asynq.NewServerFromRedisClient(q.rdb, q.cfg), idle: make(chan struct{})}
	err := g.srv.Start(g.handle(q.handler))
	if q.started != nil {
		q.started(err)
	}
	if err != nil {
		return fmt.Errorf("asynq server: %w", err)
	}
	q.cur = g
	return nil
}

// pause stops taking tasks; the running ones go on. It reports whether
// the worker was taking tasks (or about to).
func (q *queueServer) pause() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.paused || q.closed {
		return false
	}
	q.paused = true
	g := q.cur
	q.cur = nil
	if g == nil {
		return true
	}
	g.stop()
	q.draining++
	q.wg.Add(1)
	go q.drain(g)
	return true
}

// drain shuts g down once its last task ended (or at once when the worker
// shuts down: then asynq's own grace applies), and starts the next
// generation if a resume waits for it.
func (q *queueServer) drain(g *generation) {
	defer q.wg.Done()
	select {
	case <-g.idle:
	case <-q.quit:
	}
	g.srv.Shutdown()
	q.mu.Lock()
	defer q.mu.Unlock()
	q.draining--
	if q.draining == 0 && !q.paused && !q.closed && q.handler != nil && q.cur == nil {
		if q.startLocked() != nil {
			q.paused = true // the health monitor's next check resumes it
		}
	}
}

// resume takes tasks again: at once, or when the generation stopped by the
// last pause has drained. It reports whether the worker was paused.
func (q *queueServer) resume() (bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.paused || q.closed {
		return false, nil
	}
	q.paused = false
	if q.handler == nil || q.draining > 0 {
		return true, nil // Start, or drain, starts it
	}
	if err := q.startLocked(); err != nil {
		q.paused = true // the next resume tries again
		return false, err
	}
	return true, nil
}

// Stop takes no new task, for good; running ones go on until Shutdown.
func (q *queueServer) Stop() {
	q.mu.Lock()
	q.closed = true
	g := q.cur
	q.mu.Unlock()
	if g != nil {
		g.srv.Stop()
	}
}

// Shutdown ends the worker's task processing: every generation's running
// tasks get ShutdownTimeout (concurrently), then are handed back.
func (q *queueServer) Shutdown() {
	if q.onShutdown != nil {
		q.onShutdown()
	}
	q.mu.Lock()
	q.closed = true
	g := q.cur
	select {
	case <-q.quit:
	default:
		close(q.quit)
	}
	q.mu.Unlock()
	if g != nil {
		g.srv.Shutdown()
	}
	q.wg.Wait()
}

// Ping checks that the current generation's Redis connection answers.
func (q *queueServer) Ping() error {
	q.mu.Lock()
	g := q.cur
	q.mu.Unlock()
	if g == nil {
		return q.rdb.Ping(context.Background()).Err()
	}
	return g.srv.Ping()
}

// isPaused reports whether the worker takes no task because of a pause.
func (q *queueServer) isPaused() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.paused
}
