// Package progress serves job status, cancellation and results to holders of
// a job token. It checks only the token's signature and its job claim, with
// public keys; it never looks up a user, a session or an API key, and it must
// not import package identity (a test walks its import graph to keep it so).
//
// Every route verifies the token first (401 on any flaw), then that the token
// names the job in the path and carries the route's scope (403), and only
// then reads the job (404 if its record is gone). A token for job A therefore
// learns nothing about job B, not even whether it exists. Event streams and
// waiting long-polls take a slot under the stream caps (429) before reading
// the job, and end at their token's exp; nothing this service hands out (a
// download link) outlives the token that asked for it. A one-time link is
// served at most once per byte, under a claim kept in the job's Redis slot
// (once.go; the state machine is in package jobs, links.go).
package progress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/claimcheck/claimcheck/api/forwarded"
	"github.com/claimcheck/claimcheck/api/problem"
	"github.com/claimcheck/claimcheck/api/router"
	"github.com/claimcheck/claimcheck/internal/blob"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/metrics"
	"github.com/claimcheck/claimcheck/internal/secret"
	"github.com/claimcheck/claimcheck/tokens"
)

// Canceler is the part of asynq.Inspector that cancellation needs.
type Canceler = jobs.Canceler

// Config wires the service. Every field but Logger and Retention is required.
type Config struct {
	Store    *jobs.Store
	Verifier *tokens.Verifier
	Blobs    blob.Store
	Canceler Canceler
	// RedirectFor, when above 0, has a result download answered with a
	// 307 to a URL signed by the results store, living at most this long
	// and never past the expiry of the token or link that asked (at most
	// MaxRedirectFor). A signed URL cannot be revoked before it expires,
	// so this is off by default; a directory store cannot sign at all,
	// and New refuses it.
	RedirectFor time.Duration
	// Hub delivers job events for the event stream and long-polls; started
	// by the caller. Required.
	Hub *Hub
	// Retention is how long a job cancelled here keeps its record (24h).
	Retention time.Duration
	// Heartbeat is how often an idle event stream gets a comment line, so
	// proxies keep it open (15s).
	Heartbeat time.Duration
	// Links mints download links with this service's own key, and
	// LinkVerifier checks them; both required.
	Links        *tokens.LinkMinter
	LinkVerifier *tokens.LinkVerifier
	// WebhookLinks, when set, also accepts the download links in webhook
	// payloads (issuer delivery.LinkIssuer, keys of kind tokens.KindLink
	// that the deliverers publish); see verifyLink.
	WebhookLinks *tokens.LinkVerifier
	// PublicURL is this service's public base URL, for absolute download
	// links; empty gives links relative to this service.
	PublicURL string
	// Streams caps open event streams and long-polls (see StreamLimits).
	Streams StreamLimits
	// Now is the clock that token expiries are compared with (time.Now):
	// when an event stream ends, when a long-poll stops waiting, and how
	// long a download link may live.
	Now    func() time.Time
	Logger *slog.Logger
}

// Service is the progress/results HTTP service.
type Service struct {
	cfg      Config
	log      *slog.Logger
	records  *recordCache
	logCache *logCache
	caps     *streamCaps
	// renewEvery is how often a one-time link's transfer renews its
	// lease (onceRenew; tests shorten it).
	renewEvery time.Duration
	// stallAfter bounds each write of a one-time link's transfer
	// (onceStall; tests shorten it).
	stallAfter time.Duration
	// onceLinkCap is how many one-time links a job may have
	// (MaxOnceLinks; tests lower it).
	onceLinkCap int
}

// New validates cfg and returns the service.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Verifier == nil || cfg.Blobs == nil || cfg.Canceler == nil || cfg.Hub == nil ||
		cfg.Links == nil || cfg.LinkVerifier == nil {
		return nil, errors.New("progress: Store, Verifier, Blobs, Canceler, Hub, Links and LinkVerifier are required")
	}
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	if cfg.RedirectFor > 0 {
		if _, isDir := blob.DirOf(cfg.Blobs); isDir {
			return nil, errors.New("progress: result redirects need an object store (s3://…): a results directory cannot sign URLs")
		}
		cfg.RedirectFor = min(cfg.RedirectFor, MaxRedirectFor)
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 15 * time.Second
	}
	if cfg.Retention <= 0 {
		cfg.Retention = 24 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	svc := &Service{cfg: cfg, log: cfg.Logger, records: newRecordCache(50_000, 5*time.Second), logCache: newLogCache(logCacheBytes),
		caps: newStreamCaps(cfg.Streams, cfg.Heartbeat), renewEvery: onceRenew, stallAfter: onceStall, onceLinkCap: MaxOnceLinks}
	cfg.Hub.records.Store(svc.records)
	return svc, nil
}

