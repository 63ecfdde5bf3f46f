// Package enqueue is the API people submit jobs to. It authenticates the
// caller (API key or session, through package authn; gateway tokens slot in
// as a further Authenticator), validates the job against its type's schema, writes the
// job record, enqueues it on Asynq with the job id as the TaskID, and answers
// 202 Accepted with a job token for the progress service.
//
// Submitting is safe to retry: with an Idempotency-Key the same key, user
// and body give the same job and a single enqueue.
//
// A job's webhook is checked before anything is written: its shape
// (webhook.Spec.Normalize), then where it leads (webhook.Guard.CheckURL,
// the host resolved within WebhookResolveTimeout). A refusal is a 422 at
// /webhook/url or /webhook/events with nothing stored, except that a retry
// of an accepted body under its Idempotency-Key gets its job. The record
// keeps the normalized spec; no answer shows the URL, the 202 shows its
// events.
//
// # Submission is all-or-nothing
//
// A job is created in these steps (package jobs says how each is one
// script in one Redis Cluster slot, and why their order keeps the owner
// gate, the quota and the idempotency claim):
//
//  1. Create reserves in the owner's slot (gate, idempotency claim, a
//     first look at the quota) and writes the record as "pending" with a
//     short TTL (PendingTTL) in the job's, both in one pipelined round
//     trip: the record is not listed, not counted, and a worker that meets
//     its task waits rather than run it.
//  2. The task is enqueued on Asynq, its TaskID the job id.
//  3. Confirm admits the job in the owner's slot (gate and quota again,
//     listed, counted), then flips the record to "queued" (full TTL). The
//     flip is the commit point: only a confirmed job runs, and 202 is
//     answered only once the flip said so. A failed enqueue or admission
//     is followed by Discard, which deletes a pending record and its place
//     in the owner's slot but reports a confirmed one.
//
// Enqueueing first and creating the record after was rejected: every job
// would race its worker to the record, and a quota or idempotency refusal
// would come after a task existed. One script writing both would depend on
// Asynq's internal key layout, and on a cluster could not exist.
//
// Where Redis dies, what the client sees, what remains:
//
//	Redis dies                 client sees              remains
//	at Create (sent or not)    503 enqueue-failed       nothing, or a pending record and claim (expire)
//	at enqueue (sent or not)   503 enqueue-failed       a pending record (expires; Discard removes
//	                                                    it if Redis is back), maybe a task: its
//	                                                    worker hands it back, then drops it
//	at the admission           503 enqueue-failed       as above, maybe admitted: a tentative job the
//	                                                    owner's next over-quota admission voids
//	at the flip, not applied   503 submission-unknown   as above: nothing that ever runs
//	                           (503 enqueue-failed if Discard reached Redis)
//	at the flip, reply lost    503 submission-unknown   a queued job that runs
//	                           (202 if Discard reached Redis and found it confirmed)
//	after the flip             202                      a queued job with its task
//
// So a 503 "nothing was accepted" is always true (a pending record is seen
// by nobody and never runs), a 202 always has its task, and the one case a
// single Redis cannot decide, a lost reply to the commit itself, is said as
// such ("submission-unknown", with the job id): a retry with the same
// Idempotency-Key then answers for the job, whichever way it went. The
// pending TTL outlives any request, so a Confirm never finds its record
// expired unless Redis lost it.
package enqueue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/claimcheck/claimcheck/api/authn"
	"github.com/claimcheck/claimcheck/api/jsonbody"
	"github.com/claimcheck/claimcheck/api/problem"
	"github.com/claimcheck/claimcheck/api/ratelimit"
	"github.com/claimcheck/claimcheck/api/router"
	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/metrics"
	"github.com/claimcheck/claimcheck/internal/registry"
	"github.com/claimcheck/claimcheck/internal/webhook"
	"github.com/claimcheck/claimcheck/tokens"
)

