package worker

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redisconn"
)

// The reconciler keeps job records honest about workers that are gone.
//
// Asynq alone notices a dead worker late (its lease lasts 30 s, its
// recoverer looks once a minute, 60–116 s in all), never tells the job
// record, and never notices a task whose lease was deleted (asynq #1144:
// it stays active forever). A record left saying running stays so until it
// expires. So, modelled on river's job rescuer:
//
//   - every worker writes a heartbeat for each attempt it runs
//     (Config.HeartbeatInterval; the first one is written by the start,
//     before the record says running, so there is no gap), and removes it
//     once the attempt's end is recorded;
//   - every worker also runs a reconciler: each Config.ReconcileInterval it
//     reads every heartbeat entry, takes up to reconcileBatch of those that
//     have not moved for Config.LostAfter by its own clock (quiet: other
//     machines' clocks are not trusted), asks Asynq what became of each task
//     (Inspector.GetTaskInfo on the queue the record names), and moves the
//     record:
//
//     task active without a lease (asynq #1144), job has a retry left
//     ──▶ task put back in its queue as the next attempt, retrying
//     "worker lost" (jobs.Store.RequeueTask)
//     task active with a lease (the worker died; Asynq has not noticed
//     yet) ──▶ retrying "worker lost" when the job has a retry left (its
//     entry is kept, and once the lease has expired, by LostAfter for
//     clocks that disagree, the task is put back in its queue), else
//     failed "worker lost"; a missing lease is restored as an expired
//     one, so that Asynq's own recoverer ends the task too
//     task pending (handed back at shutdown) ──▶ queued
//     task waiting to be retried ──▶ retrying "worker lost"
//     task archived, job has a retry left ──▶ task put back in its queue
//     as the next attempt, retrying "worker lost"
//     task archived (no retry left), completed or gone ──▶ failed
//     "worker lost"
//
// A job failed here has its running-job slot released once its record
// says so, and its owner's held jobs moved forward, as a worker's own end
// does; otherwise they would wait for the slot's lease (the attempt's time
// limit and a minute) to run out.
//
// A task put back is stored as retried as many times as the record has
// attempts, so its next run is the next attempt and the job gets exactly
// its max_retry budget. It is put back rather than left to Asynq's
// recoverer, which runs once a minute (not configurable in asynq v0.26)
// and takes a task only 30 s after its lease expired, so that the re-run
// does not wait for it: a SIGKILLed worker's job runs again about LostAfter
// after its lease (30 s, extended while the worker lives) expires. While
// entries of jobs waiting so are the oldest, more than reconcileBatch of
// them delay the detection of newer ones until their leases expire.
//
// On Redis Cluster the heartbeat set, Asynq's queue (asynq:{queue}) and the
// job record are in three slots, so a move is a sequence of one-slot
// steps, each conditional on what the one before saw:
//
//	1. heartbeat slot: the entry is still the lost run's and no newer than
//	   the heartbeat read (jobs.Store.StillStale); else a live worker, or a
//	   newer run with its own entry, wins and nothing is touched
//	2. queue slot: Asynq is asked about the task and, if it would not run
//	   it again although the job has a retry left, the task is put back in
//	   its queue as the next attempt (jobs.Store.RequeueTask, a script on
//	   that queue's keys only, applied only if the task's message is still
//	   the one read)
//	3. job slot: the record moves, only if it still runs the attempt and
//	   run seen (jobs.Store.ReconcileReleasing)
//	4. heartbeat slot: the entry goes (kept while the job waits retrying),
//	   and owner slot: a failed job's running-job slot is freed
//
// Why this order can neither lose nor double-run a job: the task is put
// back (2) before the record says retrying (3), so a reconciler that dies
// between them leaves a record running a lost attempt with a task that
// will run as the next one, whose start takes the record over (and whose
// entry is its own); the reverse order could leave a record retrying with
// no task to run it. The task is put back only while Asynq would not run
// it again itself (archived, active without a lease or with one expired
// for LostAfter), so Asynq and the reconciler never both re-run it, and
// two reconcilers cannot both put it back: the second finds the message
// changed. A lost worker that turns out alive (its heartbeat lands between
// 1 and 3) loses its attempt as it would have a moment later: its late
// writes name an attempt that is no longer current, and are dropped.
// Steps 1 and 3 are what let a live worker or a newer attempt win, so any
// number of reconcilers may run at once. A task Asynq re-runs after its
// record failed finds the record final and is dropped unrun. Detection
// takes at most LostAfter + 2 × ReconcileInterval after the worker's last
// heartbeat, whatever the workers' clocks say, once the reconciler has
// run for LostAfter.

