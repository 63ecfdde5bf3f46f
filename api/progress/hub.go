package progress

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/metrics"
	"github.com/claimcheck/claimcheck/internal/pubsub"
)

// Hub fans job events out to this process's watchers (event streams,
// waiting long-polls), and keeps the record cache right.
//
// # Subscriptions per job
//
// Every job's events are announced on the job's own shard channel
// (jobs.JobChannel, "cc:job:{<id>}:ch", in the job's slot; package jobs
// explains the message). The hub subscribes to a job's channel when the
// first watcher of the job arrives and unsubscribes when the last has gone
// and linger has passed (an EventSource reconnecting within its retry
// delay finds the subscription still there): a process receives the events
// of the jobs it serves and of no other, however many jobs the cluster
// runs. Ten thousand watchers of one job still cost one subscription.
// The subscriptions are held by a pubsub.Channels: on a Redis Cluster one
// connection per primary, holding the channels of the slots it serves,
// re-placed when a slot moves; on one server, one connection.
//
//	watch ──▶ subscribe(job) ──▶ confirmed ──▶ events ──▶ watchers
//	 │        (first watcher)        ▲    │
//	 │                               │    └─ lost (connection cut, slot moved)
//	 └─ last watcher gone + linger ──┼──▶ unsubscribe(job)    │
//	                                 └──── resubscribed ◀─────┘ every watcher resyncs
//
// A watcher is registered before its stream reads the job, and its first
// watch waits (briefly, subscribeWait) for the job's subscription to be
// confirmed, so that nothing falls between the read and the first event.
// A wait that gave up is made good when the subscription is confirmed:
// the watcher resyncs then. After a subscription is lost and made again,
// every watcher of the job resyncs (stream.catchUp: it re-reads its token
// epoch from the record, then the events after its last from the job's
// event log) — messages published meanwhile are lost — as when the hub
// drops a slow watcher's events.
//
// The linger (5 s) is there because watchers churn: a long-poll watches for
// one request and its client asks again at once, an EventSource reconnects
// after its retry delay (2 s). Without it each such return would cost a
// SUNSUBSCRIBE, an SSUBSCRIBE and a wait for its confirmation.
//
// On a server without shard channels (the dev mode's embedded Redis) the
// scripts PUBLISH and the hub SUBSCRIBEs on the same per-job channel names
// (pubsub.Channels falls back by itself): per job still, broadcast there.
//
// # The record cache
//
// The status route answers from a cache (recordCache) kept right by the
// job's messages: it may keep a job's record only while the hub is
// subscribed to that job. A read that misses the cache therefore asks the
// hub to hold the job's subscription for the cache's TTL (hold), and keeps
// what it read only if the subscription was already confirmed before it
// read; a client polling a job thus subscribes this process to it for as
// long as it polls. When a job's subscription is lost, made again or
// dropped, its cached record is dropped too.
type Hub struct {
	rdb redis.UniversalClient
	log *slog.Logger
	ch  *pubsub.Channels // set by Start
	now func() time.Time
	// linger is how long a job's subscription outlives its last watcher;
	// subscribeWait how long a first watcher waits for the confirmation.
	linger, subscribeWait time.Duration

	mu       sync.Mutex
	watchers map[string]map[*Watcher]struct{}
	subs     map[string]*jobSub

	// records is told of every change, and of every resubscription; set
	// by the Service once the hub may already be running.
	records atomic.Pointer[recordCache]

	resubscribed atomic.Int64 // job subscriptions lost and made again

	stopped chan struct{} // closed by Close: taken-over streams end
	once    sync.Once
}

// jobSub is the hub's subscription to one job's channel.
type jobSub struct {
	refs  int       // watchers
	hold  time.Time // a cached record relies on the subscription until then
	live  bool      // confirmed, and not lost since
	again bool      // confirmed before: a confirmation now is a resubscription
	up    chan struct{}
	timer *time.Timer // the linger, once refs is zero
}

// Default linger and first-watcher wait.
const (
	defaultLinger        = 5 * time.Second
	defaultSubscribeWait = 2 * time.Second
)

// NewHub returns a hub on rdb; call Start.
func NewHub(rdb redis.UniversalClient, log *slog.Logger) *Hub {
	return &Hub{rdb: rdb, log: log, now: time.Now, linger: defaultLinger, subscribeWait: defaultSubscribeWait,
		watchers: map[string]map[*Watcher]struct{}{}, subs: map[string]*jobSub{}, stopped: make(chan struct{})}
}

// Start makes the hub subscribe and deliver, until Close or until rdb is
// closed. ready, if not nil, is closed once it does (subscriptions are
// made per job, each watch waits for its own).
func (h *Hub) Start(ready chan<- struct{}) {
	ch := pubsub.NewChannels(h.rdb, pubsub.Handler{Subscribed: h.subscribed, Lost: h.lost, Message: h.message}, h.log)
	h.mu.Lock()
	h.ch = ch
	h.mu.Unlock()
	if ready != nil {
		close(ready)
	}
}

// Done is closed when the hub closes; streams served outside net/http
// (which Server.Shutdown does not see) end on it.
func (h *Hub) Done() <-chan struct{} { return h.stopped }

// Close stops the subscriptions and ends every stream.
func (h *Hub) Close() {
	h.once.Do(func() { close(h.stopped) })
	h.mu.Lock()
	ch := h.ch
	h.mu.Unlock()
	if ch != nil {
		ch.Close()
	}
}

