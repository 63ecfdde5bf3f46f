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
