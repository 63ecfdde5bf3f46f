package delivery

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/metrics"
	"github.com/claimcheck/claimcheck/internal/webhook"
)

// Delivery constants; the package doc explains each.
const (
	MaxAttempts      = 10
	ConnectTimeout   = 5 * time.Second
	ResponseTimeout  = 10 * time.Second
	MaxResponseBytes = 64 << 10
	BodyGrace        = time.Second
	UserAgent        = "claimcheck-webhooks"
	// LinkIssuer is the issuer of the download links in completed
	// payloads; the progress service verifies them with the keys of kind
	// "link" that deliverers publish.
	LinkIssuer = "urn:claimcheck:webhooks"
	// DefaultLinkTTL is how long such a link lives (never past the
	// record's expiry).
	DefaultLinkTTL = 10 * time.Minute
	// attemptTimeout bounds one delivery task: connect, response, body.
	attemptTimeout = 30 * time.Second
)

// RetrySchedule is the wait before each retry: after attempt n fails,
// attempt n+1 runs RetrySchedule[n-1] later (±20 %).
var RetrySchedule = []time.Duration{5 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute,
	5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour}

// DefaultRetryDelay is RetrySchedule with ±20 % jitter; n is the attempt
// that failed, from 1.
func DefaultRetryDelay(n int) time.Duration {
	d := RetrySchedule[min(max(n, 1), len(RetrySchedule))-1]
	return d*4/5 + rand.N(d*2/5+1)
}

// Config tunes a Server. Sign, MintLink and ProgressURL are required.
// The keys are the caller's (package worker holds them as tokens key
// sets): this package signs nothing itself and never sees a private key.
type Config struct {
	// Concurrency is how many deliveries run at once (8).
	Concurrency int
	// Sign returns the Ed25519 signature of msg with the active webhook
	// key (Standard Webhooks v1a).
	Sign func(msg []byte) ([]byte, error)
	// MintLink mints a download link (link+jwt, issuer LinkIssuer) to
	// job's result at token epoch epoch, living DefaultLinkTTL and never
	// past notAfter (zero: no bound), and says when it expires; "" when
	// no whole second is left.
	MintLink func(job string, epoch int64, notAfter time.Time) (link string, expires time.Time, err error)
	// Publish, when set, puts the public halves of the keys where the
	// api's JWKS and the progress service find them; Start calls it.
	Publish func(context.Context) error
	// ProgressURL is the progress service's public base URL, for links.
	ProgressURL string
	// Guard checks every address a delivery connects to (webhook.Guard:
	// no loopback, private, link-local or metadata address unless
	// AllowPrivate); nil is a Guard with every check on.
	Guard *webhook.Guard
	// ConnectTimeout and ResponseTimeout bound an attempt's connection
	// (TLS included) and its wait for the response headers (the package's
	// ConnectTimeout, 5 s, and ResponseTimeout, 10 s).
	ConnectTimeout, ResponseTimeout time.Duration
	// BodyGrace is how long the response's body is read once its headers
	// are in (BodyGrace, 1 s): only to reuse the connection, so a body
	// that trickles does not hold the delivery slot, which every job's
	// events share.
	BodyGrace time.Duration
	// RetryDelay is the wait after failed attempt n (DefaultRetryDelay).
	RetryDelay func(n int) time.Duration
	// TaskCheckInterval and DelayedTaskCheckInterval are Asynq's (100ms,
	// 1s): how often an idle server polls, and how often due retries move
	// back to the queue.
	TaskCheckInterval, DelayedTaskCheckInterval time.Duration
	// SettleDelay is the wait before look n+1 of a settle task at a job
	// that has not ended yet (SettleDelay: 1 s doubling to 1 min).
	SettleDelay func(n int) time.Duration
	// OutboxWait is how long one read of the webhook outbox blocks while
	// it is empty (1 s, also the least: the Redis client counts it in
	// whole seconds); Shutdown may wait that long for it.
	OutboxWait time.Duration
	// Now is the clock of timestamps and links (time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

// Server delivers webhook events: an Asynq server of its own on Queue.
type Server struct {
	cfg    Config
	rdb    redis.UniversalClient
	store  *jobs.Store
	events *Events
	client *http.Client
	// stop ends the outbox reader, done says it ended.
	stop context.CancelFunc
	done sync.WaitGroup
	srv  *asynq.Server
	log  *slog.Logger
}

// New validates cfg and returns a server on rdb; call Start.
func New(cfg Config, rdb redis.UniversalClient) (*Server, error) {
	if cfg.Sign == nil || cfg.MintLink == nil || cfg.ProgressURL == "" {
		return nil, errors.New("delivery: Sign, MintLink and ProgressURL are required")
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 8
	}
	if cfg.Guard == nil {
		cfg.Guard = &webhook.Guard{}
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = ConnectTimeout
	}
	if cfg.ResponseTimeout <= 0 {
		cfg.ResponseTimeout = ResponseTimeout
	}
	if cfg.BodyGrace <= 0 {
		cfg.BodyGrace = BodyGrace
	}
	if cfg.RetryDelay == nil {
		cfg.RetryDelay = DefaultRetryDelay
	}
	if cfg.TaskCheckInterval <= 0 {
		cfg.TaskCheckInterval = 100 * time.Millisecond
	}
	if cfg.DelayedTaskCheckInterval <= 0 {
		cfg.DelayedTaskCheckInterval = time.Second
	}
	if cfg.SettleDelay == nil {
		cfg.SettleDelay = SettleDelay
	}
	if cfg.OutboxWait < time.Second {
		cfg.OutboxWait = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.ProgressURL = strings.TrimRight(cfg.ProgressURL, "/")
	s := &Server{cfg: cfg, rdb: rdb, store: jobs.NewStore(rdb, nil), log: cfg.Logger.With("component", "webhooks")}
	s.events = NewEvents(rdb, s.log)
	s.client = &http.Client{
		Transport: cfg.Guard.Transport(cfg.ConnectTimeout, cfg.ResponseTimeout),
		// A redirect is a failed attempt (Standard Webhooks: update the
		// URL instead); following one would also leave the checked URL.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	s.srv = asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:              cfg.Concurrency,
		Queues:                   map[string]int{Queue: 1},
		TaskCheckInterval:        cfg.TaskCheckInterval,
		DelayedTaskCheckInterval: cfg.DelayedTaskCheckInterval,
		ShutdownTimeout:          attemptTimeout,
		RetryDelayFunc: func(n int, err error, _ *asynq.Task) time.Duration {
			var r *retryError
			if errors.As(err, &r) {
				return r.delay
			}
			return cfg.RetryDelay(n)
		},
		Logger:   asynqLogger{s.log},
		LogLevel: asynq.WarnLevel,
	})
	return s, nil
}

// Start publishes the keys and starts delivering in the background.
func (s *Server) Start() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if s.cfg.Publish != nil {
		if err := s.cfg.Publish(ctx); err != nil {
			return fmt.Errorf("webhooks: %w", err)
		}
	}
	mux := asynq.NewServeMux()
	mux.HandleFunc(TaskType, s.deliver)
	mux.HandleFunc(SettleTaskType, s.settle)
	if err := s.srv.Start(mux); err != nil {
		return fmt.Errorf("webhooks: %w", err)
	}
	dctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	s.done.Add(1)
	go s.drain(dctx, &s.done)
	return nil
}

