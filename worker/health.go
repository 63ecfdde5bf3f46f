package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/claimcheck/claimcheck/api/router"
	"github.com/claimcheck/claimcheck/internal/blob"
	"github.com/claimcheck/claimcheck/internal/metrics"
)

// Results-store health. A worker whose results store cannot take a result
// (read-only, vanished or replaced directory, full disk, less free space
// than Config.ResultsMinFree) would run every job of its backlog only to
// lose the result, failing the whole backlog within seconds. Instead it
// checks the store every Config.ResultsCheckInterval, and at once when a
// result write fails, and while the store is unusable it
//
//   - takes no task (queueServer.pause; pause.go says why this worker's
//     own Asynq server is stopped rather than the pool's queues paused),
//     so the backlog stays queued for healthy workers or for this one;
//   - answers /readyz 503, naming results-store-writable or
//     results-store-space as failing (never a path);
//   - withdraws from the job-type registry, so GET /v1/job-types counts
//     only workers able to run a job now (a paused worker is capacity
//     nobody gets; submissions are still accepted and queued, as for a
//     type whose workers are all gone);
//   - sets claimcheck_worker_paused{reason} to 1.
//
// It logs once when it pauses (with the cause and the directory, for the
// operator: this log is the worker's own) and once when it resumes. When a
// check passes again it resumes by itself: nothing to restart.

// DefaultResultsMinFree is Config.ResultsMinFree unless set: 1 GiB, the
// default cap on one result (Config.MaxResultBytes), so that a job whose
// result is as large as allowed still fits when it starts. A fleet with
// larger results or higher concurrency should raise it (or give a
// percentage with --results-min-free).
const DefaultResultsMinFree = 1 << 30

// DefaultResultsCheckInterval is Config.ResultsCheckInterval unless set:
// the probe costs a small file's create, fsync and remove (about 1.3 ms on
// a local disk, blob.BenchmarkCheck), cheap at this rate; a store that
// breaks between checks is usually noticed sooner, at the first result
// write that fails.
const DefaultResultsCheckInterval = 5 * time.Second

func (c *Config) setStoreDefaults() {
	if c.ResultsMinFree == 0 {
		c.ResultsMinFree = DefaultResultsMinFree
	}
	if c.ResultsCheckInterval <= 0 {
		c.ResultsCheckInterval = DefaultResultsCheckInterval
	}
}

// storeMonitor is the loop that checks the results store and pauses or
// resumes the worker.
type storeMonitor struct {
	s    *Server
	min  blob.MinFree
	kick chan struct{}
	stop chan struct{}
	done chan struct{}

	// checks counts finished checks (tests wait for some to pass).
	checks atomic.Int64
	// checking serialises checks: the loop's, and storeUnusable's.
	checking sync.Mutex

	mu  sync.Mutex
	err error // the last check's; nil: usable
	// announce is set while the worker should be in the registry but is
	// not: a resume whose announcement failed tries again each check.
	announce bool
	// reannounced is set once the monitor announced the worker again
	// after a pause; Shutdown's withdraw may have raced with it.
	reannounced bool
	// announceWarned: a failing re-announcement is logged once, not at
	// every check.
	announceWarned bool
}

// watchStore checks the store once, pausing the worker before it takes a
// task if the store is unusable, and starts the monitor loop. Start calls
// it after the announcement and before the Asynq server starts.
func (s *Server) watchStore() {
	m := &storeMonitor{s: s, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		min: blob.MinFree{Bytes: s.cfg.ResultsMinFree, Percent: s.cfg.ResultsMinFreePercent}}
	s.health = m
	s.blobs.OnWriteError(func(error) {
		select {
		case m.kick <- struct{}{}:
		default: // a check is due already
		}
	})
	s.srv.onShutdown = m.end
	m.check()
	go m.loop()
}

func (m *storeMonitor) loop() {
	defer close(m.done)
	t := time.NewTicker(m.s.cfg.ResultsCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		case <-m.kick:
		}
		m.check()
	}
}

// end stops the loop (queueServer.Shutdown runs it first) and undoes an
// announcement that may have come after Shutdown's withdraw.
func (m *storeMonitor) end() {
	select {
	case <-m.stop:
		return
	default:
		close(m.stop)
	}
	<-m.done
	m.mu.Lock()
	again := m.reannounced
	m.mu.Unlock()
	if again {
		m.s.withdraw()
	}
}

// storeUnusable checks the store now, pausing the worker if it cannot
// take results, and reports whether it cannot. For the code that just saw
// a result write fail: true means the store is at fault, not the job (so
// the attempt could be handed back rather than charged a retry); false,
// that the failure was the job's own (its result path, its size).
func (s *Server) storeUnusable() bool {
	if s.health == nil {
		return false
	}
	s.health.check()
	return s.storeErr() != nil
}