// reconcileBatch bounds the stale attempts one pass handles; the rest wait
// for the next pass.
const reconcileBatch = 100

// errWorkerLost is the error of a job whose worker stopped without ending
// the attempt.
const errWorkerLost = "worker lost"

// running is the set of runs this worker runs, for their heartbeats: job
// id → run (jobs.Attempt.Run).
type running struct {
	mu  sync.Mutex
	ids map[string]string
}

func (r *running) add(id, run string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ids == nil {
		r.ids = map[string]string{}
	}
	r.ids[id] = run
}

// remove forgets run of job id, unless a newer run of the job took its place.
func (r *running) remove(id, run string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ids[id] == run {
		delete(r.ids, id)
	}
}

func (r *running) list() []jobs.AttemptRun {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]jobs.AttemptRun, 0, len(r.ids))
	for id, run := range r.ids {
		out = append(out, jobs.AttemptRun{ID: id, Run: run})
	}
	return out
}

// heartbeatLoop writes the heartbeats of the attempts this worker runs
// until stop is closed.
func (s *Server) heartbeatLoop(stop <-chan struct{}) {
	every(stop, s.cfg.HeartbeatInterval, s.cfg.HeartbeatInterval, func(ctx context.Context) {
		if runs := s.running.list(); len(runs) > 0 {
			s.loopFailed(slog.LevelWarn, "heartbeat not written", s.store.HeartbeatRuns(ctx, runs), "jobs", len(runs))
		}
	})
}

// reconcileLoop runs a reconcile pass every ReconcileInterval until stop
// is closed.
//
// No pass runs while Redis is away, nor for LostAfter after a pass found it
// away: live workers could not write their heartbeats meanwhile either, so
// an outage longer than LostAfter would otherwise read as every running
// job's worker lost, and the first pass after it would fail them all.
func (s *Server) reconcileLoop(stop <-chan struct{}) {
	var holdUntil time.Time
	every(stop, s.cfg.ReconcileInterval, max(s.cfg.ReconcileInterval, 5*time.Second), func(ctx context.Context) {
		if s.redis.Down() {
			holdUntil = time.Now().Add(s.cfg.LostAfter)
			return
		}
		if time.Now().Before(holdUntil) {
			return
		}
		err := s.reconcile(ctx)
		if err != nil && (redisconn.Unavailable(err) || s.redis.Down()) {
			holdUntil = time.Now().Add(s.cfg.LostAfter)
		}
		s.loopFailed(slog.LevelWarn, "reconcile pass failed", err)
	})
}

// sighting is a heartbeat entry as the reconciler read it: the heartbeat,
// and when (by the reconciler's clock) a pass first read it.
type sighting struct {
	beat, since time.Time
}

