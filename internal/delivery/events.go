package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/webhook"
)

// Queue is the Asynq queue of webhook deliveries. Its '.' can be in no
// pool's queue name (jobs.ValidPool), so no job server ever pulls it.
const Queue = "cc.webhooks"

// TaskType is the Asynq type of a delivery task.
const TaskType = "cc:webhook"

// Protocol constants; the package doc explains each.
const (
	Interval    = 500 * time.Millisecond
	MaxLogLines = 100
	MaxLogBytes = 32 << 10
	// Retention keeps a delivered started or completed task, and with it
	// its TaskID, so that the same event enqueued again is refused.
	Retention = 24 * time.Hour
)

// task is a delivery task's payload.
type task struct {
	Job   string `json:"job"`
	Event string `json:"event"`
	// Seq is the event's sequence number: the kind's (progress, log), the
	// job attempt's number (started); 0 for completed.
	Seq int64 `json:"seq,omitempty"`
	// At is when the event happened: the payload's timestamp.
	At time.Time `json:"at"`
	// Lines are a log event's lines, and Dropped how many more were left out.
	Lines   []LogLine `json:"lines,omitempty"`
	Dropped int       `json:"dropped,omitempty"`
}

// LogLine is one line of a log event, as in the job's log.
type LogLine struct {
	N    int64     `json:"n"`
	Time time.Time `json:"time"`
	Text string    `json:"text"`
}

// id is the event's webhook-id.
func (t *task) id() string {
	switch t.Event {
	case webhook.EventCompleted:
		return "msg_" + t.Job + "_completed"
	default:
		return "msg_" + t.Job + "_" + t.Event + "_" + strconv.FormatInt(t.Seq, 10)
	}
}

// taskID is the event's Asynq TaskID.
func (t *task) taskID() string { return "wh:" + t.id()[len("msg_"):] }

// Events enqueues a job's webhook events. Safe for concurrent use.
type Events struct {
	store  *jobs.Store
	client *asynq.Client
	log    *slog.Logger
	// Interval is the throttle of progress and log events (Interval).
	Interval time.Duration
	// Now is the clock of event timestamps (time.Now).
	Now func() time.Time
}

// NewEvents returns an enqueuer on rdb.
func NewEvents(rdb redis.UniversalClient, log *slog.Logger) *Events {
	if log == nil {
		log = slog.Default()
	}
	return &Events{store: jobs.NewStore(rdb, nil), client: asynq.NewClientFromRedisClient(rdb), log: log,
		Interval: Interval, Now: time.Now}
}

func (e *Events) enqueue(ctx context.Context, t *task, retention time.Duration) error {
	raw, err := json.Marshal(t)
	if err != nil {
		return err
	}
	opts := []asynq.Option{asynq.Queue(Queue), asynq.TaskID(t.taskID()), asynq.MaxRetry(MaxAttempts - 1),
		asynq.Timeout(attemptTimeout)}
	if retention > 0 {
		opts = append(opts, asynq.Retention(retention))
	}
	_, err = e.client.EnqueueContext(ctx, asynq.NewTask(TaskType, raw), opts...)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil // enqueued already: the same event
	}
	if err != nil {
		return fmt.Errorf("enqueue webhook %s of job %s: %w", t.Event, t.Job, err)
	}
	return nil
}

// Started enqueues the started event of attempt n of job, if spec wants
// it. Best effort: a failure is logged.
func (e *Events) Started(ctx context.Context, job string, n int, spec *webhook.Spec) {
	if !spec.Wants(webhook.EventStarted) {
		return
	}
	if err := e.enqueue(ctx, &task{Job: job, Event: webhook.EventStarted, Seq: int64(n), At: e.Now()}, Retention); err != nil {
		e.log.Warn("webhook event not enqueued", "job", job, "event", webhook.EventStarted, "err", err)
	}
}