// Shutdown stops reading the outbox and taking deliveries, and waits for
// those under way (at most 30 s); an interrupted one runs again.
func (s *Server) Shutdown() {
	if s.stop != nil {
		s.stop()
		s.done.Wait()
	}
	s.srv.Shutdown()
}

// retryError asks for the next attempt after delay.
type retryError struct {
	delay time.Duration
	err   error
}

func (e *retryError) Error() string { return e.err.Error() }
func (e *retryError) Unwrap() error { return e.err }

// Payload is a webhook's body.
type Payload struct {
	// Type is job.started, job.progress, job.log or job.completed.
	Type string `json:"type"`
	// Timestamp is when the event happened (not this attempt).
	Timestamp time.Time `json:"timestamp"`
	Data      Data      `json:"data"`
}

// Data is a payload's data.
type Data struct {
	// Job is the record as GET /v1/jobs/{id} shows it, when the attempt
	// was made.
	Job *jobs.Job `json:"job"`
	// Seq numbers progress and log events of the job (per kind), and
	// started events by the attempt.
	Seq int64 `json:"seq,omitempty"`
	// Lines (log events) are the lines stored since the previous log
	// event; DroppedLines how many more were left out of it.
	Lines        []LogLine `json:"lines,omitempty"`
	DroppedLines int       `json:"dropped_lines,omitempty"`
	// Result (completed events of succeeded jobs with a result).
	Result *Result `json:"result,omitempty"`
}