// Enqueuer is the part of asynq.Client the service needs.
type Enqueuer interface {
	EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

// Catalog is where the service learns the job types: the live registry of
// what workers announce (internal/registry.Reader) or a fixed set
// (FixedCatalog).
type Catalog interface {
	// Types returns the types known now and, per name, how many workers
	// serve it. want, when not empty, names a type the caller is about to
	// look up; a source that lacks it may look again before answering.
	Types(ctx context.Context, want string) (*jobs.Catalog, map[string]int, error)
}

// FixedCatalog is a Catalog that never changes, with no worker counts
// (GET /v1/job-types shows 0): for tests and for an api embedded beside
// its workers.
func FixedCatalog(c *jobs.Catalog) Catalog { return fixed{c} }

type fixed struct{ c *jobs.Catalog }

func (f fixed) Types(context.Context, string) (*jobs.Catalog, map[string]int, error) {
	return f.c, nil, nil
}

// Config wires the service. Fields marked required must be set; the others
// default as noted.
type Config struct {
	Catalog  Catalog             // required
	Store    *jobs.Store         // required
	Enqueuer Enqueuer            // required
	Auth     authn.Authenticator // required
	Minter   *tokens.Minter      // required
	// JWKS is the public key set served at /.well-known/jwks.json (required).
	JWKS func() tokens.JWKS
	// ProgressURL is the progress service's base URL for links and
	// Location; empty means the same origin (dev mode).
	ProgressURL string
	// Retention is how long a finished job's record and result are kept (24h).
	Retention time.Duration
	// MaxQueueWait bounds how long a job may wait in its queue before it is
	// abandoned; with the attempts' timeouts it sets the job's deadline (24h).
	MaxQueueWait time.Duration
	// MaxTokenLifetime caps a job token's lifetime (7 days).
	MaxTokenLifetime time.Duration
	// MaxBodyBytes bounds a POST /v1/jobs body: over it is 413 as it is
	// read (DefaultMaxBody, 1 MiB). It is fixed while the catalog changes
	// under it, so a type announcing an InputLimits.MaxBytes above it minus
	// EnvelopeBytes needs it raised. A body under it but over the largest
	// input a type known now takes plus EnvelopeBytes is refused with 422
	// at /input without being decoded; an input over its own type's limit
	// (InputLimits.MaxBytes, 64 KiB by default) is 422 at /input too, after
	// a scan of the envelope.
	MaxBodyBytes int64
	// Limits rate-limits submissions per user; nil means no limit.
	Limits *ratelimit.Limiter
	// MaxActiveJobs caps each user's jobs that are queued or running; zero
	// means no cap.
	MaxActiveJobs int
	// PriorityForAll lets every credential submit at high priority. By
	// default (false) priority "high" and queue "critical" need the
	// jobs:priority scope, which only an operator grants: the critical
	// queue is served first by every worker, so anyone allowed on it can
	// push every other user's jobs back.
	PriorityForAll bool
	// Live, when set, confirms the caller's session or API key in Redis
	// before a job token is re-issued or a job's tokens replaced: what a
	// trust-gateway api needs, whose callers' credentials are known only as
	// of their internal token's minting. Nil (an api that looks every
	// credential up itself) checks nothing more.
	Live authn.CredentialChecker
	// OwnerGate names the Redis hash whose "blocked" field refuses a user's
	// submissions atomically with the job's creation (jobs.NewJob.OwnerGate);
	// nil means no such check.
	OwnerGate func(user string) string
	// Webhooks checks where a submitted webhook's URL leads (nil: a zero
	// webhook.Guard, which refuses every non-public address; an operator's
	// --webhook-allow-private sets AllowPrivate). The deliverer dials
	// through a Guard with the same setting.
	Webhooks *webhook.Guard
	// WebhookResolveTimeout bounds the lookup of a webhook URL's host, so a
	// slow DNS cannot hold a submission (2s). A lookup that runs out is a
	// host that does not resolve.
	WebhookResolveTimeout time.Duration
	Now                   func() time.Time
	Logger                *slog.Logger
}

// EnvelopeBytes is what a job request may add to its input (type, options,
// whitespace) when the largest input sets MaxBodyBytes.
const EnvelopeBytes = 16 << 10

// DefaultMaxBody is the default MaxBodyBytes.
const DefaultMaxBody = 1 << 20

// Service is the enqueue API.
type Service struct {
	cfg Config
}

// New validates cfg and applies defaults.
func New(cfg Config) (*Service, error) {
	if cfg.Catalog == nil || cfg.Store == nil || cfg.Enqueuer == nil || cfg.Auth == nil || cfg.Minter == nil || cfg.JWKS == nil {
		return nil, errors.New("enqueue: Catalog, Store, Enqueuer, Auth, Minter and JWKS are required")
	}
	if cfg.Retention <= 0 {
		cfg.Retention = 24 * time.Hour
	}
	if cfg.MaxQueueWait <= 0 {
		cfg.MaxQueueWait = 24 * time.Hour
	}
	if cfg.MaxTokenLifetime <= 0 {
		cfg.MaxTokenLifetime = 7 * 24 * time.Hour
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBody
	}
	if cfg.Webhooks == nil {
		cfg.Webhooks = &webhook.Guard{}
	}
	if cfg.WebhookResolveTimeout <= 0 {
		cfg.WebhookResolveTimeout = 2 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.ProgressURL = strings.TrimRight(cfg.ProgressURL, "/")
	return &Service{cfg: cfg}, nil
}

// Register adds the service's routes to r.
func (s *Service) Register(r gin.IRouter) {
	r.GET("/.well-known/jwks.json", s.jwks)
	r.GET("/v1/job-types", s.jobTypes)
	auth := authn.Require(s.cfg.Auth)
	r.POST("/v1/jobs", auth, authn.RequireScope(identity.ScopeJobsSubmit), s.submit)
	r.GET("/v1/jobs", auth, authn.RequireScope(identity.ScopeJobsRead), s.list)
	live := authn.RequireLive(s.cfg.Live)
	r.POST("/v1/jobs/:id/token", auth, authn.RequireScope(identity.ScopeJobsRead), live, s.reissue)
	r.POST("/v1/jobs/:id/revoke-tokens", auth, authn.RequireScope(identity.ScopeJobsSubmit), live, s.revokeTokens)
}

func (s *Service) jwks(c *gin.Context) {
	c.Header("Cache-Control", "public, max-age=300")
	c.JSON(http.StatusOK, s.cfg.JWKS())
}

// jobType is one entry of GET /v1/job-types: the spec as the api enforces
// it, how many workers serve it now, and its spec digest.
type jobType struct {
	jobs.TypeSpec
	Workers int
}

// MarshalJSON adds workers and spec_digest to the spec's own fields (an
// embedded MarshalJSON would otherwise be the whole answer). The digest is
// the registry's (registry.Digest), the one workers announce and a result
// receipt's spec claim names, so a receipt can be compared with this list.
func (t jobType) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(t.TypeSpec)
	if err != nil || len(b) < 2 {
		return b, err
	}
	digest, err := registry.Digest(t.TypeSpec)
	if err != nil {
		return nil, err
	}
	return append(b[:len(b)-1], fmt.Sprintf(`,"workers":%d,"spec_digest":%q}`, t.Workers, digest)...), nil
}

func (s *Service) jobTypes(c *gin.Context) {
	cat, workers, err := s.cfg.Catalog.Types(c, "")
	if err != nil {
		problem.Abort(c, catalogUnavailable(err))
		return
	}
	specs := cat.Specs()
	slices.SortFunc(specs, func(a, b jobs.TypeSpec) int { return strings.Compare(a.Name, b.Name) })
	out := make([]jobType, 0, len(specs))
	for _, spec := range specs {
		out = append(out, jobType{TypeSpec: spec, Workers: workers[spec.Name]})
	}
	c.JSON(http.StatusOK, gin.H{"types": out})
}

// catalogUnavailable is the answer when the job types cannot be read
// (Redis down before the api ever read them): nothing was accepted.
func catalogUnavailable(err error) error {
	p := problem.New(http.StatusServiceUnavailable, "catalog-unavailable", "Job types unavailable",
		"the job types could not be read; nothing was accepted, retry later").WithHeader("Retry-After", "2")
	p.Err = err
	return p
}

// SubmitRequest is the body of POST /v1/jobs.
type SubmitRequest struct {
	Type  string          `json:"type"`
	Input json.RawMessage `json:"input,omitempty"`
	// Timeout is the per-attempt limit as a Go duration ("90s", "5m").
	Timeout string `json:"timeout,omitempty"`
	// Queue picks the queue class: critical, default or low (within the
	// type's pool; see jobs.QueueName).
	Queue string `json:"queue,omitempty"`
	// Priority is the friendlier spelling of Queue: high, normal or low.
	Priority string `json:"priority,omitempty"`
	// MaxRetry lowers the type's retry budget (it cannot raise it).
	MaxRetry *int `json:"max_retry,omitempty"`
	// Webhook subscribes a URL to the job's events (package webhook). Its
	// URL must lead to a public address unless the operator allows private
	// ones; it is stored with the job and never shown again.
	Webhook *webhook.Spec `json:"webhook,omitempty"`
}

// SubmitResponse is the 202 body.
type SubmitResponse struct {
	ID             string     `json:"id"`
	Type           string     `json:"type"`
	State          jobs.State `json:"state"`
	CreatedAt      time.Time  `json:"created_at"`
	Token          string     `json:"token"`
	TokenExpiresAt time.Time  `json:"token_expires_at"`
	Links          Links      `json:"links"`
	// Webhook, for a job with one, shows the events it is subscribed to
	// after normalization (defaults, order). Never its URL: a receiver's
	// URL often carries its secret, and the 202 is logged and cached by
	// clients and proxies more freely than the request.
	Webhook *WebhookSummary `json:"webhook,omitempty"`
}

// WebhookSummary is what a response says of a job's webhook.
type WebhookSummary struct {
	Events []string `json:"events"`
}

// Links point at the progress service.
type Links struct {
	Self   string `json:"self"`
	Events string `json:"events"`
	Result string `json:"result"`
	Cancel string `json:"cancel"`
	Logs   string `json:"logs"`
}

var priorities = map[string]string{"high": highPriorityClass, "normal": "default", "low": "low"}

// highPriorityClass is the queue class of priority "high"; submitting to
// it, in any pool, needs identity.ScopeJobsPriority (see
// Config.PriorityForAll).
const highPriorityClass = "critical"

func (s *Service) submit(c *gin.Context) {
	p := authn.Principal(c)
	if s.cfg.Limits != nil {
		if err := s.cfg.Limits.Allow(c, s.cfg.Limits.Limits.Submit, "submit", p.UserID); err != nil {
			problem.Abort(c, err)
			return
		}
	}
	var req SubmitRequest
	body, err := jsonbody.ReadRaw(c, s.cfg.MaxBodyBytes)
	if err != nil {
		problem.Abort(c, err)
		return
	}
	// A body bigger than the largest input plus its envelope cannot be
	// accepted whatever it says: refuse it before decoding, which would
	// cost ~20 ms and 7 MB for a 1 MiB body.
	cat, _, err := s.cfg.Catalog.Types(c, "")
	if err != nil {
		problem.Abort(c, catalogUnavailable(err))
		return
	}
	if limit := cat.MaxInputBytes(); len(body) > limit+EnvelopeBytes {
		problem.Abort(c, &jobs.InputError{Errors: []jobs.FieldError{{Pointer: "/input",
			Detail: fmt.Sprintf("the request is %d bytes; no job type takes an input over %d bytes", len(body), limit)}}})
		return
	}
	if err := jsonbody.Decode(body, &req); err != nil {
		problem.Abort(c, err)
		return
	}
	spec, plan, err := s.plan(c, cat, req)
	if err != nil {
		problem.Abort(c, err)
		return
	}
	if plan.class == highPriorityClass && !s.cfg.PriorityForAll && !p.Can(identity.ScopeJobsPriority) {
		problem.Abort(c, authn.InsufficientScope(identity.ScopeJobsPriority))
		return
	}
	idemKey := c.GetHeader("Idempotency-Key")
	if len(idemKey) > 255 {
		problem.Abort(c, problem.BadRequest("Idempotency-Key is longer than 255 characters"))
		return
	}
	sum := sha256.Sum256(body)
	bodyHash := hex.EncodeToString(sum[:])
	// Where the webhook leads is checked last before anything is written:
	// it is the one check that waits on the network.
	if plan.webhook != nil {
		if err := s.checkWebhook(c, plan.webhook.URL); err != nil && !s.acceptedBefore(c, p.UserID, idemKey, bodyHash) {
			problem.Abort(c, err)
			return
		}
	}
	now := s.cfg.Now()
	id, err := uuid.NewV7()
	if err != nil {
		problem.Abort(c, fmt.Errorf("job id: %w", err))
		return
	}
	deadline, tokenExp := s.lifetimes(now, plan.maxRetry, plan.timeout)
	nj := jobs.NewJob{
		ID: id.String(), Type: spec.Name, Owner: p.UserID, Queue: plan.queue,
		MaxRetry: plan.maxRetry, Timeout: plan.timeout, TTL: tokenExp.Sub(now),
		IdempotencyKey: idemKey, BodyHash: bodyHash, MaxActive: s.cfg.MaxActiveJobs,
		Webhook: plan.webhook,
	}
	if s.cfg.OwnerGate != nil {
		nj.OwnerGate = s.cfg.OwnerGate(p.UserID)
	}
	nj.PendingTTL = PendingTTL
	job, err := s.cfg.Store.Create(c, nj)
	if errors.Is(err, jobs.ErrOwnerBlocked) {
		problem.Abort(c, authn.ErrRevoked) // blocked since this request was authenticated
		return
	}
	var replay *jobs.IdempotentReplay
	if errors.As(err, &replay) {
		s.replay(c, p, replay, req)
		return
	}
	if err != nil {
		if _, ok := errors.AsType[*jobs.QuotaError](err); ok || errors.Is(err, jobs.ErrExists) {
			problem.Abort(c, err)
			return
		}
		// Whatever Create did, a pending record is seen by nobody.
		s.cfg.Logger.Error("job record not created", "job", id.String(), "err", err)
		problem.Abort(c, notAccepted(err))
		return
	}
	if err := s.commit(c, job, idemKey, req.Input, deadline, tokenExp.Sub(now)); err != nil {
		problem.Abort(c, err)
		return
	}
	metrics.JobsSubmitted.WithLabelValues(job.Type).Inc()
	s.accepted(c, p, job, tokenExp, false)
}

// PendingTTL is how long a job's record stays pending before it expires
// unconfirmed: far longer than a submission takes, short enough that a
// half-made submission's worker soon drops its task.
const PendingTTL = 2 * time.Minute

// commit enqueues a pending job and confirms it (steps 2 and 3 of the
// package comment), setting job.State to the state it is in afterwards.
// An error is the problem to answer with; nil means answer 202.
func (s *Service) commit(ctx context.Context, job *jobs.Job, idemKey string, input json.RawMessage, deadline time.Time, ttl time.Duration) error {
	if err := s.enqueue(ctx, job, input, deadline); err != nil {
		s.cfg.Logger.Error("enqueue failed", "job", job.ID, "err", err)
		if st, derr := s.discard(ctx, job, idemKey); derr == nil && st != "" {
			job.State = st // confirmed meanwhile (a concurrent replay)
			return nil
		}
		// Discarded, or left pending: either way it never runs.
		return notAccepted(err)
	}
	c := jobs.Confirmation{ID: job.ID, Owner: job.Owner, IdempotencyKey: idemKey, TTL: ttl, MaxActive: s.cfg.MaxActiveJobs}
	if s.cfg.OwnerGate != nil {
		c.OwnerGate = s.cfg.OwnerGate(job.Owner)
	}
	st, err := s.cfg.Store.ConfirmJob(ctx, c)
	switch {
	case err == nil:
		job.State = st
		return nil
	case errors.Is(err, jobs.ErrGone):
		return notAccepted(err) // its worker finds no record and drops the task
	case errors.Is(err, jobs.ErrOwnerBlocked):
		return authn.ErrRevoked // blocked while the job was being submitted
	case errors.Is(err, jobs.ErrNotConfirmed):
		// Failed before the commit: nothing was accepted, unless a
		// concurrent replay confirmed it meanwhile.
		s.cfg.Logger.Error("job not confirmed", "job", job.ID, "err", err)
		if st, derr := s.discard(ctx, job, idemKey); derr == nil && st != "" {
			job.State = st
			return nil
		}
		return notAccepted(err)
	}
	if _, ok := errors.AsType[*jobs.QuotaError](err); ok {
		return err
	}
	// The commit's reply is lost: it may have been applied. Discard
	// decides if Redis answers again.
	s.cfg.Logger.Error("job not confirmed", "job", job.ID, "err", err)
	st, derr := s.discard(ctx, job, idemKey)
	switch {
	case derr != nil:
		p := problem.New(http.StatusServiceUnavailable, "submission-unknown", "Job may have been accepted",
			"the queue became unavailable as the job was accepted; retry with the same Idempotency-Key, or look for the job in GET /v1/jobs").
			WithHeader("Retry-After", "2").With("job_id", job.ID)
		p.Err = errors.Join(err, derr)
		return p
	case st == "":
		return notAccepted(err)
	default:
		job.State = st
		return nil
	}
}

// discard removes a pending job's record, with a context of its own: the
// request's may be what ran out.
func (s *Service) discard(ctx context.Context, job *jobs.Job, idemKey string) (jobs.State, error) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	st, err := s.cfg.Store.Discard(dctx, job.ID, job.Owner, idemKey)
	if err != nil {
		s.cfg.Logger.Error("could not discard record of unconfirmed job; it expires unseen", "job", job.ID, "err", err)
	}
	return st, err
}