// ReadyChecks are the progress service's readiness conditions: Redis
// answers and the api's public keys are known (a key source that can be
// without them, tokens.StartRemoteKeys', says when it has them).
func (s *Service) ReadyChecks() []router.Check {
	checks := []router.Check{
		{Name: "redis", Check: s.cfg.Store.Ping},
		{Name: "link-key", Check: func(context.Context) error { _, err := s.cfg.Links.Keys.Signer(); return err }},
	}
	if k, ok := s.cfg.Verifier.Keys.(interface{ Ready(context.Context) error }); ok {
		checks = append(checks, router.Check{Name: "jwks", Check: k.Ready})
	}
	return checks
}

// Close ends the service's event streams and its subscription; call it when
// the server has shut down.
func (s *Service) Close() { s.cfg.Hub.Close() }

// Watchers counts the event streams and long-polls waiting in this process.
func (s *Service) Watchers() int { return s.cfg.Hub.Watchers() }

// Register adds the service's routes to r.
func (s *Service) Register(r gin.IRouter) {
	r.GET("/v1/jobs/:id", s.authorize(tokens.ScopeJobRead), s.get)
	r.GET("/v1/jobs/:id/events", s.authorizeQuery(tokens.ScopeJobRead), s.events)
	r.GET("/v1/jobs/:id/logs", s.authorize(tokens.ScopeJobRead), s.logs)
	r.GET("/v1/jobs/:id/deliveries", s.authorize(tokens.ScopeJobRead), s.deliveries)
	r.POST("/v1/jobs/:id/cancel", s.authorize(tokens.ScopeJobCancel), s.cancel)
	r.GET("/v1/jobs/:id/result", s.authorize(tokens.ScopeJobResult), s.result)
	r.POST("/v1/jobs/:id/links", s.authorize(tokens.ScopeJobResult), s.createLink)
	r.GET("/v1/jobs/:id/receipt", s.authorize(tokens.ScopeJobResult), s.receipt)
	r.GET("/v1/results/:id", s.download)
	r.HEAD("/v1/results/:id", s.download)
}

// authorize verifies the bearer job token and checks it names the path's job
// with the given scope.
func (s *Service) authorize(scope string) gin.HandlerFunc { return s.authorizeFrom(scope, false) }

// authorizeQuery is authorize that also takes the token from ?token=, for
// the event stream only: a browser's EventSource cannot set headers. The
// access log never records query strings, and no error repeats a token.
func (s *Service) authorizeQuery(scope string) gin.HandlerFunc { return s.authorizeFrom(scope, true) }

func (s *Service) authorizeFrom(scope string, query bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		tok, ok := secret.FromAuthorization(c.GetHeader("Authorization"))
		if !ok && query {
			if q := c.Query("token"); q != "" {
				tok, ok = secret.Secret(q), true
			}
		}
		if !ok {
			problem.Abort(c, problem.Unauthorized("a job token is required: Authorization: Bearer <token>",
				`Bearer realm="claimcheck"`))
			return
		}
		claims, err := s.cfg.Verifier.VerifyJob(tok.Reveal())
		metrics.TokenVerifications.WithLabelValues("job", tokens.Reason(err)).Inc()
		if err == nil {
			err = claims.Authorize(c.Param("id"), scope)
		}
		if err != nil {
			problem.Abort(c, err)
			return
		}
		c.Set(claimsKey, claims)
		c.Next()
	}
}

const claimsKey = "claimcheck.job-claims"

// job reads the path's job and refuses the request's token if the job's
// tokens were revoked after it was minted: the record is read anyway, so
// per-job revocation costs no extra round trip.
func (s *Service) job(c *gin.Context) (*jobs.Job, error) {
	id := c.Param("id")
	j, gen := s.records.get(id)
	if j == nil {
		// Only a job whose changes the hub hears of may be cached.
		live := s.cfg.Hub.hold(id, time.Now().Add(s.records.ttl))
		var err error
		if j, err = s.cfg.Store.Get(c, id); err != nil {
			return nil, err
		}
		if live {
			s.records.fill(id, gen, j)
		}
	}
	if err := j.CheckEpoch(jobClaims(c).Epoch); err != nil {
		return nil, err
	}
	return j, nil
}

func jobClaims(c *gin.Context) *tokens.JobClaims {
	v, _ := c.Get(claimsKey)
	cl, _ := v.(*tokens.JobClaims)
	if cl == nil {
		return &tokens.JobClaims{}
	}
	return cl
}

