package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/claimcheck/claimcheck/internal/metrics"
)

// Canceler is the part of asynq.Inspector that cancellation needs.
type Canceler interface {
	DeleteTask(queue, id string) error
	CancelProcessing(id string) error
}

// CancelJob cancels job id wherever it is and returns the record afterwards:
// canceled when it was still queued (its task is deleted), still running
// with the cancel flag set when a worker holds it (Asynq's cancellation and
// the flag stop it at its next progress write or start). A job that ended
// first, before or during the cancel, is ErrFinished. tokenEpoch is the
// asking token's epoch (AnyEpoch for an operator).
func CancelJob(ctx context.Context, store *Store, canceler Canceler, id string, tokenEpoch int64, retention time.Duration) (*Job, error) {
	if _, err := store.RequestCancel(ctx, id, tokenEpoch); err != nil {
		return nil, err
	}
	j, err := store.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	// A job this cancel may end (its task deleted below) gets its
	// completed event through the outbox, since this process cannot
	// enqueue it. The id goes in first: a crash before the delete leaves an
	// id whose job is not final, which the deliverer then waits out or
	// leaves to the job's worker; the other order could lose the event. A
	// running job's worker enqueues the event itself: the push is then a
	// harmless extra look.
	if wantsCompletedFromOutbox(j) {
		if _, err := store.PushWebhookOutbox(ctx, id); err != nil {
			return nil, fmt.Errorf("cancel job %s: %w", id, err)
		}
	}
	// DeleteTask refuses active tasks; a running one gets CancelProcessing.
	if err := canceler.DeleteTask(j.Queue, id); err == nil {
		st, err := store.Cancel(ctx, id, retention)
		if err != nil {
			return nil, err
		}
		if st == StateCanceled {
			// Only a queued job ends here; a running one is counted by
			// the worker that stops it.
			metrics.JobsFinished.WithLabelValues(j.Type, string(StateCanceled)).Inc()
		}
	} else if !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
		if err := canceler.CancelProcessing(id); err != nil {
			return nil, fmt.Errorf("cancel job %s: %w", id, err)
		}
	}
	if j, err = store.Get(ctx, id); err != nil {
		return nil, err
	}
	if j.State.Final() && j.State != StateCanceled {
		// The job ended on its own between the request and now.
		return j, fmt.Errorf("cancel job %s (%s): %w", id, j.State, ErrFinished)
	}
	return j, nil
}

// CancelOwnerJobs cancels every job of owner that has not ended, for an
// owner just blocked ("users block --cancel-jobs"), and returns how many it
// cancelled; a job that ends on its own meanwhile is not counted. A
// submission of theirs still under way is refused as well (not counted:
// it was never accepted): one admitted but not confirmed is voided in its
// own slot, where that races its confirm atomically, and one not admitted
// yet meets the owner gate when it is (see the package doc).
func CancelOwnerJobs(ctx context.Context, store *Store, canceler Canceler, owner string, retention time.Duration) (int, error) {
	ids, err := store.ActiveOrPending(ctx, owner)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		st, err := store.VoidPending(ctx, id)
		switch {
		case errors.Is(err, ErrNotFound), err == nil && (st == "" || st.Final()):
			continue
		case err != nil:
			return n, err
		}
		_, err = CancelJob(ctx, store, canceler, id, AnyEpoch, retention)
		switch {
		case errors.Is(err, ErrFinished), errors.Is(err, ErrNotFound):
		case err != nil:
			return n, err
		default:
			n++
		}
	}
	return n, nil
}