// notAccepted is the answer when a submission failed before its commit.
func notAccepted(err error) error {
	p := problem.New(http.StatusServiceUnavailable, "enqueue-failed", "Job could not be queued",
		"the queue is unavailable; nothing was accepted, retry later").WithHeader("Retry-After", "2").With("cause", "queue")
	p.Err = err
	return p
}

// ReadyChecks are the api's readiness conditions: Redis answers and a
// signing key is loaded.
func (s *Service) ReadyChecks() []router.Check {
	return []router.Check{
		{Name: "redis", Check: s.cfg.Store.Ping},
		{Name: "signing-key", Check: func(context.Context) error { _, err := s.cfg.Minter.Keys.Signer(); return err }},
	}
}

type plan struct {
	class    string // critical, default or low
	queue    string // the Asynq queue: the class in the type's pool
	timeout  time.Duration
	maxRetry int
	webhook  *webhook.Spec // normalized; nil: none
}

// plan resolves a request's type, queue, timeout and retries. cat is the
// catalog as the body's size was checked against; a type it lacks is
// looked up again (a worker may have announced it a moment ago).
func (s *Service) plan(ctx context.Context, cat *jobs.Catalog, req SubmitRequest) (jobs.TypeSpec, plan, error) {
	if req.Type == "" {
		return jobs.TypeSpec{}, plan{}, problem.New(http.StatusUnprocessableEntity, "unknown-job-type", "Unknown job type",
			"type is required").With("known_types", cat.Names())
	}
	spec, ok := cat.Lookup(req.Type)
	if !ok {
		var err error
		if cat, _, err = s.cfg.Catalog.Types(ctx, req.Type); err != nil {
			return spec, plan{}, catalogUnavailable(err)
		}
		if spec, ok = cat.Lookup(req.Type); !ok {
			return spec, plan{}, &jobs.UnknownTypeError{Type: req.Type, Known: cat.Names()}
		}
	}
	if err := cat.Validate(spec.Name, req.Input); err != nil {
		// The catalog points into the input; the client sent a body.
		if ie, ok := errors.AsType[*jobs.InputError](err); ok {
			err = ie.Under("/input")
		}
		return spec, plan{}, err
	}
	pl := plan{class: "default", maxRetry: spec.MaxRetry}
	if req.Priority != "" {
		q, ok := priorities[req.Priority]
		if !ok {
			return spec, pl, problem.Invalid("priority", "must be high, normal or low")
		}
		pl.class = q
	}
	if req.Queue != "" {
		if _, ok := jobs.Queues()[req.Queue]; !ok {
			return spec, pl, problem.Invalid("queue", "must be critical, default or low")
		}
		if req.Priority != "" && req.Queue != pl.class {
			return spec, pl, problem.Invalid("queue", "contradicts priority; give one of them")
		}
		pl.class = req.Queue
	}
	pl.queue = jobs.QueueName(spec.Pool, pl.class)
	var requested time.Duration
	if req.Timeout != "" {
		d, err := time.ParseDuration(req.Timeout)
		if err != nil {
			return spec, pl, problem.Invalid("timeout", "must be a duration such as \"90s\" or \"5m\"")
		}
		requested = d
	}
	t, err := spec.EffectiveTimeout(requested)
	if err != nil {
		return spec, pl, problem.Invalid("timeout", err.Error())
	}
	pl.timeout = t
	if req.MaxRetry != nil {
		if *req.MaxRetry < 0 || *req.MaxRetry > spec.MaxRetry {
			return spec, pl, problem.Invalid("max_retry", fmt.Sprintf("must be between 0 and %d for %s", spec.MaxRetry, spec.Name))
		}
		pl.maxRetry = *req.MaxRetry
	}
	if req.Webhook != nil {
		wh, err := req.Webhook.Normalize()
		if err != nil {
			// Normalize words its errors "url …" or "events: …".
			msg := err.Error()
			if rest, ok := strings.CutPrefix(msg, "events: "); ok {
				return spec, pl, webhookInvalid("events", rest)
			}
			return spec, pl, webhookInvalid("url", strings.TrimPrefix(msg, "url "))
		}
		pl.webhook = &wh
	}
	return spec, pl, nil
}