// Result is a completed payload's result.
type Result struct {
	Size        int64  `json:"size"`
	ContentType string `json:"content_type"`
	SHA256      string `json:"sha256"`
	// URL downloads the result with no other credential until
	// URLExpiresAt; minted for this attempt.
	URL          string    `json:"url"`
	URLExpiresAt time.Time `json:"url_expires_at"`
}

// deliver makes one attempt to deliver one event.
func (s *Server) deliver(ctx context.Context, at *asynq.Task) error {
	var t task
	if err := json.Unmarshal(at.Payload(), &t); err != nil || t.Job == "" {
		return fmt.Errorf("webhook task payload: %v: %w", err, asynq.SkipRetry)
	}
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	attempt := retried + 1
	start := s.cfg.Now()
	d := jobs.Delivery{ID: t.id(), Event: t.Event, Attempt: attempt}
	record := func(outcome string) {
		d.Outcome = outcome
		d.At = s.cfg.Now()
		d.DurationMS = d.At.Sub(start).Milliseconds()
		metrics.WebhookDeliveries.WithLabelValues(t.Event, outcome).Inc()
		if outcome != jobs.DeliveryDropped {
			metrics.WebhookDeliveryDuration.WithLabelValues(t.Event).Observe(d.At.Sub(start).Seconds())
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := s.store.RecordDelivery(rctx, t.Job, d); err != nil {
			s.log.Warn("delivery attempt not recorded", "job", t.Job, "event", t.Event, "err", err)
		}
	}

	j, err := s.store.Get(ctx, t.Job)
	if errors.Is(err, jobs.ErrNotFound) {
		return nil // the record expired: nobody is left to read about it
	}
	if err != nil {
		return err // Redis: Asynq retries it, no attempt spent on the receiver
	}
	if !j.Webhook.Wants(t.Event) {
		return nil
	}
	ws, err := s.store.WebhookState(ctx, t.Job)
	if err != nil {
		return err
	}
	switch {
	case ws.Gone:
		d.Error = "not sent: the receiver unsubscribed (410 Gone)"
		record(jobs.DeliveryDropped)
		return nil
	case (t.Event == webhook.EventProgress || t.Event == webhook.EventLog) && (ws.Seq[t.Event] > t.Seq || ws.Completed):
		d.Error = "not sent: a newer event superseded it"
		record(jobs.DeliveryDropped)
		return nil
	}
	body, err := s.payload(ctx, &t, j)
	if err != nil {
		return err
	}
	status, err := s.post(ctx, j.Webhook.URL, d.ID, body)
	d.StatusCode = status
	switch {
	case err == nil && status >= 200 && status < 300:
		record(jobs.DeliveryDelivered)
		return nil
	case err == nil && status == http.StatusGone:
		d.Error = "the receiver unsubscribed (410 Gone): no further event of this job is sent"
		if gerr := s.store.MarkWebhookGone(context.WithoutCancel(ctx), t.Job); gerr != nil {
			s.log.Warn("unsubscription not recorded", "job", t.Job, "err", gerr)
		}
		record(jobs.DeliveryFailed)
		return fmt.Errorf("%s: %w", d.Error, asynq.SkipRetry)
	case err == nil:
		err = fmt.Errorf("the receiver answered %d", status)
		if status >= 300 && status < 400 {
			err = fmt.Errorf("the receiver answered %d (redirects are not followed)", status)
		}
	}
	d.Error = err.Error()
	if retried >= maxRetry {
		record(jobs.DeliveryFailed)
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	delay := s.cfg.RetryDelay(attempt)
	next := s.cfg.Now().Add(delay).UTC()
	d.NextRetryAt = &next
	record(jobs.DeliveryRetrying)
	return &retryError{delay: delay, err: err}
}

var eventTypes = map[string]string{
	webhook.EventStarted: "job.started", webhook.EventProgress: "job.progress",
	webhook.EventLog: "job.log", webhook.EventCompleted: "job.completed",
}

// payload builds the body of t's attempt from the record j.
func (s *Server) payload(ctx context.Context, t *task, j *jobs.Job) ([]byte, error) {
	p := Payload{Type: eventTypes[t.Event], Timestamp: t.At.UTC(), Data: Data{Job: j, Seq: t.Seq, Lines: t.Lines, DroppedLines: t.Dropped}}
	if t.Event == webhook.EventCompleted && j.State == jobs.StateSucceeded && j.Result != nil {
		r := &Result{Size: j.Result.Size, ContentType: j.Result.ContentType, SHA256: j.Result.SHA256}
		left, err := s.store.TTL(ctx, j.ID)
		if err != nil {
			return nil, err
		}
		var notAfter time.Time
		if left > 0 {
			notAfter = s.cfg.Now().Add(left)
		}
		tok, exp, err := s.cfg.MintLink(j.ID, j.TokenEpoch, notAfter)
		if err != nil {
			return nil, err
		}
		if tok != "" { // else a record about to expire: the result goes with it, no link
			r.URL = s.cfg.ProgressURL + "/v1/results/" + url.PathEscape(j.ID) + "?sig=" + url.QueryEscape(tok)
			r.URLExpiresAt = exp
		}
		p.Data.Result = r
	}
	return json.Marshal(p)
}

// post sends one signed request and returns the receiver's status. Its
// errors never quote the response, nor the URL (it may hold the
// receiver's secret).
func (s *Server) post(ctx context.Context, target, id string, body []byte) (int, error) {
	ts := strconv.FormatInt(s.cfg.Now().Unix(), 10)
	raw, err := s.cfg.Sign(SignedContent(id, ts, body))
	if err != nil {
		return 0, fmt.Errorf("webhook signing key: %w", err)
	}
	sig := Signature(raw)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout+s.cfg.ResponseTimeout+5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, errors.New("the webhook URL is not a valid request URL")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", UserAgent)
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", ts)
	req.Header.Set("webhook-signature", sig)
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, s.describe(err)
	}
	// The status is the answer; the body is read (a little, briefly)
	// only so the connection can be reused. Cancelling the request's
	// context ends a read that trickles.
	grace := time.AfterFunc(s.cfg.BodyGrace, cancel)
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, MaxResponseBytes))
	grace.Stop()
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// describe says why a request failed without the URL url.Error adds.
func (s *Server) describe(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, webhook.ErrRefused) {
		return fmt.Errorf("refused by the webhook address policy: %w", err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("timed out (connect %v, response %v): %w", s.cfg.ConnectTimeout, s.cfg.ResponseTimeout, err)
	}
	return peerSafe(err)
}