// storeErr is the last check's verdict: nil when the store takes results.
func (s *Server) storeErr() error {
	if s.health == nil {
		return nil
	}
	s.health.mu.Lock()
	defer s.health.mu.Unlock()
	return s.health.err
}

// check looks at the store and pauses or resumes the worker on a change.
func (m *storeMonitor) check() {
	m.checking.Lock()
	defer m.checking.Unlock()
	defer m.checks.Add(1)
	s := m.s
	m.mu.Lock()
	last := m.err
	m.mu.Unlock()
	floor := m.min
	if errors.Is(last, blob.ErrLowSpace) {
		// Paused for space: resume only with a tenth more than the floor
		// free, so that a store hovering at the floor does not pause and
		// resume (withdraw, re-announce, a new queue consumer) at every
		// check.
		floor = blob.MinFree{Bytes: floor.Bytes + floor.Bytes/10, Percent: floor.Percent * 1.1}
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeCheckTimeout)
	err := s.blobs.Check(ctx, floor)
	cancel()
	// Only a directory has free space to report; an object store's
	// room is its operator's business.
	if d, ok := blob.DirOf(s.blobs); ok {
		if sp, serr := d.Space(); serr == nil {
			metrics.ResultsFreeBytes.Set(float64(sp.Free))
		}
	}
	// Only check writes m.err, one at a time (m.checking); the gauge
	// moves before the verdict is published.
	m.mu.Lock()
	prev := m.err
	m.mu.Unlock()
	if reason(prev) != reason(err) {
		if prev != nil {
			metrics.WorkersPaused.WithLabelValues(reason(prev)).Dec()
		}
		if err != nil {
			metrics.WorkersPaused.WithLabelValues(reason(err)).Inc()
		}
	}
	m.mu.Lock()
	m.err = err
	m.mu.Unlock()
	switch {
	case err != nil && prev == nil:
		if s.srv.pause() {
			s.log.Error("results store cannot take results: worker paused, it takes no job until the store is usable again",
				"err", blob.Detail(err), "results", s.blobs.String())
			s.withdraw()
		}
	// Paused with no store error: a generation that failed to start after
	// a drain (pause.go); resuming tries again.
	case err == nil && (prev != nil || s.srv.isPaused()):
		if s.stopping.Load() {
			return
		}
		resumed, rerr := s.srv.resume()
		if rerr != nil {
			s.log.Error("results store usable again, but the worker could not resume; trying again", "err", rerr)
			if prev != nil {
				metrics.WorkersPaused.WithLabelValues(reason(prev)).Inc() // still paused
				m.mu.Lock()
				m.err = prev // still not ready; the next check resumes
				m.mu.Unlock()
			}
			return
		}
		if resumed {
			s.log.Info("results store usable again: worker resumed")
			m.mu.Lock()
			m.announce = true
			m.mu.Unlock()
		}
	}
	m.mu.Lock()
	announce := m.announce && m.err == nil
	m.mu.Unlock()
	if announce && !s.stopping.Load() {
		m.reannounce()
	}
}

// reannounce puts the resumed worker back in the registry. A conflict
// (another spec took a type name while this worker was out) or Redis away
// is logged and tried again at the next check; the worker runs its jobs
// meanwhile, as after a lapsed heartbeat.
func (m *storeMonitor) reannounce() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := m.s.announcer.Start(ctx)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		if !m.announceWarned {
			m.s.log.Warn("resumed worker not announced yet; trying again at each check", "err", err)
		}
		m.announceWarned = true
		return
	}
	m.announce, m.reannounced, m.announceWarned = false, true, false
}

// reason is err's label for claimcheck_worker_paused ("" for nil).
func reason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, blob.ErrLowSpace):
		return "low_space"
	default:
		return "not_writable"
	}
}

// Ready reports whether the worker can work: nil, or why it takes no job
// now (its results store is not writable, or low on space). The text names
// no server path, so a program embedding a worker may put it in its own
// readiness answer; Main's /readyz names the failing check instead.
func (s *Server) Ready() error {
	if err := s.storeErr(); err != nil {
		return fmt.Errorf("worker paused: %w", err)
	}
	return nil
}

// ReadyChecks are the worker's readiness checks beyond Redis, for a
// process's /readyz (router.Ops): one per way the results store can stop
// it (not writable, low on space), so the 503 says which. They fail while
// the worker is paused for its store.
func (s *Server) ReadyChecks() []router.Check {
	failing := func(kind error) func(context.Context) error {
		return func(context.Context) error {
			if err := s.storeErr(); errors.Is(err, kind) {
				return err
			}
			return nil
		}
	}
	return []router.Check{
		{Name: "results-store-writable", Check: failing(blob.ErrNotWritable)},
		{Name: "results-store-space", Check: failing(blob.ErrLowSpace)},
	}
}
