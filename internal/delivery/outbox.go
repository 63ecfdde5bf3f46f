package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/webhook"
)

// The completed event of a job ended where no task can be enqueued (the
// package doc's "Canceled while no worker holds the job"): the outbox
// (jobs.KeyWebhookOutbox) holds its id; every deliverer reads it and turns
// each id into a settle task, and the settle task enqueues the completed
// event once the record is final.

// SettleTaskType is the Asynq type of a settle task, on Queue.
const SettleTaskType = "cc:webhook-settle"

// Settle limits: a settle task looks again after SettleDelay(n) while the
// job has not ended (a cancel still under way, or one that died before it
// deleted the job's task), for SettleMaxAttempts looks (about a week at
// the one-minute cap), by when the record has expired in any usual
// retention.
const (
	SettleMaxAttempts = 10_000
	settleMaxDelay    = time.Minute
)

// SettleDelay is the wait before look n+1 of a settle task: 1 s, doubling,
// at most a minute. A cancel ends its job within a round trip or two of
// pushing the id, so the first look usually finds it final.
func SettleDelay(n int) time.Duration {
	if n > 6 {
		return settleMaxDelay
	}
	return time.Second << max(n-1, 0)
}

// maxOutboxID bounds what the outbox reader takes for a job id.
const maxOutboxID = 128

// settleTask is a settle task's payload.
type settleTask struct {
	Job string `json:"job"`
}

// enqueueSettle enqueues job's settle task. Its TaskID ("whs:<job>") makes
// the many deliverers that read the same id one task; it keeps no
// retention, so an id pushed again after the task ran is looked at again
// (harmless: the completed event's own TaskID dedups it).
func (e *Events) enqueueSettle(ctx context.Context, job string) error {
	raw, err := json.Marshal(settleTask{Job: job})
	if err != nil {
		return err
	}
	_, err = e.client.EnqueueContext(ctx, asynq.NewTask(SettleTaskType, raw), asynq.Queue(Queue),
		asynq.TaskID("whs:"+job), asynq.MaxRetry(SettleMaxAttempts-1), asynq.Timeout(attemptTimeout))
	if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("enqueue webhook settle of job %s: %w", job, err)
	}
	return nil
}

// settle enqueues the completed event of the job of a settle task once its
// record is final. A running job's worker enqueues that event itself when
// the attempt ends, so the settle task leaves it there; a record gone has
// nobody left to tell. Waiting for a job that has not ended spends
// nothing of the event's own MaxAttempts: those count from the completed
// task's enqueue.
func (s *Server) settle(ctx context.Context, at *asynq.Task) error {
	var t settleTask
	if err := json.Unmarshal(at.Payload(), &t); err != nil || t.Job == "" {
		return fmt.Errorf("webhook settle task payload: %v: %w", err, asynq.SkipRetry)
	}
	j, err := s.store.Get(ctx, t.Job)
	switch {
	case errors.Is(err, jobs.ErrNotFound):
		return nil
	case err != nil:
		return err
	case !j.Webhook.Wants(webhook.EventCompleted), j.State == jobs.StateRunning:
		return nil
	case j.State.Final():
		return s.events.Completed(ctx, t.Job, j.Webhook)
	}
	n, _ := asynq.GetRetryCount(ctx)
	return &retryError{delay: s.cfg.SettleDelay(n + 1), err: fmt.Errorf("job %s is %s: its completed event waits for it to end", t.Job, j.State)}
}

// drain reads the outbox until stop is closed: for the oldest id, it
// enqueues the settle task and only then removes the id, so that an id is
// never lost to a deliverer that dies between the two (the next reader
// enqueues it again, one task by its TaskID). An empty outbox is a
// blocking wait of OutboxWait, not a poll.
func (s *Server) drain(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	pause := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Second):
			return true
		}
	}
	for ctx.Err() == nil {
		id, err := s.store.PeekWebhookOutbox(ctx, s.cfg.OutboxWait)
		switch {
		case err != nil || id == "":
		case len(id) > maxOutboxID:
			// No job has such an id (they are UUIDs): not ours to carry
			// into a task and its TaskID.
			s.log.Warn("webhook outbox: dropped an entry that is no job id", "bytes", len(id))
			err = s.store.DoneWebhookOutbox(ctx, id)
		default:
			if err = s.events.enqueueSettle(ctx, id); err == nil {
				err = s.store.DoneWebhookOutbox(ctx, id)
			}
		}
		if err != nil && ctx.Err() == nil {
			s.log.Warn("webhook outbox not read; trying again", "err", err)
			if !pause() {
				return
			}
		}
	}
}
