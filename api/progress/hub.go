package progress

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/metrics"
	"github.com/claimcheck/claimcheck/internal/pubsub"
)

// Hub is this process's one subscription to job events, fanned out in
// process to every watcher of the job an event concerns: ten thousand
// watchers cost one Redis connection, not ten thousand.
type Hub struct {
	rdb redis.UniversalClient
	log *slog.Logger

	mu       sync.Mutex
	watchers map[string]map[*Watcher]struct{}

	// records is told of every change, and of every resubscription; set
	// by the Service once the hub may already be running.
	records atomic.Pointer[recordCache]

	cancel  context.CancelFunc
	done    chan struct{}
	stopped chan struct{} // closed by Close: taken-over streams end
	once    sync.Once
}

// NewHub returns a hub on rdb; call Start.
func NewHub(rdb redis.UniversalClient, log *slog.Logger) *Hub {
	return &Hub{rdb: rdb, log: log, watchers: map[string]map[*Watcher]struct{}{}, stopped: make(chan struct{})}
}

// Start subscribes and delivers events until Close or until rdb is closed.
// ready, if not nil, is closed once the first subscription is confirmed.
func (h *Hub) Start(ready chan<- struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan struct{})
	go func() {
		defer close(h.done)
		h.run(ctx, ready)
	}()
}

// Done is closed when the hub closes; streams served outside net/http
// (which Server.Shutdown does not see) end on it.
func (h *Hub) Done() <-chan struct{} { return h.stopped }

// Close stops the subscription and ends every stream.
func (h *Hub) Close() {
	h.once.Do(func() { close(h.stopped) })
	if h.cancel != nil {
		h.cancel()
		<-h.done
	}
}

func (h *Hub) run(ctx context.Context, ready chan<- struct{}) {
	pubsub.Listen(ctx, h.rdb, jobs.ChannelJobEvents, func() {
		// A (re)subscription may have missed events, a revocation among
		// them: every watcher catches up from the job's event log after
		// re-reading its token epoch from the record (stream.catchUp), and
		// no cached record can be trusted.
		if rc := h.records.Load(); rc != nil {
			rc.clear()
		}
		h.each(func(w *Watcher) { w.resync() })
		if ready != nil {
			close(ready)
			ready = nil
		}
	}, func(payload string) {
		if id, ev, ok := jobs.ParseEventMessage(payload); ok {
			h.deliver(id, ev)
		}
	})
}

func (h *Hub) deliver(jobID string, ev jobs.Event) {
	if ev.Type == jobs.EventLog {
		// New log lines change nothing in the record: no cache entry is
		// dropped, and only event streams are woken (they read the lines).
		h.mu.Lock()
		defer h.mu.Unlock()
		for w := range h.watchers[jobID] {
			if w.logs {
				w.logLines()
			}
		}
		return
	}
	if rc := h.records.Load(); rc != nil {
		rc.invalidate(jobID)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.watchers[jobID] {
		w.push(ev)
	}
}

func (h *Hub) each(fn func(*Watcher)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ws := range h.watchers {
		for w := range ws {
			fn(w)
		}
	}
}

// Watch starts collecting job jobID's events; Close the watcher when done.
func (h *Hub) Watch(jobID string) *Watcher { return h.watch(jobID, false) }

// watch is Watch that, with logs, is also woken when the job's log grows.
func (h *Hub) watch(jobID string, logs bool) *Watcher {
	w := &Watcher{hub: h, job: jobID, logs: logs, ready: make(chan struct{}, 1)}
	h.mu.Lock()
	ws := h.watchers[jobID]
	if ws == nil {
		ws = map[*Watcher]struct{}{}
		h.watchers[jobID] = ws
	}
	ws[w] = struct{}{}
	h.mu.Unlock()
	metrics.StreamsOpen.Inc()
	return w
}

// Watchers counts the watchers, for tests and metrics.
func (h *Hub) Watchers() int {
	n := 0
	h.mu.Lock()
	for _, ws := range h.watchers {
		n += len(ws)
	}
	h.mu.Unlock()
	return n
}

// maxPending bounds a watcher's queue. Progress events coalesce, so only a
// client stalled through dozens of state changes reaches it; it then
// catches up from the event log instead, re-checking its token's epoch
// first, since a dropped message may have been a revocation.
const maxPending = 32

// Watcher buffers one watcher's events. Pushing never blocks: a slow client
// gets the latest progress, not every intermediate one, and never delays
// the hub or other watchers.
type Watcher struct {
	hub *Hub
	job string

	mu      sync.Mutex
	pending []jobs.Event
	behind  bool // events were dropped: re-read the log
	ready   chan struct{}

	logs    bool // woken by log lines (set at creation)
	newLogs bool // the job's log grew since takeLogs
}

// logLines notes that the job's log grew: one flag however many batches,
// so a job logging fast never fills the queue.
func (w *Watcher) logLines() {
	w.mu.Lock()
	w.newLogs = true
	w.mu.Unlock()
	w.signal()
}

// takeLogs reports whether the job's log grew since the last call.
func (w *Watcher) takeLogs() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := w.newLogs
	w.newLogs = false
	return n
}

func (w *Watcher) push(ev jobs.Event) {
	w.mu.Lock()
	switch n := len(w.pending); {
	case n > 0 && ev.Type == jobs.EventProgress && w.pending[n-1].Type == jobs.EventProgress:
		w.pending[n-1] = ev // coalesce: only the latest progress matters
	case n >= maxPending:
		w.behind = true
	default:
		w.pending = append(w.pending, ev)
	}
	w.mu.Unlock()
	w.signal()
}

func (w *Watcher) resync() {
	w.mu.Lock()
	w.behind = true
	w.mu.Unlock()
	w.signal()
}

func (w *Watcher) signal() {
	select {
	case w.ready <- struct{}{}:
	default:
	}
}

// Ready is signalled when Take has something.
func (w *Watcher) Ready() <-chan struct{} { return w.ready }

// Take returns the buffered events, and behind when some were lost and the
// caller must re-read the job's event log after its last event.
func (w *Watcher) Take() (evs []jobs.Event, behind bool) {
	w.mu.Lock()
	evs, behind = w.pending, w.behind
	w.pending, w.behind = nil, false
	w.mu.Unlock()
	return evs, behind
}

// Close stops the watcher.
func (w *Watcher) Close() {
	h := w.hub
	h.mu.Lock()
	if ws := h.watchers[w.job]; ws != nil {
		if _, ok := ws[w]; ok {
			metrics.StreamsOpen.Dec()
		}
		delete(ws, w)
		if len(ws) == 0 {
			delete(h.watchers, w.job)
		}
	}
	h.mu.Unlock()
}
