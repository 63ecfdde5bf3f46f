package worker

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/config"
	"github.com/claimcheck/claimcheck/internal/delivery"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/webhook"
	"github.com/claimcheck/claimcheck/tokens"
)

// The worker's side of webhooks (package delivery): its hooks enqueue a
// job's events after the job's own record changes, and a job's task is
// acknowledged only once its completed event is enqueued. Delivering them
// is another server's work (delivery.Server), on a queue no pool pulls.

type webhookKey struct{}

// webhookRun is what one task's hooks know of the job's webhook.
type webhookRun struct {
	job     string
	started bool          // the record was read at the start, so the webhook is known
	spec    *webhook.Spec // the job's webhook
	attempt *delivery.Attempt
}

// withWebhooks wraps a task handler: once it returns, the attempt's
// throttled events are flushed and, if the record is final and its
// webhook wants it, the completed event is enqueued, before the task is
// acknowledged. A task whose completed event could not be enqueued is
// failed, so that it runs again and the re-run (which finds the record
// final and does not run the job) enqueues it.
func (s *Server) withWebhooks(h asynq.HandlerFunc) asynq.HandlerFunc {
	return func(ctx context.Context, t *asynq.Task) error {
		run := &webhookRun{}
		err := h(context.WithValue(ctx, webhookKey{}, run), t)
		run.attempt.Close()
		if !run.started || !run.spec.Wants(webhook.EventCompleted) {
			return err
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if cerr := s.events.Completed(cctx, run.job, run.spec); cerr != nil {
			s.log.Warn("webhook completed event not enqueued; the task runs again to enqueue it", "job", run.job, "err", cerr)
			return cerr
		}
		return err
	}
}

// webhookStart is the hook after StartAttempt: it notes the job's webhook
// (read by the start script, no extra round trip), enqueues the started
// event when the attempt runs, and returns the attempt's throttled events
// (nil, which does nothing, when there are none).
func (s *Server) webhookStart(ctx context.Context, job string, n int, started jobs.Started) *delivery.Attempt {
	run, _ := ctx.Value(webhookKey{}).(*webhookRun)
	if run == nil || started.Webhook == nil {
		return nil
	}
	run.job, run.started, run.spec = job, true, started.Webhook
	if started.State != jobs.StateRunning || started.Held {
		return nil
	}
	s.events.Started(ctx, job, n, started.Webhook)
	run.attempt = s.events.Attempt(job, started.Webhook)
	return run.attempt
}

// webhookCompleted is the reconciler's hook after it ended a lost job.
func (s *Server) webhookCompleted(ctx context.Context, job string) {
	if err := s.events.Completed(ctx, job, nil); err != nil {
		s.log.Warn("webhook completed event not enqueued", "job", job, "err", err)
	}
}

// webhookLogs is the log writer's store, telling the attempt's webhook
// of every batch it stored.
type webhookLogs struct {
	logAppender
	attempt *delivery.Attempt
}

func (w webhookLogs) AppendLog(ctx context.Context, id string, lines []jobs.LogLine, dropped int) (int64, error) {
	n, err := w.logAppender.AppendLog(ctx, id, lines, dropped)
	if err == nil {
		w.attempt.Log(lines, dropped)
	}
	return n, err
}

// startWebhooks starts the worker process's webhook deliverer (its own
// Asynq server on delivery.Queue, --webhook-concurrency slots) unless
// --webhook-concurrency is 0 or no --progress-url is given, and returns
// its stop.
func startWebhooks(c *config.Worker, rdb redis.UniversalClient, logger *slog.Logger) (func(), error) {
	if c.WebhookConcurrency <= 0 {
		return func() {}, nil
	}
	if c.ProgressURL == "" {
		logger.Warn("no --progress-url: this worker delivers no webhooks (set it, or --webhook-concurrency 0 to say so)")
		return func() {}, nil
	}
	keyDir, linkDir := c.WebhookKeys()
	keys, _, err := tokens.EnsureDir(keyDir)
	if err != nil {
		return nil, fmt.Errorf("webhook keys: %w", err)
	}
	linkKeys, _, err := tokens.EnsureDir(linkDir)
	if err != nil {
		return nil, fmt.Errorf("webhook link keys: %w", err)
	}
	d, err := delivery.New(delivery.Config{
		Concurrency: c.WebhookConcurrency, Keys: keys, LinkKeys: linkKeys, ProgressURL: c.ProgressURL,
		Guard: &webhook.Guard{AllowPrivate: c.WebhookAllowPrivate}, Logger: logger,
	}, rdb)
	if err != nil {
		return nil, err
	}
	if err := d.Start(); err != nil {
		return nil, err
	}
	return d.Shutdown, nil
}