// checkWebhook resolves a webhook URL's host, bounded by
// WebhookResolveTimeout, and refuses it (422 at /webhook/url) if it leads
// somewhere webhooks may not go or does not resolve.
func (s *Service) checkWebhook(ctx context.Context, rawURL string) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WebhookResolveTimeout)
	defer cancel()
	err := s.cfg.Webhooks.CheckURL(ctx, rawURL)
	if err == nil {
		return nil
	}
	const allow = "; the operator can allow private webhook addresses with --webhook-allow-private"
	var p *problem.Problem
	refused, isRefused := errors.AsType[*webhook.RefusedError](err)
	switch {
	case isRefused && refused.Addr.IsValid():
		// The address is the client's own, from its DNS or its literal:
		// naming it says why without revealing anything new.
		kind := article(refused.Reason) + " " + refused.Reason + " address"
		if u, perr := url.Parse(rawURL); perr == nil && u.Hostname() == refused.Addr.String() {
			p = webhookInvalid("url", "is "+kind+allow)
		} else {
			p = webhookInvalid("url", fmt.Sprintf("resolves to %s (%s)%s", kind, refused.Addr, allow))
		}
	case errors.Is(err, webhook.ErrNotResolved):
		p = webhookInvalid("url", "does not resolve (no address, or the lookup failed or took too long)")
	case isRefused:
		p = webhookInvalid("url", refused.Reason)
	default:
		p = webhookInvalid("url", "is not a valid URL")
	}
	p.Err = err
	return p
}