// peerSafe keeps an error's text only when it cannot quote what the peer
// sent. net/http quotes the start of a malformed answer ("malformed HTTP
// response \"SSH-2.0-…\""), and an attempt's error is shown to every
// holder of the job's token (GET /v1/jobs/{id}/deliveries): a submitter
// pointing a webhook at a service that is not HTTP would read its banner
// back, from this deployment's network position. Failures to connect
// (net.OpError: the dialed address and the system's reason) and TLS
// alerts keep their text; certificate failures, a closed connection and
// anything else are named, not quoted.
func peerSafe(err error) error {
	var (
		op       *net.OpError
		alert    tls.AlertError
		recHdr   tls.RecordHeaderError
		certInv  x509.CertificateInvalidError
		hostname x509.HostnameError
		unknown  x509.UnknownAuthorityError
		verify   *tls.CertificateVerificationError
	)
	switch {
	case errors.Is(err, context.Canceled):
		return errors.New("interrupted: the deliverer stopped; the attempt runs again")
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("the receiver closed the connection without an answer")
	case errors.As(err, &op) && op.Op == "dial", errors.As(err, &alert):
		return err
	// A certificate's error texts quote its names: named, not quoted.
	case errors.As(err, &hostname):
		return errors.New("the receiver's TLS certificate is not valid for the URL's host")
	case errors.As(err, &unknown):
		return errors.New("the receiver's TLS certificate is signed by an unknown authority")
	case errors.As(err, &certInv), errors.As(err, &verify):
		return errors.New("the receiver's TLS certificate does not verify")
	case errors.As(err, &recHdr):
		return errors.New("the receiver's answer is not TLS")
	}
	return errors.New("the receiver's answer is not a valid HTTP response")
}

// SignedContent is what a v1a signature signs: "<id>.<timestamp>.<body>".
func SignedContent(id, timestamp string, body []byte) []byte {
	msg := make([]byte, 0, len(id)+len(timestamp)+2+len(body))
	return append(append(append(append(append(msg, id...), '.'), timestamp...), '.'), body...)
}

// Signature is the webhook-signature header of an Ed25519 signature:
// "v1a," and its standard base64.
func Signature(sig []byte) string { return "v1a," + base64.StdEncoding.EncodeToString(sig) }

type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...)) }
func (a asynqLogger) Fatal(args ...any) { a.l.Error(fmt.Sprint(args...), "fatal", true) }