// quiet returns, oldest first and at most reconcileBatch of them, the
// heartbeat entries that have not moved for LostAfter by this worker's own
// clock, and notes what it read for the next pass.
//
// Why not compare the heartbeats with now - LostAfter: they are written by
// other machines' clocks. A worker whose clock is LostAfter behind this
// one's (or this one ahead) would have every job it runs taken for lost
// while it runs them: failed "worker lost" when no retry is left, and
// stopped at its next progress report. A heartbeat that moves is a live
// worker, whatever the clocks say; one that has not moved for LostAfter,
// as this worker counts time, is a lost one. Its silence is counted from
// the pass that first read it, never from earlier (a pass may have been
// skipped for a Redis outage, or delayed), so a live worker is taken for
// lost only if its heartbeats stop for LostAfter. The price: one
// ReconcileInterval more to detect a lost worker (at most LostAfter + 2 ×
// ReconcileInterval after its last heartbeat, 20 s with the defaults,
// where comparing clocks took 15 s), a reconciler that has just started
// waits LostAfter before it takes anything for lost, and a pass reads
// every entry (one round trip; one entry per running job of the fleet).
//
// Heartbeats are stamped with Redis's clock, though (jobs.Store.Heartbeat),
// and redisNow is that clock at the read: an entry older than LostAfter by
// it is quiet at once, with no clock of any worker involved. That is what
// finds a lost worker within LostAfter + ReconcileInterval even when no
// reconciler lives long enough to watch an entry stand still (a fleet
// whose workers are all restarted more often than LostAfter); the
// sighting stays as a second, clock-free way, for an entry stamped
// before heartbeats took Redis's clock.
func (s *Server) quiet(entries []jobs.HeartbeatEntry, now, redisNow time.Time) []jobs.HeartbeatEntry {
	seen := make(map[string]sighting, len(entries))
	var out []jobs.HeartbeatEntry
	for _, e := range entries {
		sg, ok := s.seen[e.ID]
		if !ok || !sg.beat.Equal(e.At) {
			sg = sighting{beat: e.At, since: now}
		}
		if !redisNow.IsZero() && redisNow.Sub(e.At) >= s.cfg.LostAfter {
			// Silent for LostAfter on the one clock that stamped it.
			if back := now.Add(-redisNow.Sub(e.At)); back.Before(sg.since) {
				sg.since = back
			}
		}
		seen[e.ID] = sg
		if now.Sub(sg.since) >= s.cfg.LostAfter {
			out = append(out, e)
		}
	}
	s.seen = seen
	slices.SortStableFunc(out, func(a, b jobs.HeartbeatEntry) int { return seen[a.ID].since.Compare(seen[b.ID].since) })
	if len(out) > reconcileBatch {
		out = out[:reconcileBatch]
	}
	return out
}

// reconcile runs one pass over a page of stale attempts.
func (s *Server) reconcile(ctx context.Context) error {
	defer s.passes.Add(1)
	now := s.now()
	entries, redisNow, err := s.store.Heartbeats(ctx)
	if err != nil {
		return err
	}
	stale, err := s.store.StaleJobs(ctx, s.quiet(entries, now, redisNow))
	if err != nil {
		return err
	}
	for _, j := range stale {
		if err := ctx.Err(); err != nil {
			return err
		}
		// The scripts below apply only while the heartbeat is still the
		// one read: a worker that has written one since is alive.
		cutoff := j.Heartbeat
		if j.State != jobs.StateRunning || j.Superseded() {
			if j.State == jobs.StateRetrying && s.awaitRecovery(ctx, j) {
				continue // its lost attempt's task may still be put back
			}
			// The attempt's end was recorded, or its task will run
			// again, or a newer run of the job has its own entry: only
			// this run's entry was left.
			if _, err := s.store.Reconcile(ctx, j, cutoff, "", "", s.cfg.Retention); err != nil {
				return err
			}
			continue
		}
		// Checked before Asynq's task is touched (verdict may put it back
		// in its queue): a heartbeat written since the read is a live
		// worker, whose task is left alone.
		if stale, err := s.store.StillStale(ctx, j, cutoff); err != nil {
			return err
		} else if !stale {
			continue
		}
		to, errMsg, ok := s.verdict(ctx, j)
		if !ok {
			continue
		}
		st, next, err := s.store.ReconcileReleasing(ctx, j, cutoff, to, errMsg, s.cfg.Retention, s.cfg.MaxRunningJobs)
		if err != nil {
			return err
		}
		if st == to && st.Final() {
			s.webhookCompleted(ctx, j.ID)
		}
		if st == to {
			s.log.Warn("job's worker lost: record reconciled", "job", j.ID, "attempt", j.Attempt,
				"state", st, "silent_for", now.Sub(s.seen[j.ID].since).Round(time.Millisecond))
		}
		// A failed job's slot is free: its owner's held jobs start now
		// rather than when the slot's lease would have run out.
		s.moveForward(s.log.With("job", j.ID), next)
	}
	return nil
}