// acceptedBefore reports whether this very body was submitted under this
// Idempotency-Key before, so Create will answer for that job instead of
// making one. A retry must get its job even when its webhook URL would be
// refused now (its DNS changed or failed): a 422 would tell the client
// nothing was accepted while the job runs. The URL is the same as when the
// first submission checked it, and delivery checks every connection
// anyway. A claim that cannot be read counts as none: the 422 stands.
func (s *Service) acceptedBefore(ctx context.Context, owner, idemKey, bodyHash string) bool {
	if idemKey == "" {
		return false
	}
	_, hash, err := s.cfg.Store.IdempotencyClaim(ctx, owner, idemKey)
	return err == nil && hash != "" && hash == bodyHash
}

// webhookInvalid is the 422 for one bad member of the webhook object, named
// as problem.Invalid names a field ("webhook.url: …", pointer /webhook/url).
func webhookInvalid(member, detail string) *problem.Problem {
	return problem.New(http.StatusUnprocessableEntity, "invalid-request", "Invalid request", "webhook."+member+": "+detail).
		With("errors", []jobs.FieldError{{Pointer: "/webhook/" + member, Detail: detail}})
}

func article(word string) string {
	if word != "" && strings.ContainsRune("aeiou", rune(word[0])) {
		return "an"
	}
	return "a"
}

