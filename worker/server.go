package worker

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/blob"
	"github.com/claimcheck/claimcheck/internal/delivery"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/metrics"
	"github.com/claimcheck/claimcheck/internal/redisconn"
	"github.com/claimcheck/claimcheck/internal/registry"
	"github.com/claimcheck/claimcheck/tokens"
)

// Config tunes a worker. Zero values take the defaults in parentheses.
type Config struct {
	// ResultsURL is where results are written, read by the progress
	// service that serves them: file:///dir (a directory both see) or
	// s3://bucket?endpoint=…&region=… (an S3-compatible bucket; see the
	// README's results storage). ResultsURL or ResultsDir is required.
	ResultsURL string
	// ResultsDir is a directory for results: ResultsURL's synonym for a
	// file URL, used when ResultsURL is empty.
	ResultsDir string
	// ResultsMinFree is the free space, in bytes, the results store must
	// have for the worker to take jobs (DefaultResultsMinFree); negative:
	// no byte floor. Below it, the worker pauses (health.go).
	ResultsMinFree int64
	// ResultsMinFreePercent, when above 0, is a floor as a percentage of
	// the results file system's size, checked as well.
	ResultsMinFreePercent float64
	// ResultsCheckInterval is how often the results store is checked
	// (DefaultResultsCheckInterval); a failed result write checks at once.
	ResultsCheckInterval time.Duration
	// Concurrency is how many jobs run at once (number of CPUs).
	Concurrency int
	// Pools are the pools this worker takes jobs from; default: the pools
	// of its types (Type.Pool).
	Pools []string
	// TaskCheckInterval is how often an idle worker polls Redis for new
	// tasks (10ms). Asynq's default of 1s costs ~0.5 s of pickup latency on
	// average; at 10ms an idle worker costs about 100 polls per second per
	// queue, measured in docs/BENCHMARKS.md.
	TaskCheckInterval time.Duration
	// DelayedTaskCheckInterval is how often retries whose backoff has passed
	// are moved back to their queue (1s).
	DelayedTaskCheckInterval time.Duration
	// RetryDelay computes the backoff before retry n (exponential from 1s,
	// capped at 5 min, with jitter).
	RetryDelay func(n int, err error) time.Duration
	// Retention is how long a finished job's record and result are kept (24h).
	Retention time.Duration
	// MaxResultBytes caps one result's size (1 GiB).
	MaxResultBytes int64
	// ReapInterval is how often the worker deletes results whose job
	// record has expired (10 min); negative turns reaping off.
	ReapInterval time.Duration
	// StaleTemp is how old a temporary result file must be before reaping
	// takes it for a crashed writer's leftover (24h).
	StaleTemp time.Duration
	// ShutdownTimeout is how long Shutdown waits for running jobs before
	// handing them back to the queue (10s).
	ShutdownTimeout time.Duration
	// MaxRunningJobs caps how many jobs of one owner run at once across
	// every worker sharing this Redis (4); a negative value means no cap.
	// It is enforced where jobs start, so every worker of a fleet must be
	// given the same value.
	MaxRunningJobs int
	// HoldDelay is how long a job held back by MaxRunningJobs waits before
	// it is checked again on its own, given how long it has been held
	// (DefaultHoldDelay). A held job normally starts sooner: when one of
	// its owner's jobs ends, that worker moves the owner's oldest held jobs
	// forward at once; this delay is only the fallback (a worker that died
	// without releasing its slot, a hand-off that raced).
	HoldDelay func(heldFor time.Duration) time.Duration
	// HeartbeatInterval is how often the worker tells Redis that the jobs
	// it runs are alive (2s); see reconciler.go.
	HeartbeatInterval time.Duration
	// LostAfter is how long a running job's worker may stay silent before
	// the job is taken for lost (10s): several heartbeats, so that a slow
	// Redis round trip is not a lost worker.
	LostAfter time.Duration
	// ReconcileInterval is how often the worker looks for jobs whose worker
	// was lost (5s); negative turns it off. A lost job is reconciled at
	// most LostAfter + 2 × ReconcileInterval after its last heartbeat,
	// whatever the workers' clocks say: a heartbeat is judged by whether
	// it moves, not by the clock of the worker that wrote it
	// (reconciler.go).
	ReconcileInterval time.Duration
	// ReceiptKeys, when set, are the worker fleet's receipt signing keys:
	// every job this worker runs to success gets a signed result receipt
	// (receipt.go), and Start publishes the keys' public halves. Nil: no
	// receipts. A worker holds no other process's keys.
	ReceiptKeys *tokens.KeySet
	// Logger receives the worker's logs (slog.Default()).
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	c.setStoreDefaults()
	if c.TaskCheckInterval <= 0 {
		c.TaskCheckInterval = 10 * time.Millisecond
	}
	if c.DelayedTaskCheckInterval <= 0 {
		c.DelayedTaskCheckInterval = time.Second
	}
	if c.RetryDelay == nil {
		c.RetryDelay = DefaultRetryDelay
	}
	if c.Retention <= 0 {
		c.Retention = 24 * time.Hour
	}
	if c.MaxResultBytes <= 0 {
		c.MaxResultBytes = 1 << 30
	}
	if c.ReapInterval == 0 {
		c.ReapInterval = 10 * time.Minute
	}
	if c.StaleTemp <= 0 {
		c.StaleTemp = 24 * time.Hour
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.MaxRunningJobs == 0 {
		c.MaxRunningJobs = DefaultMaxRunningJobs
	}
	if c.HoldDelay == nil {
		c.HoldDelay = DefaultHoldDelay
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 2 * time.Second
	}
	if c.LostAfter <= 0 {
		c.LostAfter = 10 * time.Second
	}
	if c.ReconcileInterval == 0 {
		c.ReconcileInterval = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// DefaultMaxRunningJobs is Config.MaxRunningJobs unless set: sized for a
// small fleet (two or three workers of a few cores each), so that one user
// holds at most about half of it and others' jobs still find slots. A
// fleet with more slots than users can raise it.
// It must equal config.DefaultMaxRunningJobs, the flag's default
// (TestDefaultsMatchConfig).
const DefaultMaxRunningJobs = 4

// DefaultHoldDelay is the fallback re-check of a held job: half as long as
// it has been held, from 1s to 30s, with ±25% jitter. A job held for long
// costs a check every half minute; one whose owner's jobs are short is
// usually started sooner by the hand-off from a job that ends.
func DefaultHoldDelay(heldFor time.Duration) time.Duration {
	d := min(max(heldFor/2, time.Second), 30*time.Second)
	return d*3/4 + rand.N(d/2+1)
}

// leaseGrace is how long past an attempt's deadline its slot stays taken
// if the worker never releases it: long enough for the bookkeeping after a
// timeout, short enough that a dead worker's slot comes back soon after.
const leaseGrace = time.Minute

// pendingDelay is how long a task whose job is still pending waits before
// it is looked at again: the api's confirm follows its enqueue within a
// round trip, so only a failed submission waits more than once.
const pendingDelay = 250 * time.Millisecond

// pendingWaits are the pauses between looks at a pending job before its
// task is handed back.
var pendingWaits = []time.Duration{2 * time.Millisecond, 10 * time.Millisecond, 50 * time.Millisecond}

// heldError is what process returns to hand a held job back to Asynq: not
// a failure (no retry spent), re-queued after delay.
type heldError struct{ delay time.Duration }

func (e *heldError) Error() string {
	return "held back: the owner has as many jobs running as allowed"
}

// DefaultRetryDelay backs off exponentially from 1s to 5 min with ±25% jitter.
func DefaultRetryDelay(n int, _ error) time.Duration {
	d := time.Second << min(n, 9)
	d = min(d, 5*time.Minute)
	return d*3/4 + rand.N(d/2+1)
}

// Server runs registered job types on Asynq.
type Server struct {
	cfg      Config
	stopReap chan struct{}
	srv      *queueServer
	store    *jobs.Store
	blobs    blob.Store
	types    map[string]Type
	log      *slog.Logger
	// insp moves held jobs to the front of their queues when a slot frees.
	insp *asynq.Inspector
	// events enqueues the jobs' webhook events (webhooks.go).
	events *delivery.Events
	// announcer keeps the worker's types in the live registry (announce.go).
	announcer *registry.Announcer
	// receipts signs result receipts; nil without Config.ReceiptKeys
	// (receipt.go). rdb is where their keys are published.
	receipts *tokens.ReceiptMinter
	rdb      redis.UniversalClient
	// pools are the pools whose queues the worker listens to.
	pools []string
	// stopping is set by Shutdown: from then on an attempt whose context is
	// cancelled was handed back to its queue by asynq, not abandoned.
	stopping atomic.Bool
	// handlers counts running handlers; Shutdown waits up to stopGrace
	// (the longest of the types') for them after asynq hands jobs back.
	handlers  sync.WaitGroup
	stopGrace time.Duration
	// running are the attempts this worker runs, for their heartbeats;
	// stopBeat ends the heartbeat and reconcile loops (reconciler.go).
	running  running
	stopBeat chan struct{}
	// attempts are the running handlers' cancels: Shutdown cancels them at
	// the start of its grace period (shutdown.go).
	attempts attempts

	// health checks the results store and pauses the worker while it
	// cannot take results (health.go).
	health *storeMonitor
	// redis says once that Redis is down and once that it is back, for
	// the background loops and Asynq's logger (reaper.go); ownMonitor: it
	// is the worker's own, told by the loops, not the client's.
	redis      *redisconn.Monitor
	ownMonitor bool

	// now is the reconciler's clock (time.Now; tests skew it).
	now func() time.Time
	// passes counts finished reconcile passes (tests).
	passes atomic.Int64
	// seen is what the reconciler last read of each heartbeat entry, and
	// since when by its own clock (reconciler.go); its loop's alone.
	seen map[string]sighting
}

// New builds a worker on rdb that runs types. It does not start
// processing; call Start. Main is the whole process in one call; New is
// for embedding a worker in a program of your own.
func New(cfg Config, rdb redis.UniversalClient, types ...Type) (*Server, error) {
	cfg.setDefaults()
	if len(types) == 0 {
		return nil, errors.New("worker: no job types registered")
	}
	where := cfg.ResultsURL
	if where == "" {
		where = cfg.ResultsDir
	}
	if where == "" {
		return nil, errors.New("worker: Config.ResultsURL (or ResultsDir) is required")
	}
	blobs, err := blob.Open(context.Background(), where)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	s := &Server{cfg: cfg, store: jobs.NewStore(rdb, nil), blobs: blobs, types: map[string]Type{}, log: cfg.Logger,
		insp: asynq.NewInspectorFromRedisClient(rdb), now: time.Now, rdb: rdb,
		events: delivery.NewEvents(rdb, cfg.Logger)}
	if err := s.newReceipts(); err != nil {
		return nil, err
	}
	s.watchRedis(rdb)
	specs := make([]jobs.TypeSpec, 0, len(types))
	for _, t := range types {
		if t.Handle == nil {
			return nil, fmt.Errorf("worker: job type %q has no handler", t.Name)
		}
		if _, dup := s.types[t.Name]; dup {
			return nil, fmt.Errorf("worker: job type %q registered twice", t.Name)
		}
		s.types[t.Name] = t
		s.stopGrace = max(s.stopGrace, t.stopGrace)
		specs = append(specs, t.spec())
	}
	// The API compiles the same specs; a schema that does not compile is
	// the type author's mistake, told here rather than at the first job.
	if _, err := jobs.NewCatalog(specs...); err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	if s.pools, err = pools(cfg.Pools, types); err != nil {
		return nil, err
	}
	if err := s.newAnnouncer(rdb, specs); err != nil {
		return nil, err
	}
	retryDelay := cfg.RetryDelay
	s.srv = newQueueServer(rdb, asynq.Config{
		Concurrency:              cfg.Concurrency,
		Queues:                   queues(s.pools),
		TaskCheckInterval:        cfg.TaskCheckInterval,
		DelayedTaskCheckInterval: cfg.DelayedTaskCheckInterval,
		ShutdownTimeout:          cfg.ShutdownTimeout,
		RetryDelayFunc: func(n int, err error, _ *asynq.Task) time.Duration {
			var held *heldError
			if errors.As(err, &held) {
				return held.delay
			}
			// A cancelled attempt is retried by Asynq only so that the
			// next attempt can find the job canceled and end it: no backoff.
			if errors.Is(err, context.Canceled) {
				return 0
			}
			return retryDelay(n, err)
		},
		// A cancellation, or a job held back by the running-job cap, is
		// not a failure: it must not use up a retry or count in Asynq's
		// failure statistics. (Asynq still archives a task whose retries
		// are used up before asking this; see jobs.DeliveryRetries.)
		IsFailure: func(err error) bool {
			var held *heldError
			return !errors.Is(err, context.Canceled) && !errors.As(err, &held)
		},
		Logger:   asynqLogger{s.log, s.redis.Down},
		LogLevel: asynq.WarnLevel,
	})
	return s, nil
}

// Start begins processing in the background.
func (s *Server) Start() error {
	mux := asynq.NewServeMux()
	for name := range s.types {
		mux.HandleFunc(name, s.withWebhooks(s.process))
	}
	mux.Use(s.onlyServed)
	// Announced before the first job is taken, so the api knows the types
	// a job of this worker could be submitted as.
	if err := s.announce(); err != nil {
		return err
	}
	if err := s.publishReceiptKeys(context.Background()); err != nil {
		s.withdraw()
		return err
	}
	s.watchStore() // may start paused: no task is taken before the store is usable
	if err := s.srv.Start(mux); err != nil {
		s.srv.Shutdown()
		s.withdraw()
		return fmt.Errorf("start worker: %w", err)
	}
	s.stopReap = make(chan struct{})
	if s.cfg.ReapInterval > 0 {
		go s.reapLoop(s.stopReap)
	}
	s.stopBeat = make(chan struct{})
	go s.heartbeatLoop(s.stopBeat)
	if s.cfg.ReconcileInterval > 0 {
		go s.reconcileLoop(s.stopBeat)
	}
	return nil
}

// Shutdown stops taking tasks, cancels the running handlers' contexts with
// ErrShuttingDown, and waits up to ShutdownTimeout for them to return: a job
// whose handler returns is handed back to its queue (queued again, no retry
// spent), and so is one whose handler is still running when the time is up
// (they run again elsewhere, from their last checkpoint).
// With exec types (TypesFromFile) it then waits for the programs of the
// handed-back jobs to stop — SIGTERM, SIGKILL after their kill_grace — so
// that none outlives the worker: at most the longest kill_grace plus 6s.
func (s *Server) Shutdown() {
	s.stopping.Store(true)
	if s.stopReap != nil {
		close(s.stopReap)
		s.stopReap = nil
	}
	// First: the api's counts drop while running jobs finish. Not waited
	// for here: with Redis frozen it takes its whole timeout (5 s), and
	// the handlers must hear of the shutdown at its start, not then.
	withdrawn := make(chan struct{})
	go func() { defer close(withdrawn); s.withdraw() }()
	defer func() { <-withdrawn }()
	// No new task, then every running handler is told at once, so that
	// the grace period is theirs to save their work and return (a job
	// handed back so is queued again at once, see process) rather than
	// spent on work that is thrown away when it runs out.
	s.srv.Stop()
	s.attempts.stop()
	s.srv.Shutdown()
	// asynq cancelled the contexts of the handlers it handed back, but
	// does not wait for them; an exec type's program is still being
	// stopped (SIGTERM, SIGKILL after its grace), and a process that exits
	// after Shutdown must not leave it running.
	if s.stopGrace > 0 {
		done := make(chan struct{})
		go func() { s.handlers.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(s.stopGrace):
			s.log.Warn("handlers still running after shutdown", "waited", s.stopGrace)
		}
	}
	// Last: a handed-back job's heartbeat stops, and a reconciler finds
	// its record running with its task pending, and makes it queued.
	if s.stopBeat != nil {
		close(s.stopBeat)
		s.stopBeat = nil
	}
}

// newRunID names one run of an attempt (jobs.Attempt.Run).
func newRunID() string {
	var b [8]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// errCancelRequested is the cause given to a handler's context when the job
// record says a cancel was requested.
var errCancelRequested = errors.New("job canceled")

// process runs one attempt of one job and keeps the job record in step.
func (s *Server) process(ctx context.Context, at *asynq.Task) error {
	var p jobs.TaskPayload
	if err := json.Unmarshal(at.Payload(), &p); err != nil || p.Job == "" {
		// Nothing can fix a payload that does not decode; and with no job
		// id there is no record to mark failed.
		return fmt.Errorf("task payload: %v: %w", err, asynq.SkipRetry)
	}
	typ := s.types[at.Type()]
	retried, _ := asynq.GetRetryCount(ctx)
	deliveries, _ := asynq.GetMaxRetry(ctx)
	queue, _ := asynq.GetQueueName(ctx)
	log := s.log.With("job", p.Job, "type", at.Type(), "attempt", retried+1)

	owner := p.Owner
	var err error
	if owner == "" { // a task queued before payloads named their owner
		if owner, err = s.store.Owner(ctx, p.Job); errors.Is(err, jobs.ErrGone) {
			log.Warn("job record is gone; dropping its task")
			return nil
		} else if err != nil {
			return err
		}
	}
	lease := typ.Timeout
	if dl, ok := ctx.Deadline(); ok {
		lease = time.Until(dl)
	}
	attempt := jobs.Attempt{
		ID: p.Job, Owner: owner, Queue: queue, Number: retried + 1,
		MaxRunning: max(s.cfg.MaxRunningJobs, 0), Lease: lease + leaseGrace,
		// Asynq re-queues a handed-back task only while it has retries
		// left; one without (queued before jobs.DeliveryRetries, or by
		// other means) runs over the cap rather than be archived unrun.
		MayHold: retried < deliveries,
		Run:     newRunID(),
	}
	started, err := s.store.StartAttempt(ctx, attempt)
	// A task picked up between the api's enqueue and its confirm finds
	// its job pending; the confirm is a round trip away, so look again a
	// few times before handing the task back (a hand-back waits for
	// Asynq's next delayed-task check, seconds).
	for _, wait := range pendingWaits {
		if err != nil || started.State != jobs.StatePending {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		started, err = s.store.StartAttempt(ctx, attempt)
	}
	// A start that gave its slot back (the job ended, was cancelled, or
	// is not confirmed yet) may have freed it for a held job.
	s.moveForward(log, started.Next)
	wh := s.webhookStart(ctx, p.Job, retried+1, started)
	switch {
	case errors.Is(err, jobs.ErrGone):
		log.Warn("job record is gone; dropping its task")
		return nil
	case err != nil:
		return err
	case started.Held:
		log.Debug("job held back: its owner is at the running-job cap", "held_for", started.HeldFor)
		return &heldError{delay: s.cfg.HoldDelay(started.HeldFor)}
	case started.State == jobs.StatePending:
		// Its submission is not confirmed yet (the api confirms right
		// after the enqueue) and may never be: hand it back until it is
		// confirmed, or its record expires and the task is dropped.
		log.Debug("job not confirmed yet; handed back")
		return &heldError{delay: pendingDelay}
	case started.State != jobs.StateRunning:
		log.Info("job not run", "state", started.State)
		return nil
	}
	// The job's own budget decides when it has failed for good; Asynq's
	// has a spare (jobs.DeliveryRetries), or less for an old task.
	maxRetry := min(started.MaxRetry, deliveries)
	// The call that records how the attempt ended then frees its slot and
	// removes its heartbeat entry (the start wrote the first heartbeat);
	// when none runs (the result could not be stored, Redis failed) the
	// deferred release frees the slot, and the entry is left for a
	// reconciler to find. A hand-back at shutdown keeps the slot.
	slot := &jobs.Slot{Run: attempt.Run}
	if s.cfg.MaxRunningJobs > 0 && owner != "" {
		slot.Owner, slot.MaxRunning = owner, s.cfg.MaxRunningJobs
	}
	released, handedBack := slot.Owner == "", false
	s.running.add(p.Job, attempt.Run)
	defer func() {
		s.running.remove(p.Job, attempt.Run)
		if !released && !handedBack {
			s.release(log, owner, p.Job)
		}
	}()
	ended := func(next []jobs.Waiting) {
		released = true
		s.moveForward(log, next)
	}

	facts := newAttemptFacts((&Task{input: p.Input}).Input(), time.Now())
	// A result an earlier attempt stored but could not record (Redis was
	// away; see recordSuccess) is the job's result: record it rather than
	// run the job again.
	if fin, ok, err := s.blobs.FinishedResult(ctx, p.Job); err != nil {
		log.Warn("finished marker not read; running the job", "err", err)
	} else if ok {
		log.Info("recording the result an earlier attempt stored", "made_by_attempt", fin.Attempt)
		bctx, bcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer bcancel()
		res := jobs.Result{ContentType: fin.ContentType, Size: fin.Size, SHA256: fin.SHA256}
		return s.recordSuccess(bctx, log, typ.Name, p.Job, retried+1, res, !fin.Empty, slot, ended, facts)
	}

	hctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	s.attempts.add(p.Job, cancel)
	defer s.attempts.remove(p.Job)
	var w *blob.Writer
	var contentType string
	storeFailed := false // the results store refused the result
	task := &Task{
		id:      p.Job,
		attempt: retried + 1,
		input:   p.Input,
		limits:  jobs.InputLimits(typ.InputLimits),
		progress: func(percent float64, message string) {
			stop, err := s.store.Progress(hctx, p.Job, percent, message)
			if err != nil {
				log.Warn("progress not recorded", "err", err)
			} else {
				wh.Progress()
			}
			if stop {
				cancel(errCancelRequested)
			}
		},
		checkpoint: started.Checkpoint,
		save: func(data []byte) error {
			// Not the handler's context: a checkpoint is most wanted once
			// that is cancelled (ErrShuttingDown).
			sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), checkpointTimeout)
			defer scancel()
			return s.store.SaveRunCheckpoint(sctx, p.Job, retried+1, attempt.Run, data)
		},
		open: func(ct string) (io.Writer, error) {
			var err error
			limit := s.cfg.MaxResultBytes
			if typ.MaxResultBytes > 0 && typ.MaxResultBytes < limit {
				limit = typ.MaxResultBytes
			}
			w, err = s.blobs.Create(hctx, p.Job, limit)
			contentType = ct
			storeFailed = err != nil
			return w, err
		},
	}
	joblog := startJobLog(webhookLogs{s.store, wh}, p.Job, log)
	task.log = joblog.line
	herr := s.run(hctx, typ, task)
	joblog.close() // every line is stored before the outcome is recorded
	if w != nil && w.Exceeded() {
		// Whatever the handler made of the write error, the job failed for
		// this reason, and a retry would only hit it again.
		herr = fmt.Errorf("result larger than the %d-byte limit for %s jobs: %w", w.Limit(), typ.Name, blob.ErrTooLarge)
	}

	// The attempt's own context may be done; the bookkeeping must still happen.
	bctx, bcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer bcancel()
	if herr == nil && hctx.Err() == nil {
		if w != nil {
			if st, current, ok := s.superseded(bctx, p.Job, retried+1); ok {
				// Committing now would put this attempt's bytes under
				// the name of the result the record names (or will
				// name): the job is the current attempt's, or has ended.
				w.Abort()
				log.Warn("attempt superseded before its result was stored: result discarded",
					"state", st, "current_attempt", current)
				// The slot and the heartbeat entry are the current
				// attempt's, or were released by whoever ended the job.
				released, handedBack = true, true
				return nil
			}
		}
		return s.succeed(bctx, log, typ.Name, p.Job, retried+1, retried >= maxRetry, attempt.MayHold, w, contentType, slot, ended, facts)
	}
	if w != nil {
		w.Abort()
	}
	if herr == nil {
		herr = context.Cause(hctx)
	}
	if errors.Is(herr, context.Canceled) || errors.Is(context.Cause(hctx), errCancelRequested) {
		if j, err := s.store.Get(bctx, p.Job); err == nil && j.CancelRequested {
			st, next, err := s.store.CancelReleasing(bctx, p.Job, s.cfg.Retention, slot)
			if err != nil {
				return err
			}
			ended(next)
			if st == jobs.StateCanceled {
				metrics.JobsFinished.WithLabelValues(typ.Name, string(st)).Inc()
			}
			log.Info("job canceled")
			return nil
		}
	}
	if s.stopping.Load() && errors.Is(ctx.Err(), context.Canceled) {
		// Shutdown's grace period ran out and asynq has already put the
		// task back in its queue, where another worker (or this one,
		// restarted) picks it up as the same attempt. Recording a failure
		// here would spend a retry, or end a job with none left, for
		// something the job did not do; and the next run may already have
		// started. So the record is left to that run.
		// The job keeps its slot for that run (a re-run of a job holding
		// a slot is let in); releasing it here could free the slot the
		// next run has already taken.
		handedBack = true
		log.Info("worker shutting down: job handed back to its queue")
		return herr
	}
	if errors.Is(context.Cause(hctx), ErrShuttingDown) {
		// The handler returned within the grace period, its work saved
		// (SaveCheckpoint) or not: hand the job back now. The record says
		// queued again, and the task goes back by Asynq's retry, which
		// spends no retry (heldError is not a failure) and delays by
		// nothing, so any worker picks it up at its next delayed-task
		// check.
		if !attempt.MayHold {
			// A task with no delivery retry left would be archived, not
			// retried: wait for Asynq's own hand-back when the grace period
			// ends (it re-queues whatever still runs), and leave the
			// record to the next run as above.
			<-ctx.Done()
			handedBack = true
			log.Info("worker shutting down: job handed back to its queue")
			return herr
		}
		log.Info("worker shutting down: job handed back to its queue")
		return s.handBack(bctx, log, p.Job, retried+1, slot, ended, 0)
	}
	if errors.Is(ctx.Err(), context.Canceled) && !errors.Is(context.Cause(hctx), errCancelRequested) {
		// Asynq stopped the attempt itself, and not for a shutdown (above)
		// nor for a cancel the record asked for: its lease ran out because
		// this worker could not renew it in Redis. Say so, rather than
		// "context canceled".
		herr = errLeaseLost
	}
	if (storeFailed || (w != nil && w.Failed())) && attempt.MayHold && s.storeUnusable() {
		// The job did not fail: this worker's results store did, and the
		// worker has paused itself (health.go). Another worker, or this
		// one once its store is back, runs the job; no retry is spent.
		log.Warn("results store unusable: job handed back", "err", herr)
		return s.handBack(bctx, log, p.Job, retried+1, slot, ended, storeHandBackDelay)
	}
	msg := herr.Error()
	if errors.Is(herr, context.DeadlineExceeded) {
		msg = fmt.Sprintf("attempt timed out: %v", herr)
	}
	final := retried >= maxRetry || errors.Is(herr, ErrPermanent) || errors.Is(herr, blob.ErrTooLarge)
	var st jobs.State
	var next []jobs.Waiting
	write := func(ctx context.Context) (err error) {
		st, next, err = s.store.FailReleasing(ctx, p.Job, retried+1, msg, final, s.cfg.Retention, slot)
		return err
	}
	// An attempt Asynq stopped for a Redis stall ends while Redis may still
	// be away: wait for it (the heartbeat goes on) rather than leave the
	// record running for a reconciler to call this live worker lost.
	if err := untilRedisAnswers(bctx, write(bctx), write); err != nil {
		logRecordFailure(log, err)
	} else {
		ended(next)
		if st == jobs.StateFailed {
			metrics.JobsFinished.WithLabelValues(typ.Name, string(st)).Inc()
		}
		if st == jobs.StateRetrying && errors.Is(herr, errLeaseLost) {
			// Asynq gave the task up with its lease and would re-run it
			// only when its recoverer comes by (30 s and up to a minute
			// later): put it back now, as the next attempt.
			if ok, err := s.store.RequeueTask(bctx, queue, p.Job, retried+1, started.MaxRetry, time.Now()); err != nil {
				log.Warn("task not put back in its queue; Asynq's recoverer will", "err", err)
			} else if ok {
				log.Info("task put back in its queue after its lease was lost")
			}
		}
	}
	log.Warn("attempt failed", "err", herr, "final", final)
	if final {
		return fmt.Errorf("%w: %w", herr, asynq.SkipRetry)
	}
	return herr
}

// release frees the slot of an attempt whose end was not recorded, and
// moves its owner's held jobs forward. Best effort: a slot not released
// frees itself when its lease ends.
func (s *Server) release(log *slog.Logger, owner, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	next, err := s.store.Release(ctx, owner, id, s.cfg.MaxRunningJobs)
	if err != nil {
		log.Warn("running-job slot not released; it frees itself when its lease ends", "err", err)
		return
	}
	s.moveForward(log, next)
}

// moveForward moves held jobs whose owner has a free slot again to the
// front of their queues. Best effort: a held job not moved checks again
// after its hold delay.
func (s *Server) moveForward(log *slog.Logger, next []jobs.Waiting) {
	for _, w := range next {
		// Fails harmlessly when the task is no longer waiting in the
		// retry set: already started, cancelled, or not yet handed back.
		if err := s.insp.RunTask(w.Queue, w.ID); err != nil {
			log.Debug("held job not moved forward", "held_job", w.ID, "err", err)
		}
	}
}

// run calls the handler, turning a panic into an error so that one bad
// input cannot take the worker down.
func (s *Server) run(ctx context.Context, typ Type, t *Task) (err error) {
	s.handlers.Add(1)
	defer s.handlers.Done()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panicked: %v: %w", r, ErrPermanent)
		}
	}()
	return typ.Handle(ctx, t)
}

// errLeaseLost is the error of an attempt Asynq stopped because its lease
// could not be renewed: Redis did not answer for longer than the lease
// (Asynq's is 30 s, fixed). The attempt counts, as Asynq's recoverer
// counts it; a handler that saves checkpoints goes on from its last one.
var errLeaseLost = errors.New("attempt stopped: Redis did not answer for 30 s, so its lease could not be renewed")

// errResultNotStored is what a job whose result could not be committed
// (results store full, read-only or gone) is failed with. The cause, which
// names server paths, goes to the worker's log only.
var errResultNotStored = errors.New("result could not be stored")

// succeed commits the result of an attempt whose handler succeeded and
// records the job as succeeded. final says no retry is left: a result that
// cannot be stored then fails the job instead of leaving it running.
func (s *Server) succeed(ctx context.Context, log *slog.Logger, typeName, id string, attempt int, final, mayHandBack bool, w *blob.Writer, contentType string,
	slot *jobs.Slot, ended func([]jobs.Waiting), facts attemptFacts) error {
	// Another run of this job (a task Asynq delivered twice while Redis was
	// away) stored its result and is waiting to record it: that result is
	// the job's, and replacing its bytes now would leave the record naming
	// a digest the stored bytes no longer have.
	if fin, ok, _ := s.blobs.FinishedResult(ctx, id); ok {
		if w != nil {
			w.Abort()
		}
		log.Info("another run stored this job's result first; recording that one", "made_by_attempt", fin.Attempt)
		res := jobs.Result{ContentType: fin.ContentType, Size: fin.Size, SHA256: fin.SHA256}
		return s.recordSuccess(ctx, log, typeName, id, attempt, res, !fin.Empty, slot, ended, facts)
	}
	var res jobs.Result
	if w != nil {
		res = jobs.Result{ContentType: contentType, Size: w.Size(), SHA256: w.SHA256()}
		if err := w.Commit(); err != nil {
			if mayHandBack && s.storeUnusable() {
				log.Warn("results store unusable: job handed back", "err", err)
				return s.handBack(ctx, log, id, attempt, slot, ended, storeHandBackDelay)
			}
			log.Error("result not stored", "err", err, "final", final)
			st, next, ferr := s.store.FailReleasing(ctx, id, attempt, errResultNotStored.Error(), final, s.cfg.Retention, slot)
			if ferr != nil {
				logRecordFailure(log, ferr)
			} else {
				ended(next)
				if st == jobs.StateFailed {
					metrics.JobsFinished.WithLabelValues(typeName, string(st)).Inc()
				}
			}
			if final {
				return fmt.Errorf("%w: %w", errResultNotStored, asynq.SkipRetry)
			}
			return errResultNotStored
		}
	}
	return s.recordSuccess(ctx, log, typeName, id, attempt, res, w != nil, slot, ended, facts)
}

// superseded reports whether job id has moved on without attempt: it has
// ended, or another attempt runs it now (a reconciler took this worker
// for lost and put the task back). st and current are what the record
// says. One read, just before a result is committed, so that a stale
// attempt's bytes do not replace those of the attempt the record names;
// a record that cannot be read is not taken for superseded (the finish
// script still ignores a stale attempt).
func (s *Server) superseded(ctx context.Context, id string, attempt int) (st jobs.State, current int, ok bool) {
	j, err := s.store.Get(ctx, id)
	if err != nil {
		return "", 0, false
	}
	return j.State, j.Attempts, j.State.Final() || j.Attempts != attempt
}

// untilRedisAnswers calls write again, with backoff, while err (its last
// outcome) says Redis is away, for at most recordRetryFor, and returns the
// last outcome. The attempt is still this worker's meanwhile, so its
// heartbeat goes on once Redis is back and no reconciler takes it for lost.
func untilRedisAnswers(ctx context.Context, err error, write func(context.Context) error) error {
	if !redisconn.Unavailable(err) {
		return err
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordRetryFor)
	defer cancel()
	for wait := recordRetryFirst; err != nil && redisconn.Unavailable(err); wait = min(2*wait, recordRetryMax) {
		if sleepCtx(rctx, wait) != nil {
			break
		}
		err = write(rctx)
	}
	return err
}

// logRecordFailure logs a failed attempt whose end could not be written:
// an error, unless Redis is away, which its monitor has said once already
// (the reconciler ends the record once Redis is back).
func logRecordFailure(log *slog.Logger, err error) {
	if redisconn.Unavailable(err) {
		log.Warn("attempt's failure not recorded: Redis unavailable; the reconciler will end it", "err", err)
		return
	}
	log.Error("could not record failure", "err", err)
}

// handBack puts a job whose attempt could not finish here back in its
// queue, unspent: the record says queued, the slot is freed, and the task
// is retried by Asynq without counting as a failure.
func (s *Server) handBack(ctx context.Context, log *slog.Logger, id string, attempt int, slot *jobs.Slot, ended func([]jobs.Waiting), delay time.Duration) error {
	if _, next, err := s.store.HandBack(ctx, id, attempt, slot); err != nil {
		// Left running: the reconciler sees its task waiting and makes
		// it queued.
		log.Warn("hand-back not recorded", "err", err)
	} else {
		ended(next)
	}
	return &heldError{delay: delay}
}

// recordSuccess records that attempt succeeded with res, whose bytes are
// stored when stored is set (a job may make no result).
//
// When Redis does not answer, the success is not given up: a note beside
// the result (blob.MarkFinished) says the job is done, and the write is
// tried again until Redis answers or recordRetryFor has passed. The
// attempt's heartbeat goes on meanwhile, so no reconciler takes the job
// for lost. If the worker stops first, whoever runs the job next finds the
// note and records the result instead of running the job again (process).
func (s *Server) recordSuccess(ctx context.Context, log *slog.Logger, typeName, id string, attempt int, res jobs.Result, stored bool,
	slot *jobs.Slot, ended func([]jobs.Waiting), facts attemptFacts) error {
	var st jobs.State
	var next []jobs.Waiting
	write := func(ctx context.Context) (err error) {
		st, next, err = s.storeSuccess(ctx, typeName, id, attempt, res, slot, facts)
		return err
	}
	err := write(ctx)
	if redisconn.Unavailable(err) {
		fin := blob.Finished{ContentType: res.ContentType, Size: res.Size, SHA256: res.SHA256, Attempt: attempt, Empty: !stored}
		if merr := s.blobs.MarkFinished(ctx, id, fin); merr != nil {
			log.Warn("finished marker not written: if this worker stops before Redis is back, the job runs again", "err", merr)
		}
		log.Warn("job succeeded but its record was not written: trying again until Redis answers", "err", err)
		err = untilRedisAnswers(ctx, err, write)
	}
	if err != nil {
		return err
	}
	ended(next)
	if st != jobs.StateSucceeded {
		// Cancelled while finishing: this attempt's result must not
		// linger. Unless the job ended, a newer attempt owns the record,
		// and the result's name with it: what is stored there may be
		// its result already, which it records next, so it is left.
		if st.Final() {
			if stored {
				_ = s.blobs.Delete(ctx, id)
			}
			_ = s.blobs.ClearFinished(ctx, id)
		}
		log.Info("job ended before its result was recorded", "state", st)
		return nil
	}
	if err := s.blobs.ClearFinished(ctx, id); err != nil {
		log.Warn("finished marker not removed", "err", err)
	}
	metrics.JobsFinished.WithLabelValues(typeName, string(st)).Inc()
	log.Info("job succeeded", "size", res.Size)
	return nil
}

const (
	// recordRetryFor bounds how long a worker tries to record a success
	// while Redis does not answer; after that the finished marker lets the
	// next run record it.
	recordRetryFor   = 2 * time.Minute
	recordRetryFirst = 250 * time.Millisecond
	recordRetryMax   = 2 * time.Second
	// storeHandBackDelay is how long a job handed back by a worker whose
	// results store failed waits before any worker may take it again.
	storeHandBackDelay = time.Second
	// storeCheckTimeout bounds one check of the results store: an object
	// store that does not answer within it is taken for unusable.
	storeCheckTimeout = 10 * time.Second
	// checkpointTimeout bounds one SaveCheckpoint, which outlives the
	// handler's context.
	checkpointTimeout = 5 * time.Second
)

// asynqLogger routes Asynq's logs into slog. While Redis is down (down
// reports what the worker's redisconn.Monitor saw), Asynq's warnings and
// errors are its loops failing to reach Redis, every poll or heartbeat;
// they go to debug, as the Monitor has said it once.
type asynqLogger struct {
	l    *slog.Logger
	down func() bool
}

func (a asynqLogger) log(level slog.Level, args []any) {
	if level >= slog.LevelWarn && a.down != nil && a.down() {
		level = slog.LevelDebug
	}
	a.l.Log(context.Background(), level, fmt.Sprint(args...), "component", "asynq")
}

func (a asynqLogger) Debug(args ...any) { a.log(slog.LevelDebug, args) }
func (a asynqLogger) Info(args ...any)  { a.log(slog.LevelInfo, args) }
func (a asynqLogger) Warn(args ...any)  { a.log(slog.LevelWarn, args) }
func (a asynqLogger) Error(args ...any) { a.log(slog.LevelError, args) }
func (a asynqLogger) Fatal(args ...any) {
	a.l.Error(fmt.Sprint(args...), "component", "asynq", "fatal", true)
}