// watch takes a slot under the stream caps for the request's token, job
// and client address, and starts watching the job; the returned stop ends
// both. A refusal is the 429 to answer.
func (s *Service) watch(c *gin.Context) (w *Watcher, stop func(), refused error) {
	return s.watchJob(c, false)
}

// watchJob is watch that, with logs, also wakes the watcher when the job's
// log grows (event streams, not long-polls).
func (s *Service) watchJob(c *gin.Context, logs bool) (w *Watcher, stop func(), refused error) {
	cl := jobClaims(c)
	release, err := s.caps.acquire(cl.ID, c.Param("id"), forwarded.AddressKey(c.ClientIP()))
	if err != nil {
		return nil, nil, err
	}
	w = s.cfg.Hub.watch(c.Request.Context(), c.Param("id"), logs)
	return w, func() { w.Close(); release() }, nil
}

// get serves a job's status. With If-None-Match naming the current ETag and
// Prefer: wait=N (N ≤ 60), it is a long-poll: it answers as soon as the job
// changes, or with 304 after N seconds.
//
// A long-poll waits no later than its token's exp, and one whose wait
// reaches exp answers 401 (token expired), never data: like an event
// stream, it must not outlive its token. (A plain request, or a download
// already under way, is judged once, when it starts.) A waiting long-poll
// counts under the stream caps.
func (s *Service) get(c *gin.Context) {
	match := c.GetHeader("If-None-Match")
	wait := preferWait(c.GetHeader("Prefer"))
	exp := jobClaims(c).Expires()
	if left := exp.Sub(s.cfg.Now()); wait > left {
		wait = left // zero or less: answer at once, as a plain request
	}
	var w *Watcher
	if match != "" && wait > 0 {
		// Watch before reading, so a change between the read and the wait
		// is not missed.
		var stop func()
		var err error
		if w, stop, err = s.watch(c); err != nil {
			problem.Abort(c, err)
			return
		}
		defer stop()
	}
	j, err := s.job(c)
	if err != nil {
		problem.Abort(c, err)
		return
	}
	if w != nil {
		c.Header("Preference-Applied", "wait="+strconv.Itoa(int(wait/time.Second)))
		if etagMatch(match, j.ETag()) && !j.State.Final() {
			timer := time.NewTimer(wait)
			select {
			case <-w.Ready():
			case <-timer.C:
			case <-c.Request.Context().Done():
			}
			timer.Stop()
			if !s.cfg.Now().Before(exp) {
				problem.Abort(c, tokens.ErrExpired)
				return
			}
			if j, err = s.job(c); err != nil {
				problem.Abort(c, err)
				return
			}
		}
	}
	etag := j.ETag()
	c.Header("ETag", etag)
	c.Header("Cache-Control", "private, no-cache")
	if match != "" && etagMatch(match, etag) {
		c.Status(http.StatusNotModified)
		return
	}
	if !j.State.Final() {
		c.Header("Retry-After", "1")
	}
	c.JSON(http.StatusOK, j)
}

// maxWait caps Prefer: wait.
const maxWait = 60 * time.Second

// preferWait reads wait=N from a Prefer header (RFC 7240), capped at
// maxWait; zero when absent or malformed.
func preferWait(h string) time.Duration {
	for _, pref := range strings.Split(h, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(pref), "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), "wait") {
			continue
		}
		n, err := strconv.ParseInt(strings.Trim(strings.TrimSpace(v), `"`), 10, 64)
		if errors.Is(err, strconv.ErrRange) && n > 0 {
			return maxWait // more seconds than an int64 holds: capped like any other
		}
		if err != nil || n <= 0 {
			return 0
		}
		// Capped before it is multiplied: N seconds overflow a Duration
		// from N ≈ 9.2e9 on (a negative or a sub-second wait).
		return time.Duration(min(n, int64(maxWait/time.Second))) * time.Second
	}
	return 0
}

// etagMatch implements If-None-Match's weak comparison over a list.
func etagMatch(header, etag string) bool {
	for header != "" {
		var tag string
		tag, header = nextETag(header)
		if tag == "*" || tag == etag || tag == "W/"+etag {
			return true
		}
	}
	return false
}

func nextETag(s string) (tag, rest string) {
	for len(s) > 0 && (s[0] == ' ' || s[0] == ',' || s[0] == '\t') {
		s = s[1:]
	}
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			return s[:i], s[i+1:]
		}
	}
	return s, ""
}