// Completed enqueues job's completed event if spec wants it; a nil spec
// is read from the record (the reconciler's case). A job that has not
// ended enqueues nothing (checked in the script that marks the event, so
// the worker's hook costs two round trips: that script and the enqueue).
// Its error is for the caller to hold the job's own task back with: the
// event must not be lost.
func (e *Events) Completed(ctx context.Context, job string, spec *webhook.Spec) error {
	if spec == nil {
		j, err := e.store.Get(ctx, job)
		if errors.Is(err, jobs.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		spec = j.Webhook
	}
	if !spec.Wants(webhook.EventCompleted) {
		return nil
	}
	if _, err := e.store.NextWebhookEvent(ctx, job, webhook.EventCompleted); errors.Is(err, jobs.ErrGone) ||
		errors.Is(err, jobs.ErrWebhookGone) || errors.Is(err, jobs.ErrNotFinished) {
		return nil
	} else if err != nil {
		return err
	}
	return e.enqueue(ctx, &task{Job: job, Event: webhook.EventCompleted, At: e.Now()}, Retention)
}

// sequenced enqueues a progress or log event under a new sequence number.
func (e *Events) sequenced(ctx context.Context, t *task) {
	seq, err := e.store.NextWebhookEvent(ctx, t.Job, t.Event)
	if errors.Is(err, jobs.ErrGone) || errors.Is(err, jobs.ErrWebhookGone) {
		return
	}
	if err == nil {
		t.Seq = seq
		err = e.enqueue(ctx, t, 0)
	}
	if err != nil {
		e.log.Warn("webhook event not enqueued", "job", t.Job, "event", t.Event, "err", err)
	}
}

// Attempt is the webhook side of one job attempt: its progress and log
// events, throttled. Close it when the attempt ends, before Completed.
// A nil *Attempt (the job has no webhook) does nothing.
type Attempt struct {
	e        *Events
	job      string
	progress *throttle
	logs     *throttle

	mu      sync.Mutex
	lines   []LogLine
	bytes   int
	dropped int
}

// Attempt starts the webhook side of an attempt of job; nil when spec
// wants neither progress nor log events.
func (e *Events) Attempt(job string, spec *webhook.Spec) *Attempt {
	wantP, wantL := spec.Wants(webhook.EventProgress), spec.Wants(webhook.EventLog)
	if !wantP && !wantL {
		return nil
	}
	a := &Attempt{e: e, job: job}
	if wantP {
		a.progress = newThrottle(e.Interval, e.Now, func() {
			e.sequenced(context.Background(), &task{Job: job, Event: webhook.EventProgress, At: e.Now()})
		})
	}
	if wantL {
		a.logs = newThrottle(e.Interval, e.Now, a.sendLines)
	}
	return a
}

// Progress notes that the job's progress was recorded.
func (a *Attempt) Progress() {
	if a == nil || a.progress == nil {
		return
	}
	a.progress.event()
}

// Log notes that lines were appended to the job's log (dropped more were
// lost before they were stored).
func (a *Attempt) Log(lines []jobs.LogLine, dropped int) {
	if a == nil || a.logs == nil {
		return
	}
	a.mu.Lock()
	a.dropped += dropped
	for _, l := range lines {
		a.lines = append(a.lines, LogLine{N: l.N, Time: l.Time, Text: l.Text})
		a.bytes += len(l.Text)
	}
	// Keep the newest lines within the bounds; count the rest.
	cut := 0
	for len(a.lines)-cut > MaxLogLines || (a.bytes > MaxLogBytes && len(a.lines)-cut > 1) {
		a.bytes -= len(a.lines[cut].Text)
		cut++
	}
	if cut > 0 {
		a.dropped += cut
		a.lines = append(a.lines[:0:0], a.lines[cut:]...)
	}
	a.mu.Unlock()
	a.logs.event()
}

func (a *Attempt) sendLines() {
	a.mu.Lock()
	lines, dropped := a.lines, a.dropped
	a.lines, a.bytes, a.dropped = nil, 0, 0
	a.mu.Unlock()
	if len(lines) == 0 && dropped == 0 {
		return
	}
	a.e.sequenced(context.Background(), &task{Job: a.job, Event: webhook.EventLog, At: a.e.Now(), Lines: lines, Dropped: dropped})
}

// Close sends what the throttles still hold, at once, and stops them.
func (a *Attempt) Close() {
	if a == nil {
		return
	}
	if a.progress != nil {
		a.progress.close()
	}
	if a.logs != nil {
		a.logs.close()
	}
}

// throttle calls send at most once per interval: at once when the last
// call is an interval old (leading edge), else once at the interval's end
// for everything that came meanwhile (trailing edge). Sends never overlap.
type throttle struct {
	interval time.Duration
	now      func() time.Time
	send     func()

	sending sync.Mutex // sends in order, one at a time
	mu      sync.Mutex
	last    time.Time
	timer   *time.Timer
	dirty   bool
	closed  bool
}

func newThrottle(interval time.Duration, now func() time.Time, send func()) *throttle {
	return &throttle{interval: interval, now: now, send: send}
}

func (t *throttle) event() {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	now := t.now()
	if t.timer == nil && now.Sub(t.last) >= t.interval {
		t.last = now
		t.mu.Unlock()
		t.fire()
		return
	}
	t.dirty = true
	if t.timer == nil {
		t.timer = time.AfterFunc(t.last.Add(t.interval).Sub(now), t.trailing)
	}
	t.mu.Unlock()
}

func (t *throttle) trailing() {
	t.mu.Lock()
	t.timer = nil
	if !t.dirty || t.closed {
		t.mu.Unlock()
		return
	}
	t.dirty = false
	t.last = t.now()
	t.mu.Unlock()
	t.fire()
}

func (t *throttle) fire() {
	t.sending.Lock()
	defer t.sending.Unlock()
	t.send()
}

func (t *throttle) close() {
	t.mu.Lock()
	t.closed = true
	if t.timer != nil {
		t.timer.Stop()
		t.timer = nil
	}
	dirty := t.dirty
	t.dirty = false
	t.mu.Unlock()
	if dirty {
		t.fire()
	}
	// A trailing send under way finishes before Close returns.
	t.sending.Lock()
	t.sending.Unlock() //nolint:staticcheck // a barrier, not a critical section
}