// verdict decides what the record of stale attempt j becomes from what
// Asynq says of its task, and puts back in its queue a task Asynq would
// not run again although the job has a retry left; ok is false when that
// could not be told.
func (s *Server) verdict(ctx context.Context, j jobs.StaleJob) (to jobs.State, errMsg string, ok bool) {
	lost := jobs.StateFailed
	if j.RetriesLeft() {
		lost = jobs.StateRetrying
	}
	info, err := s.insp.GetTaskInfo(j.Queue, j.ID)
	if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
		return jobs.StateFailed, errWorkerLost, true
	}
	if err != nil {
		s.loopFailed(slog.LevelWarn, "reconcile: task not inspected", err, "job", j.ID)
		return "", "", false
	}
	switch info.State {
	case asynq.TaskStateActive:
		if j.RetriesLeft() {
			// Without a lease (asynq #1144) Asynq would never run it
			// again; with one restored, or one that has expired, it
			// would, but only 30 s after the expiry at its recoverer's
			// next look, up to a minute later. Put back now.
			requeued, err := s.requeue(ctx, j)
			if err != nil {
				return "", "", false
			}
			if requeued {
				s.log.Warn("task had lost its lease (asynq #1144): put back in its queue", "job", j.ID, "next_attempt", j.Attempt+1)
				return jobs.StateRetrying, errWorkerLost, true
			}
		}
		// It has a lease (Asynq's recoverer retries or archives it once
		// the lease expires), or no retry is left: a missing lease is
		// restored as an expired one, so Asynq ends the task too.
		restored, err := s.store.RestoreLease(ctx, j.Queue, j.ID)
		if err != nil {
			s.loopFailed(slog.LevelWarn, "reconcile: lease not restored", err, "job", j.ID)
			return "", "", false
		}
		if restored {
			s.log.Warn("task had lost its lease (asynq #1144): restored an expired one for asynq to recover", "job", j.ID)
		}
		return lost, errWorkerLost, true
	case asynq.TaskStatePending:
		return jobs.StateQueued, "", true
	case asynq.TaskStateRetry, asynq.TaskStateScheduled:
		return jobs.StateRetrying, errWorkerLost, true
	case asynq.TaskStateArchived:
		if !j.RetriesLeft() {
			return jobs.StateFailed, errWorkerLost, true
		}
		// Archived while the job has a retry left (Asynq's delivery
		// budget ran out before the job's own, or an operator archived a
		// running task): the orphan is requeued, not failed.
		requeued, err := s.requeue(ctx, j)
		if err != nil || !requeued {
			return "", "", false // it changed meanwhile: the next pass looks again
		}
		s.log.Warn("archived task of a job with a retry left: put back in its queue", "job", j.ID, "next_attempt", j.Attempt+1)
		return jobs.StateRetrying, errWorkerLost, true
	default: // completed, aggregating: nothing will run it again
		return jobs.StateFailed, errWorkerLost, true
	}
}

// awaitRecovery looks again at a job the reconciler left retrying while
// its lost attempt's task was still active under a lease: once the lease
// has expired (by LostAfter, for clocks that disagree), the task is put
// back in its queue rather than left for Asynq's recoverer, which takes it
// 30 s after the expiry at its next look, once a minute. It reports whether
// the entry is to be kept for the next pass (the lease is still live, or
// Asynq could not be asked).
func (s *Server) awaitRecovery(ctx context.Context, j jobs.StaleJob) bool {
	info, err := s.insp.GetTaskInfo(j.Queue, j.ID)
	if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
		return false
	}
	if err != nil {
		s.loopFailed(slog.LevelWarn, "reconcile: task not inspected", err, "job", j.ID)
		return true
	}
	if info.State != asynq.TaskStateActive {
		return false // Asynq runs it again (or the job has moved on)
	}
	requeued, err := s.requeue(ctx, j)
	if err != nil || !requeued {
		return true
	}
	s.log.Warn("lost worker's task put back in its queue once its lease expired", "job", j.ID, "next_attempt", j.Attempt+1)
	return false
}

// requeue puts stale attempt j's task back in its queue as the job's next
// attempt (jobs.Store.RequeueTask): an archived task, an active one without
// a lease, or one whose lease expired LostAfter ago.
func (s *Server) requeue(ctx context.Context, j jobs.StaleJob) (bool, error) {
	ok, err := s.store.RequeueTask(ctx, j.Queue, j.ID, j.Attempt, j.MaxRetry, s.now().Add(-s.cfg.LostAfter))
	if err != nil {
		s.loopFailed(slog.LevelWarn, "reconcile: task not put back in its queue", err, "job", j.ID)
	}
	return ok, err
}