// enqueue puts the job on Asynq. The job id is the TaskID, so enqueueing the
// same job twice (a replayed request finding its job unqueued) is harmless.
func (s *Service) enqueue(ctx context.Context, job *jobs.Job, input json.RawMessage, deadline time.Time) error {
	payload, err := json.Marshal(jobs.TaskPayload{Job: job.ID, Owner: job.Owner, Input: input})
	if err != nil {
		return fmt.Errorf("task payload: %w", err)
	}
	_, err = s.cfg.Enqueuer.EnqueueContext(ctx, asynq.NewTask(job.Type, payload),
		asynq.TaskID(job.ID),
		asynq.Queue(job.Queue),
		asynq.MaxRetry(jobs.DeliveryRetries(job.MaxRetry)),
		asynq.Timeout(job.Timeout),
		asynq.Deadline(deadline),
		asynq.Retention(s.cfg.Retention),
	)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil
	}
	return err
}

// replay answers a request whose Idempotency-Key was used before.
func (s *Service) replay(c *gin.Context, p *identity.Principal, r *jobs.IdempotentReplay, req SubmitRequest) {
	if !r.SameBody {
		problem.Abort(c, problem.New(http.StatusUnprocessableEntity, "idempotency-key-reused", "Idempotency-Key reused",
			"this Idempotency-Key was used for a different request body").With("job_id", r.JobID))
		return
	}
	job, err := s.cfg.Store.Get(c, r.JobID)
	if errors.Is(err, jobs.ErrNotFound) && s.underWay(r.JobID) {
		// A claim is made beside its record, not after it, and released
		// when its job is refused: a young claim without a record is a
		// submission still under way (or one that died before writing
		// it, whose claim expires with PendingTTL).
		problem.Abort(c, problem.New(http.StatusConflict, "idempotency-key-in-use", "Request in progress",
			"a request with this Idempotency-Key is still being processed; retry shortly").
			WithHeader("Retry-After", "1").With("job_id", r.JobID))
		return
	}
	if err != nil {
		problem.Abort(c, err)
		return
	}
	deadline, tokenExp := s.lifetimes(job.CreatedAt, job.MaxRetry, job.Timeout)
	switch job.State {
	case jobs.StatePending:
		// The first request failed before its commit (or is still under
		// way): this one completes it, enqueueing (the TaskID makes a
		// second enqueue a no-op) and confirming.
		if err := s.commit(c, job, c.GetHeader("Idempotency-Key"), req.Input, deadline, tokenExp.Sub(s.cfg.Now())); err != nil {
			problem.Abort(c, err)
			return
		}
	case jobs.StateQueued:
		// A record confirmed by an api older than the pending step may
		// lack its task; otherwise the TaskID makes this a no-op.
		if err := s.enqueue(c, job, req.Input, deadline); err != nil {
			problem.Abort(c, problem.New(http.StatusServiceUnavailable, "enqueue-failed", "Job could not be queued",
				"the queue is unavailable; retry later").WithHeader("Retry-After", "2"))
			return
		}
	}
	s.accepted(c, p, job, tokenExp, true)
}