func (s *Service) cancel(c *gin.Context) {
	id := c.Param("id")
	j, err := jobs.CancelJob(c, s.cfg.Store, s.cfg.Canceler, id, jobClaims(c).Epoch, s.cfg.Retention)
	if err != nil {
		problem.Abort(c, err)
		return
	}
	c.Header("ETag", j.ETag())
	if j.State == jobs.StateCanceled {
		c.JSON(http.StatusOK, j)
		return
	}
	// Cancellation is under way; the job reaches canceled within a second.
	c.Header("Location", "/v1/jobs/"+id)
	c.Header("Retry-After", "1")
	c.JSON(http.StatusAccepted, j)
}

func (s *Service) result(c *gin.Context) {
	j, err := s.succeeded(c)
	if err != nil {
		problem.Abort(c, err)
		return
	}
	s.serveResult(c, j, "attachment", "", "private, max-age=3600, immutable", jobClaims(c).Expires())
}

// succeeded reads the path's job (checking the token's epoch) and insists
// it has succeeded.
func (s *Service) succeeded(c *gin.Context) (*jobs.Job, error) {
	j, err := s.job(c)
	if err != nil {
		return nil, err
	}
	if j.State != jobs.StateSucceeded {
		return nil, problem.New(http.StatusConflict, "not-finished", "Job has not succeeded",
			fmt.Sprintf("job %s is %s; its result exists only once it has succeeded", j.ID, j.State)).
			With("state", j.State)
	}
	return j, nil
}

// serveResult streams a succeeded job's result with Range, If-Range,
// If-None-Match and HEAD support (http.ServeContent), or redirects to the
// results store (redirect.go). notAfter is when the token or link that
// asked expires.
func (s *Service) serveResult(c *gin.Context, j *jobs.Job, disposition, filename, cacheControl string, notAfter time.Time) {
	if j.Result == nil {
		c.Status(http.StatusNoContent)
		return
	}
	if filename == "" {
		filename = j.ID + extension(j.Result.ContentType)
	}
	if s.redirect(c, j, disposition, filename, notAfter) {
		return
	}
	f, err := s.cfg.Blobs.Open(c.Request.Context(), j.ID)
	if err != nil {
		problem.Abort(c, err)
		return
	}
	defer f.Close()
	h := c.Writer.Header()
	h.Set("Content-Type", j.Result.ContentType)
	h.Set("ETag", `"sha256:`+j.Result.SHA256+`"`)
	h.Set("Cache-Control", cacheControl)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Disposition", mime.FormatMediaType(disposition, map[string]string{"filename": filename}))
	var mod time.Time
	if j.FinishedAt != nil {
		mod = *j.FinishedAt
	}
	if rng := dropEmptySuffixes(c.Request.Header.Get("Range")); rng != "" {
		c.Request.Header.Set("Range", rng)
	}
	if off, n, ok := singleRange(c.Request.Header.Get("Range"), f.Size()); ok {
		f.Expect(off, n)
	}
	http.ServeContent(c.Writer, c.Request, "", mod, f)
}

// dropEmptySuffixes takes the zero-length suffix ranges ("-0") out of a
// Range header before http.ServeContent sees it: it answers one with a 206
// whose Content-Range ("bytes 1000-999/1000") names no bytes, which no
// client can parse (FuzzResultRange found it). RFC 9110 calls such a range
// unsatisfiable, so a header of nothing else becomes one that ServeContent
// itself answers 416 (if If-Range lets the range apply at all). The result
// is "" when the header needs no change.
func dropEmptySuffixes(h string) string {
	specs, found := strings.CutPrefix(h, "bytes=")
	if !found || !strings.Contains(specs, "-") {
		return ""
	}
	var kept []string
	dropped := false
	for _, spec := range strings.Split(specs, ",") {
		if end, suffix := strings.CutPrefix(strings.TrimSpace(spec), "-"); suffix {
			if n, err := strconv.ParseInt(end, 10, 64); err == nil && n == 0 {
				dropped = true
				continue
			}
		}
		if strings.TrimSpace(spec) != "" {
			kept = append(kept, spec)
		}
	}
	switch {
	case !dropped:
		return ""
	case len(kept) == 0:
		return "bytes=9223372036854775807-" // starts after any result: 416
	}
	return "bytes=" + strings.Join(kept, ",")
}

func extension(contentType string) string {
	switch contentType {
	case "image/png":
		return ".png"
	case "application/json":
		return ".json"
	case "text/plain", "text/plain; charset=utf-8":
		return ".txt"
	}
	if exts, _ := mime.ExtensionsByType(contentType); len(exts) > 0 {
		return exts[0]
	}
	return ".bin"
}
