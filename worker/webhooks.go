package worker

import (
	"context"
	"crypto/ed25519"
	"errors"
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
	"github.com/claimcheck/claimcheck/tokens/pubkeys"
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

// WebhookConfig configures a worker process's webhook deliverer: an Asynq
// server of its own on the webhook queue, beside the job server (see the
// README's "Webhooks"). Zero values take the defaults in parentheses.
type WebhookConfig struct {
	// Concurrency is how many deliveries run at once (8).
	Concurrency int
	// KeyDir holds the webhook signing keys, LinkKeyDir the keys of the
	// download links in completed payloads; both are made on first use,
	// shared by every worker, and their public halves published in Redis
	// (kinds "webhook" and "link") for the api's JWKS and the progress
	// service. Required.
	KeyDir, LinkKeyDir string
	// ProgressURL is the progress service's public base URL, for the
	// links. Required.
	ProgressURL string
	// AllowPrivate lets deliveries connect to loopback, private and other
	// internal addresses (off: refused at connect time).
	AllowPrivate bool
	// RetryDelay is the wait after failed attempt n (the documented
	// schedule: 5 s … 1 h, ±20 %); tests shorten it.
	RetryDelay func(n int) time.Duration
	// ConnectTimeout and ResponseTimeout bound an attempt (5 s, 10 s).
	ConnectTimeout, ResponseTimeout time.Duration
	// SettleDelay and OutboxWait tune the completed events of jobs
	// canceled while no worker held them (delivery.Config); tests shorten
	// them.
	SettleDelay func(n int) time.Duration
	OutboxWait  time.Duration
	// TaskCheckInterval and DelayedTaskCheckInterval are the deliverer's
	// Asynq polls (100ms, 1s).
	TaskCheckInterval, DelayedTaskCheckInterval time.Duration
	// Logger receives its logs (slog.Default()).
	Logger *slog.Logger
}

// Webhooks is a worker process's webhook deliverer.
type Webhooks struct{ d *delivery.Server }

// NewWebhooks loads (or makes) the keys and builds the deliverer on rdb;
// call Start.
func NewWebhooks(cfg WebhookConfig, rdb redis.UniversalClient) (*Webhooks, error) {
	if cfg.KeyDir == "" || cfg.LinkKeyDir == "" {
		return nil, errors.New("worker: WebhookConfig.KeyDir and LinkKeyDir are required")
	}
	keys, _, err := tokens.EnsureDir(cfg.KeyDir)
	if err != nil {
		return nil, fmt.Errorf("webhook keys: %w", err)
	}
	linkKeys, _, err := tokens.EnsureDir(cfg.LinkKeyDir)
	if err != nil {
		return nil, fmt.Errorf("webhook link keys: %w", err)
	}
	links := &tokens.LinkMinter{Keys: linkKeys, Issuer: delivery.LinkIssuer}
	d, err := delivery.New(delivery.Config{
		Concurrency: cfg.Concurrency, ProgressURL: cfg.ProgressURL,
		Sign: func(msg []byte) ([]byte, error) {
			k, err := keys.Signer()
			if err != nil {
				return nil, err
			}
			return ed25519.Sign(k.Private, msg), nil
		},
		MintLink: func(job string, epoch int64, notAfter time.Time) (string, time.Time, error) {
			tok, claims, err := links.MintLinkUntil(job, epoch, "", "attachment", delivery.DefaultLinkTTL, notAfter)
			if errors.Is(err, tokens.ErrExpired) {
				return "", time.Time{}, nil // the record ends within the second
			}
			if err != nil {
				return "", time.Time{}, err
			}
			return tok, claims.Expires(), nil
		},
		Publish: func(ctx context.Context) error {
			// Replaced, not added to: a key retired from its directory
			// (after a theft) stops being trusted, for links at the
			// progress service and for signatures at receivers.
			if err := pubkeys.Replace(ctx, rdb, tokens.KindWebhook, keys); err != nil {
				return err
			}
			return pubkeys.Replace(ctx, rdb, tokens.KindLink, linkKeys)
		},
		Guard:             &webhook.Guard{AllowPrivate: cfg.AllowPrivate},
		RetryDelay:        cfg.RetryDelay,
		ConnectTimeout:    cfg.ConnectTimeout,
		ResponseTimeout:   cfg.ResponseTimeout,
		SettleDelay:       cfg.SettleDelay,
		OutboxWait:        cfg.OutboxWait,
		TaskCheckInterval: cfg.TaskCheckInterval, DelayedTaskCheckInterval: cfg.DelayedTaskCheckInterval,
		Logger: cfg.Logger,
	}, rdb)
	if err != nil {
		return nil, err
	}
	return &Webhooks{d: d}, nil
}

// Start publishes the public keys and starts delivering in the background.
func (w *Webhooks) Start() error { return w.d.Start() }

// Shutdown stops taking deliveries and waits for those under way (at most
// 30 s); an interrupted one runs again.
func (w *Webhooks) Shutdown() { w.d.Shutdown() }

// startWebhooks starts the worker process's webhook deliverer unless
// --webhook-concurrency is 0 or no --progress-url is given, and returns
// its stop.
func startWebhooks(c *config.Worker, rdb redis.UniversalClient, logger *slog.Logger) (func(), error) {
	if c.WebhookConcurrency <= 0 {
		warnUndrainedOutbox(rdb, logger)
		return func() {}, nil
	}
	if c.ProgressURL == "" {
		logger.Warn("no --progress-url: this worker delivers no webhooks (set it, or --webhook-concurrency 0 to say so)")
		return func() {}, nil
	}
	keyDir, linkDir := c.WebhookKeys()
	w, err := NewWebhooks(WebhookConfig{Concurrency: c.WebhookConcurrency, KeyDir: keyDir, LinkKeyDir: linkDir,
		ProgressURL: c.ProgressURL, AllowPrivate: c.WebhookAllowPrivate, Logger: logger}, rdb)
	if err != nil {
		return nil, err
	}
	if err := w.Start(); err != nil {
		return nil, err
	}
	return w.Shutdown, nil
}

// warnUndrainedOutbox tells the operator of a worker that delivers no
// webhooks that canceled jobs' completed events are waiting for one that
// does (jobs.KeyWebhookOutbox; past its cap they are dropped).
func warnUndrainedOutbox(rdb redis.UniversalClient, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if n, err := jobs.NewStore(rdb, nil).WebhookOutboxLen(ctx); err == nil && n > 0 {
		logger.Warn("completed webhook events of canceled jobs wait for a worker that delivers webhooks (this one has --webhook-concurrency 0)",
			"waiting", n, "cap", jobs.WebhookOutboxCap)
	}
}