// Received counts the job messages this hub has received: what its
// subscriptions cost.
func (h *Hub) Received() int64 {
	h.mu.Lock()
	ch := h.ch
	h.mu.Unlock()
	if ch == nil {
		return 0
	}
	return ch.Received()
}

// Resubscriptions counts the job subscriptions lost (a connection cut, a
// slot moved) and made again, each followed by a resync of the job's
// watchers.
func (h *Hub) Resubscriptions() int64 { return h.resubscribed.Load() }

// Subscriptions counts the jobs the hub is subscribed to (or subscribing).
func (h *Hub) Subscriptions() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

func jobOfChannel(channel string) (string, bool) {
	id, ok := strings.CutPrefix(channel, jobs.KeyPrefixJob+"{")
	if !ok {
		return "", false
	}
	return strings.CutSuffix(id, "}"+jobs.KeySuffixChannel)
}

// subLocked is job id's subscription, made if need be.
func (h *Hub) subLocked(id string) *jobSub {
	s := h.subs[id]
	if s == nil {
		s = &jobSub{up: make(chan struct{})}
		h.subs[id] = s
		if h.ch != nil {
			h.ch.Subscribe(jobs.JobChannel(id))
		}
	}
	return s
}

// hold keeps job id's subscription until at least until, for a record
// cached meanwhile, and reports whether it is confirmed now (only then
// may a record read next be cached).
func (h *Hub) hold(id string, until time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ch == nil {
		return false
	}
	s := h.subLocked(id)
	if until.After(s.hold) {
		s.hold = until
	}
	if s.refs == 0 && s.timer == nil {
		h.lingerLocked(id, s)
	}
	return s.live
}

// lingerLocked drops s once it has had no watcher for linger and no cached
// record relies on it.
func (h *Hub) lingerLocked(id string, s *jobSub) {
	wait := max(h.linger, s.hold.Sub(h.now()))
	s.timer = time.AfterFunc(wait, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.subs[id] != s || s.refs > 0 {
			return
		}
		if h.now().Before(s.hold) {
			h.lingerLocked(id, s)
			return
		}
		delete(h.subs, id)
		if rc := h.records.Load(); rc != nil {
			rc.invalidate(id) // no message will tell of its changes now
		}
		if h.ch != nil {
			h.ch.Unsubscribe(jobs.JobChannel(id))
		}
	})
}

// subscribed: a job's subscription is confirmed.
func (h *Hub) subscribed(channel string) {
	id, ok := jobOfChannel(channel)
	if !ok {
		return
	}
	h.mu.Lock()
	s := h.subs[id]
	if s == nil || s.live {
		h.mu.Unlock()
		return
	}
	s.live = true
	again := s.again
	s.again = true
	close(s.up)
	// Watchers still waiting read the job after this; the others may have
	// missed messages: they catch up from the event log (after re-reading
	// their token epoch: a revocation may be among what they missed).
	for w := range h.watchers[id] {
		if !w.waiting {
			w.resync()
		}
	}
	h.mu.Unlock()
	if again {
		h.resubscribed.Add(1)
		if rc := h.records.Load(); rc != nil {
			rc.invalidate(id)
		}
	}
}

// lost: a job's subscription was cut; messages may be lost until it is
// confirmed again.
func (h *Hub) lost(channel string) {
	id, ok := jobOfChannel(channel)
	if !ok {
		return
	}
	h.mu.Lock()
	s := h.subs[id]
	if s == nil || !s.live {
		h.mu.Unlock()
		return
	}
	s.live = false
	s.up = make(chan struct{})
	h.mu.Unlock()
	if rc := h.records.Load(); rc != nil {
		rc.invalidate(id)
	}
}

func (h *Hub) message(_, payload string) {
	if id, ev, ok := jobs.ParseEventMessage(payload); ok {
		h.deliver(id, ev)
	}
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

// Watch starts collecting job jobID's events; Close the watcher when done.
// The first watcher of a job waits (briefly) for the job's subscription.
func (h *Hub) Watch(jobID string) *Watcher { return h.watch(context.Background(), jobID, false) }

// watch is Watch that, with logs, is also woken when the job's log grows;
// it waits for the subscription no longer than ctx.
func (h *Hub) watch(ctx context.Context, jobID string, logs bool) *Watcher {
	w := &Watcher{hub: h, job: jobID, logs: logs, ready: make(chan struct{}, 1)}
	h.mu.Lock()
	ws := h.watchers[jobID]
	if ws == nil {
		ws = map[*Watcher]struct{}{}
		h.watchers[jobID] = ws
	}
	ws[w] = struct{}{}
	s := h.subLocked(jobID)
	s.refs++
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	up := s.up
	w.waiting = !s.live && h.ch != nil
	h.mu.Unlock()
	metrics.StreamsOpen.Inc()
	if w.waiting {
		t := time.NewTimer(h.subscribeWait)
		select {
		case <-up:
		case <-t.C:
		case <-ctx.Done():
		case <-h.stopped:
		}
		t.Stop()
		h.mu.Lock()
		w.waiting = false
		h.mu.Unlock()
	}
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

	waiting bool // in watch, for the job's subscription (guarded by hub.mu)
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
			if s := h.subs[w.job]; s != nil {
				if s.refs--; s.refs == 0 {
					h.lingerLocked(w.job, s)
				}
			}
		}
		delete(ws, w)
		if len(ws) == 0 {
			delete(h.watchers, w.job)
		}
	}
	h.mu.Unlock()
}