// underWay reports whether job id (a UUIDv7, minted by submit) is young
// enough that its submission may still be under way.
func (s *Service) underWay(id string) bool {
	u, err := uuid.Parse(id)
	if err != nil || u.Version() != 7 {
		return false
	}
	sec, nsec := u.Time().UnixTime()
	return s.cfg.Now().Sub(time.Unix(sec, nsec)) < PendingTTL
}

// lifetimes derives a job's deadline (queue wait plus every attempt's
// timeout) and its token's expiry (deadline plus retention, so the result
// can be fetched until it is deleted, capped at MaxTokenLifetime).
func (s *Service) lifetimes(created time.Time, maxRetry int, timeout time.Duration) (deadline, tokenExp time.Time) {
	deadline = created.Add(s.cfg.MaxQueueWait + time.Duration(maxRetry+1)*timeout)
	tokenExp = deadline.Add(s.cfg.Retention)
	if limit := created.Add(s.cfg.MaxTokenLifetime); tokenExp.After(limit) {
		tokenExp = limit
	}
	return deadline, tokenExp
}

// accepted mints the job token and writes the 202.
func (s *Service) accepted(c *gin.Context, p *identity.Principal, job *jobs.Job, tokenExp time.Time, replayed bool) {
	tok, claims, err := s.cfg.Minter.MintJobAt(job.ID, p.UserID, job.TokenEpoch, tokens.JobScopes, tokenExp)
	if err != nil {
		problem.Abort(c, fmt.Errorf("mint job token: %w", err))
		return
	}
	links := s.links(job.ID)
	c.Header("Location", links.Self)
	c.Header("Retry-After", "1")
	c.Header("Cache-Control", "no-store")
	if replayed {
		c.Header("Idempotent-Replayed", "true")
	}
	resp := SubmitResponse{
		ID: job.ID, Type: job.Type, State: job.State, CreatedAt: job.CreatedAt,
		Token: tok, TokenExpiresAt: claims.Expires(),
		Links: links,
	}
	if job.Webhook != nil {
		resp.Webhook = &WebhookSummary{Events: job.Webhook.Events}
	}
	c.JSON(http.StatusAccepted, resp)
}
