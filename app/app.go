// Package app wires claimcheck's parts into runnable services: it opens
// Redis (or an embedded one), loads keys, and builds the api, progress and
// worker services and the all-in-one dev handler. cmd/claimcheck parses
// flags into a Config and calls it; the end-to-end tests call it the same
// way, so what they test is what runs.
package app

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/api"
	"github.com/claimcheck/claimcheck/api/account"
	"github.com/claimcheck/claimcheck/api/authn"
	"github.com/claimcheck/claimcheck/api/enqueue"
	"github.com/claimcheck/claimcheck/api/forwarded"
	"github.com/claimcheck/claimcheck/api/gateway"
	"github.com/claimcheck/claimcheck/api/problem"
	"github.com/claimcheck/claimcheck/api/progress"
	"github.com/claimcheck/claimcheck/api/ratelimit"
	"github.com/claimcheck/claimcheck/api/router"
	"github.com/claimcheck/claimcheck/internal/blob"
	"github.com/claimcheck/claimcheck/internal/delivery"
	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/registry"
	"github.com/claimcheck/claimcheck/internal/webhook"
	"github.com/claimcheck/claimcheck/tokens"
	"github.com/claimcheck/claimcheck/tokens/pubkeys"
	"github.com/claimcheck/claimcheck/web"
	"github.com/claimcheck/claimcheck/worker"
	"github.com/claimcheck/claimcheck/worker/builtin"
)

// Config is everything the services read from flags and the environment.
type Config struct {
	// Addr is the listen address (127.0.0.1:8080).
	Addr string
	// MetricsAddr, when set, is where the operations server listens:
	// /metrics, /healthz and /readyz (see ServeWithOps). Empty means no
	// metrics at all; the public Addr never serves them.
	MetricsAddr string
	// DataDir holds keys and, by default, results (./.claimcheck).
	DataDir string
	// RedisURL is a redis:// URL; empty means an embedded in-memory Redis
	// (dev only).
	RedisURL string
	// JobKeyDir holds the api's job-token signing keys (DataDir/keys/jobs).
	JobKeyDir string
	// GatewayKeyDir holds the gateway's internal-token signing keys
	// (DataDir/keys/gateway): separate from the job keys, so neither
	// service can mint the other's tokens.
	GatewayKeyDir string
	// LinkKeyDir holds the progress service's download-link signing keys
	// (DataDir/keys/progress); every progress instance must share it.
	LinkKeyDir string
	// WorkerKeyDir holds the worker fleet's receipt signing keys
	// (DataDir/keys/workers); every worker must share it. Workers publish
	// its public keys in Redis (package pubkeys) and the api lists them in
	// its JWKS.
	WorkerKeyDir string
	// WebhookKeyDir holds the webhook deliverer's Standard Webhooks
	// signing keys (DataDir/keys/webhooks), and WebhookLinkKeyDir the keys
	// it signs the download links in completed payloads with
	// (DataDir/keys/webhook-links): one key, one purpose. Both are
	// published like the worker keys.
	WebhookKeyDir     string
	WebhookLinkKeyDir string
	// WebhookAllowPrivate lets webhook URLs lead to loopback, private,
	// link-local and other internal addresses (webhook.Guard), which are
	// refused at submit and at connect time by default. For tests and for
	// receivers on the operator's own network.
	WebhookAllowPrivate bool
	// Webhooks tunes the webhook deliverer a worker process (or dev) runs
	// beside its job server (concurrency, retry delay, timeouts, polls).
	// Its key directories, progress URL and address checks come from the
	// fields above and Webhooks' argument.
	Webhooks worker.WebhookConfig
	// GatewayKeys, when set, puts the api in trust-gateway mode: it
	// authenticates people only by the gateway's internal tokens, verified
	// with these keys, and no longer accepts sessions or API keys directly.
	GatewayKeys tokens.KeySource
	// ResultsDir is the blob store directory (DataDir/results), used
	// when ResultsURL is empty.
	ResultsDir string
	// ResultsURL is the results store (blob.Open): file:///dir or
	// s3://bucket?endpoint=…&region=…; empty means ResultsDir. The
	// workers and the progress service must name the same one.
	ResultsURL string
	// ResultsRedirect has the progress service answer result downloads
	// with a 307 to a URL the results store signed, valid for at most
	// progress.MaxRedirectFor and never past the asking token or link
	// (progress.Config.RedirectFor). Needs an object store.
	ResultsRedirect bool
	// ProgressURL is the progress service's public base URL, for links
	// the api hands out; empty means same origin.
	ProgressURL string
	// JWKSURL, for a separate progress process, is where it fetches the
	// api's public keys; empty means it reads JobKeyDir instead.
	JWKSURL string
	// Retention is how long finished jobs and results are kept (24h).
	Retention time.Duration
	// EventHeartbeat is how often an idle event stream gets a keep-alive
	// comment (15s).
	EventHeartbeat time.Duration
	// Streams caps the progress service's open event streams and
	// long-polls per token, job and client address (progress.StreamLimits:
	// 4, 32, 64; negative means no cap).
	Streams progress.StreamLimits
	// Now is the progress service's clock, for token and link expiry
	// (time.Now); tests move it instead of waiting.
	Now func() time.Time
	// Worker tunes the worker (see worker.Config).
	Worker worker.Config
	// Types are the job types a worker (or dev) runs (builtin.Types()).
	// The api does not read them: it learns types from what workers
	// announce (package internal/registry).
	Types []worker.Type
	// Registry tunes the api's view of the live type registry (its clock
	// and read intervals; registry.Config).
	Registry registry.Config
	// Sessions sets session lifetimes (see identity.SessionConfig).
	Sessions identity.SessionConfig
	// Argon2 overrides the password hashing cost (identity.DefaultArgon2).
	Argon2 *identity.Argon2Params
	// Limits are the request rate limits (ratelimit.DefaultLimits()).
	Limits *ratelimit.Limits
	// MaxActiveJobs caps each user's queued and running jobs (100; a
	// negative value means no cap).
	MaxActiveJobs int
	// PriorityForAll lets every credential submit at high priority; by
	// default it needs the jobs:priority scope (enqueue.Config.PriorityForAll).
	PriorityForAll bool
	// TrustedProxies are the addresses or CIDRs of the proxies in front of
	// this process (none). Only their forwarding headers are believed: the
	// client address (X-Forwarded-For, for rate limits), the host and
	// scheme the client used (X-Forwarded-Host/-Proto, for the CSRF check
	// and the Secure cookie) and forward-auth's method and URI. Everyone
	// else's are deleted on arrival (package forwarded).
	TrustedProxies []string
	// Logger receives logs (slog.Default()).
	Logger *slog.Logger
}

// WithDefaults fills the zero fields.
func (c Config) WithDefaults() Config {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:8080"
	}
	if c.DataDir == "" {
		c.DataDir = ".claimcheck"
	}
	if c.JobKeyDir == "" {
		c.JobKeyDir = filepath.Join(c.DataDir, "keys", "jobs")
	}
	if c.LinkKeyDir == "" {
		c.LinkKeyDir = filepath.Join(c.DataDir, "keys", "progress")
	}
	if c.GatewayKeyDir == "" {
		c.GatewayKeyDir = filepath.Join(c.DataDir, "keys", "gateway")
	}
	if c.WorkerKeyDir == "" {
		c.WorkerKeyDir = filepath.Join(c.DataDir, "keys", "workers")
	}
	if c.WebhookKeyDir == "" {
		c.WebhookKeyDir = filepath.Join(c.DataDir, "keys", "webhooks")
	}
	if c.WebhookLinkKeyDir == "" {
		c.WebhookLinkKeyDir = filepath.Join(c.DataDir, "keys", "webhook-links")
	}
	if c.ResultsDir == "" {
		c.ResultsDir = filepath.Join(c.DataDir, "results")
	}
	if c.Retention <= 0 {
		c.Retention = 24 * time.Hour
	}
	if c.Worker.Retention <= 0 {
		c.Worker.Retention = c.Retention
	}
	if c.Types == nil {
		c.Types = builtin.Types()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxActiveJobs == 0 {
		c.MaxActiveJobs = 100
	}
	if c.Worker.Logger == nil {
		c.Worker.Logger = c.Logger
	}
	return c
}

func (c Config) limits() ratelimit.Limits {
	if c.Limits == nil {
		return ratelimit.DefaultLimits()
	}
	return *c.Limits
}

// results is where results are kept: ResultsURL, else ResultsDir.
func (c Config) results() string {
	if c.ResultsURL != "" {
		return c.ResultsURL
	}
	return c.ResultsDir
}

// PublishedJWKS is the api's JWKS document: its own job-token keys and the
// public keys the worker fleet and the webhook deliverer published in Redis
// (package pubkeys), each tagged with its kind so that every verifier
// takes only its own (tokens.ParseJWKSOf).
func PublishedJWKS(rdb redis.UniversalClient, jobKeys *tokens.KeySet) func() tokens.JWKS {
	published := []*pubkeys.Source{
		pubkeys.NewSource(rdb, tokens.KindReceipt),
		pubkeys.NewSource(rdb, tokens.KindWebhook),
		pubkeys.NewSource(rdb, tokens.KindLink),
	}
	return func() tokens.JWKS {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		docs := []tokens.JWKS{jobKeys.JWKSAs(tokens.KindJob)}
		for _, src := range published {
			docs = append(docs, src.JWKS(ctx))
		}
		return tokens.MergeJWKS(docs...)
	}
}

// Identity builds the user, session and API-key directory.
func Identity(cfg Config, rdb redis.UniversalClient) *identity.Directory {
	return identity.NewDirectory(rdb, cfg.Sessions, cfg.Argon2, nil)
}

// API builds the enqueue API's routes, authenticating people with auth.
// live, when not nil, confirms callers' credentials before job tokens are
// re-issued (a trust-gateway api; see enqueue.Config.Live).
func API(cfg Config, rdb redis.UniversalClient, auth authn.Authenticator, live authn.CredentialChecker, keys *tokens.KeySet) (*enqueue.Service, error) {
	rc := cfg.Registry
	if rc.Logger == nil {
		rc.Logger = cfg.Logger
	}
	return enqueue.New(enqueue.Config{
		Catalog:        registry.NewReader(rdb, rc),
		Store:          jobs.NewStore(rdb, nil),
		Enqueuer:       asynq.NewClientFromRedisClient(rdb),
		Auth:           auth,
		Minter:         &tokens.Minter{Keys: keys},
		JWKS:           PublishedJWKS(rdb, keys),
		ProgressURL:    cfg.ProgressURL,
		Retention:      cfg.Retention,
		Logger:         cfg.Logger,
		Limits:         ratelimit.New(rdb, cfg.limits()),
		MaxActiveJobs:  max(cfg.MaxActiveJobs, 0),
		PriorityForAll: cfg.PriorityForAll,
		OwnerGate:      identity.BlockedFlagKey,
		Live:           live,
		Webhooks:       &webhook.Guard{AllowPrivate: cfg.WebhookAllowPrivate},
	})
}

// Progress builds the progress service's routes, verifying with keys.
func Progress(cfg Config, rdb redis.UniversalClient, keys tokens.KeySource) (*progress.Service, error) {
	blobs, err := blob.Open(context.Background(), cfg.results())
	if err != nil {
		return nil, err
	}
	var redirectFor time.Duration
	if cfg.ResultsRedirect {
		redirectFor = progress.MaxRedirectFor
	}
	linkKeys, _, err := tokens.EnsureDir(cfg.LinkKeyDir)
	if err != nil {
		return nil, err
	}
	hub := progress.NewHub(rdb, cfg.Logger)
	hub.Start(nil) // ends when rdb is closed
	return progress.New(progress.Config{
		Hub:          hub,
		Links:        &tokens.LinkMinter{Keys: linkKeys, Now: cfg.Now},
		LinkVerifier: &tokens.LinkVerifier{Keys: linkKeys, Now: cfg.Now},
		// The deliverer mints DefaultLinkTTL links only: a longer one is forged.
		WebhookLinks: &tokens.LinkVerifier{Keys: pubkeys.NewSource(rdb, tokens.KindLink), Issuer: delivery.LinkIssuer, Now: cfg.Now,
			MaxLifetime: delivery.DefaultLinkTTL},
		PublicURL:   cfg.ProgressURL,
		Heartbeat:   cfg.EventHeartbeat,
		Streams:     cfg.Streams,
		Now:         cfg.Now,
		Store:       jobs.NewStore(rdb, nil),
		Verifier:    &tokens.Verifier{Keys: keys, Now: cfg.Now},
		Blobs:       blobs,
		RedirectFor: redirectFor,
		Canceler:    asynq.NewInspectorFromRedisClient(rdb),
		Retention:   cfg.Retention,
		Logger:      cfg.Logger,
	})
}

// Worker builds a worker; call Start on it. Unless cfg.Worker names its
// receipt keys, it signs result receipts with the keys in cfg.WorkerKeyDir
// (created on first use), which Start publishes for the api's JWKS. Those
// are the only keys a worker holds. A Config with no WorkerKeyDir (one not
// through WithDefaults) makes a worker that signs no receipts.
func Worker(cfg Config, rdb redis.UniversalClient) (*worker.Server, error) {
	wc := cfg.Worker
	wc.ResultsURL = cfg.results()
	if wc.ReceiptKeys == nil && cfg.WorkerKeyDir != "" {
		ks, err := worker.LoadReceiptKeys(cfg.WorkerKeyDir)
		if err != nil {
			return nil, err
		}
		wc.ReceiptKeys = ks
	}
	return worker.New(wc, rdb, cfg.Types...)
}

// Webhooks builds the webhook deliverer of a worker process (or dev)
// from cfg.Webhooks: its signing keys in WebhookKeyDir, its link keys in
// WebhookLinkKeyDir, links to the progress service at progressURL, and
// connections checked by webhook.Guard unless WebhookAllowPrivate. Call
// Start on it (which publishes its public keys).
func Webhooks(cfg Config, rdb redis.UniversalClient, progressURL string) (*worker.Webhooks, error) {
	wc := cfg.Webhooks
	wc.KeyDir, wc.LinkKeyDir, wc.ProgressURL, wc.AllowPrivate = cfg.WebhookKeyDir, cfg.WebhookLinkKeyDir, progressURL, cfg.WebhookAllowPrivate
	if wc.Logger == nil {
		wc.Logger = cfg.Logger
	}
	return worker.NewWebhooks(wc, rdb)
}

// AndReceiptKeys is reload (ReloadKeys) followed by reloading the worker's
// receipt keys from cfg.WorkerKeyDir (worker.ReloadReceiptKeys: published
// before they sign, so a rotated key is in the api's JWKS before any
// receipt names it). Published keys are never withdrawn: what an old key
// signed still verifies. ks nil (a worker without receipts) reloads
// nothing more.
func AndReceiptKeys(reload func(), cfg Config, rdb redis.UniversalClient, ks *tokens.KeySet) func() {
	return func() {
		reload()
		if ks == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := worker.ReloadReceiptKeys(ctx, rdb, cfg.WorkerKeyDir, ks); err != nil {
			cfg.Logger.Error("receipt keys not reloaded", "dir", cfg.WorkerKeyDir, "err", err)
		}
	}
}

// CancelUserJobs cancels every job of user that has not ended (`users block
// --cancel-jobs`) and returns how many it cancelled. A job that ends on its
// own meanwhile is not counted; a submission still under way is refused
// (jobs.CancelOwnerJobs), so none slips past the block.
func CancelUserJobs(ctx context.Context, cfg Config, rdb redis.UniversalClient, user string) (int, error) {
	return jobs.CancelOwnerJobs(ctx, jobs.NewStore(rdb, nil), asynq.NewInspectorFromRedisClient(rdb), user, cfg.Retention)
}

// RevokeUserJobTokens raises the token epoch of every job of user still on
// record, finished or not (`users block --revoke-job-tokens`), so every job
// token and download link handed out for them stops working, including those
// a thief re-issued with a stolen session or internal token. It returns how
// many jobs it covered. It walks the user's listing and then their active
// set, which also holds submissions admitted before the block but not yet
// confirmed (not listed): the token such a submission is answered with
// carries the epoch before this raise and is refused. Each job's raise is
// a script on its own record, in its own slot.
func RevokeUserJobTokens(ctx context.Context, rdb redis.UniversalClient, user string) (int, error) {
	store := jobs.NewStore(rdb, nil)
	seen := map[string]bool{}
	revoke := func(id string) error {
		if seen[id] {
			return nil
		}
		seen[id] = true
		_, err := store.RevokeTokens(ctx, id)
		if errors.Is(err, jobs.ErrNotFound) { // expired meanwhile
			delete(seen, id)
			return nil
		}
		return err
	}
	cursor := ""
	for {
		page, err := store.List(ctx, user, cursor, 100, "")
		if err != nil {
			return len(seen), err
		}
		for _, j := range page.Jobs {
			if err := revoke(j.ID); err != nil {
				return len(seen), err
			}
		}
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	ids, err := store.ActiveOrPending(ctx, user)
	if err != nil {
		return len(seen), err
	}
	for _, id := range ids {
		if err := revoke(id); err != nil {
			return len(seen), err
		}
	}
	return len(seen), nil
}

// ProgressKeys returns the key source a separate progress process verifies
// with: the JWKS URL when set, else the public keys in JobKeyDir. A JWKS
// that is not reachable yet does not stop the start: the source keeps
// fetching it until ctx ends, and meanwhile the service is not ready and
// answers token requests 503 (tokens.StartRemoteKeys).
func ProgressKeys(ctx context.Context, cfg Config) (tokens.KeySource, error) {
	if cfg.JWKSURL != "" {
		return tokens.StartRemoteKeys(ctx, cfg.JWKSURL, nil, cfg.Logger), nil
	}
	return tokens.LoadDir(cfg.JobKeyDir)
}

// trustedProxies parses cfg.TrustedProxies. A list that does not parse
// trusts nobody (cmd/claimcheck refuses it before anything starts).
func trustedProxies(cfg Config) *forwarded.Proxies {
	p, err := forwarded.Parse(cfg.TrustedProxies)
	if err != nil {
		cfg.Logger.Error("trusting no proxy", "err", err)
		return nil
	}
	return p
}

// Handler returns an engine with the given services registered, behind the
// filter that drops forwarding headers from anyone but a trusted proxy.
func Handler(cfg Config, services ...service) http.Handler {
	r := router.New(cfg.Logger)
	trusted := trustedProxies(cfg)
	if trusted != nil && len(cfg.TrustedProxies) > 0 {
		if err := r.SetTrustedProxies(cfg.TrustedProxies); err != nil {
			cfg.Logger.Error("ignoring trusted proxies", "err", err)
		}
	}
	var checks []router.Check
	for _, s := range services {
		s.Register(r)
		if f, ok := s.(interface{ Fallback(*gin.Engine) }); ok {
			f.Fallback(r)
		}
		if rc, ok := s.(interface{ ReadyChecks() []router.Check }); ok {
			checks = append(checks, rc.ReadyChecks()...)
		}
	}
	router.Ready(r, checks...)
	return trusted.Handler(r)
}

type service = interface{ Register(gin.IRouter) }

// apiServices builds the api's services on dir. People authenticate with
// their sessions and keys, or, with cfg.GatewayKeys, with the gateway's
// internal tokens only.
func apiServices(cfg Config, rdb redis.UniversalClient, dir *identity.Directory, keys *tokens.KeySet) ([]service, error) {
	var auth authn.Authenticator = dir
	var live authn.CredentialChecker // dir looks every credential up itself
	if cfg.GatewayKeys != nil {
		auth = gateway.TokenAuthenticator{Verifier: &tokens.AccessVerifier{Keys: cfg.GatewayKeys}}
		live = dir
	}
	api, err := API(cfg, rdb, auth, live, keys)
	if err != nil {
		return nil, err
	}
	acct, err := account.New(dir, auth, ratelimit.New(rdb, cfg.limits()))
	if err != nil {
		return nil, err
	}
	return []service{api, acct}, nil
}

// Gateway builds the exchange service: it authenticates with dir and signs
// internal tokens with gwKeys. Revocations made through dir purge its cache
// at once; call WatchRevocations for those made by other processes.
func Gateway(cfg Config, rdb redis.UniversalClient, dir *identity.Directory, gwKeys *tokens.KeySet) (*gateway.Service, error) {
	gw, err := gateway.New(gateway.Config{
		Auth:           dir,
		Minter:         &tokens.AccessMinter{Keys: gwKeys},
		Limits:         ratelimit.New(rdb, cfg.limits()),
		TrustedProxies: trustedProxies(cfg),
		Logger:         cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	dir.Revocations.OnRevoke(gw.Purge)
	return gw, nil
}

// WatchRevocations runs until ctx ends, passing every revocation announced
// on Redis to gw (which may be nil) and, when everything must be forgotten
// (a key rotation, or a reconnect that may have lost messages), calling
// reload first, so a rotated or retired key takes effect without a restart.
// ready, if not nil, is closed once subscribed.
func WatchRevocations(ctx context.Context, cfg Config, rdb redis.UniversalClient, gw *gateway.Service, reload func(), ready chan<- struct{}) {
	err := identity.ListenRevocations(ctx, rdb, func(rev identity.Revocation) {
		if rev.Kind == identity.RevokedAll && reload != nil {
			reload()
		}
		if gw != nil {
			gw.Purge(rev)
		}
	}, ready)
	if err != nil {
		cfg.Logger.Error("revocation listener stopped", "err", err)
	}
}

// ReloadKeys returns a reload for WatchRevocations: each key set is loaded
// again from its directory, each JWKS source fetched again.
func ReloadKeys(ctx context.Context, cfg Config, dirs map[string]*tokens.KeySet, remotes ...tokens.KeySource) func() {
	return func() {
		for dir, ks := range dirs {
			if err := tokens.ReloadDir(ks, dir); err != nil {
				cfg.Logger.Error("reload keys", "dir", dir, "err", err)
			}
		}
		for _, src := range remotes {
			if r, ok := src.(*tokens.RemoteKeys); ok {
				if err := r.Reload(ctx); err != nil {
					cfg.Logger.Error("reload keys", "err", err)
				}
			}
		}
	}
}

// OpsHandler is every process's small operations server, for
// --metrics-addr (router.Ops: /healthz, /readyz, /metrics), with extra
// readiness checks (an embedded worker's, worker.Server.ReadyChecks); a
// worker process serves the same one.
func OpsHandler(cfg Config, rdb redis.UniversalClient, extra ...router.Check) http.Handler {
	return router.Ops(cfg.Logger, rdb, extra...)
}

// GatewayHandler is the gateway process's handler: the exchange and JWKS,
// and, when upstream is not nil, a reverse proxy to it for every other path.
//
// With progress too, the progress service's routes (gateway.ProgressRoute)
// go there untouched, so one origin serves everything — what the web UI
// needs. Without it they go to upstream under the same rule: only a job
// token or download link is forwarded, and only on those routes (see
// gateway.Service.Proxy); a client's at+jwt never is.
func GatewayHandler(cfg Config, gw *gateway.Service, upstream, progress *url.URL) http.Handler {
	if upstream == nil {
		return Handler(cfg, gw)
	}
	edge := edgeProxy{api: gw.Proxy(upstream)}
	if progress != nil {
		edge.progress = gw.PassThrough(progress)
	}
	// The gateway is the edge: before the exchange's CSRF check or the
	// proxy sees a request, forwarding headers from anyone but a trusted
	// proxy are gone (Handler), and every request, proxied or refused, is
	// logged once with a request id by the same router as the exchange.
	return Handler(cfg, gw, edge)
}

// edgeProxy is the gateway's reverse proxy as the fallback of its router:
// every path the gateway does not serve itself goes to the progress
// service (its routes, gateway.ProgressRoute) or the api.
type edgeProxy struct {
	api, progress http.Handler
}

var errUncleanPath = problem.BadRequest("the path is not in canonical form (no //, . or .. segments)")

// Register adds no routes: the proxy is the engine's fallback (Fallback).
func (edgeProxy) Register(gin.IRouter) {}

// Fallback makes the proxy the engine's NoRoute handler, so it runs behind
// the router's recovery, request id and access log.
func (e edgeProxy) Fallback(engine *gin.Engine) {
	engine.NoRoute(func(c *gin.Context) {
		p := c.Request.URL.Path
		switch {
		case p == "" || path.Clean(p) != p && path.Clean(p)+"/" != p:
			// Routing looks at the path, so one spelling per path: a
			// ../ must not pick the progress service for an api route,
			// nor the other way round.
			problem.Abort(c, errUncleanPath)
		case strings.HasPrefix(p, "/v1/auth/"):
			problem.NoRoute(c) // the gateway's own, never proxied
		case e.progress != nil && gateway.ProgressRoute(c.Request.Method, p):
			e.progress.ServeHTTP(c.Writer, c.Request)
		default:
			e.api.ServeHTTP(c.Writer, c.Request)
		}
	})
}

// APIHandler is the api process's handler: job submission and accounts.
func APIHandler(cfg Config, rdb redis.UniversalClient, keys *tokens.KeySet) (http.Handler, error) {
	services, err := apiServices(cfg, rdb, Identity(cfg, rdb), keys)
	if err != nil {
		return nil, err
	}
	return Handler(cfg, append(services, web.Service{}, api.OpenAPIService{})...), nil
}

// Dev is the all-in-one service set of `claimcheck dev`.
type Dev struct {
	Handler  http.Handler
	Gateway  *gateway.Service
	Progress *progress.Service
	// GatewayKeys sign the internal tokens of the exchange.
	GatewayKeys *tokens.KeySet
}

// DevHandler builds the all-in-one handler of `claimcheck dev`: api,
// accounts, the exchange, progress and the web UI on one port. It creates
// the gateway's signing key on first use.
func DevHandler(cfg Config, rdb redis.UniversalClient, keys *tokens.KeySet) (*Dev, error) {
	dir := Identity(cfg, rdb)
	services, err := apiServices(cfg, rdb, dir, keys)
	if err != nil {
		return nil, err
	}
	gwKeys, _, err := tokens.EnsureDir(cfg.GatewayKeyDir)
	if err != nil {
		return nil, err
	}
	gw, err := Gateway(cfg, rdb, dir, gwKeys)
	if err != nil {
		return nil, err
	}
	prog, err := Progress(cfg, rdb, keys)
	if err != nil {
		return nil, err
	}
	return &Dev{Handler: Handler(cfg, append(services, gw, prog, web.Service{}, api.OpenAPIService{})...), Gateway: gw, Progress: prog, GatewayKeys: gwKeys}, nil
}

// ServeWithOps serves h on cfg.Addr like Serve and, when cfg.MetricsAddr is
// set, the operations server (OpsHandler, with the extra readiness checks)
// there beside it; either failing stops both. ready, if not nil, receives
// the public address.
func ServeWithOps(ctx context.Context, cfg Config, rdb redis.UniversalClient, h http.Handler, ready func(addr string), extra ...router.Check) error {
	if cfg.MetricsAddr == "" {
		return Serve(ctx, cfg.Addr, h, ready)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		errc <- Serve(ctx, cfg.MetricsAddr, OpsHandler(cfg, rdb, extra...), func(addr string) {
			cfg.Logger.Info("metrics listening", "addr", addr)
		})
		cancel()
	}()
	err := Serve(ctx, cfg.Addr, h, ready)
	cancel()
	if oerr := <-errc; err == nil {
		err = oerr
	}
	return err
}

// Serve runs h on addr until ctx is done, then shuts down gracefully
// (router.Serve, which worker processes share).
func Serve(ctx context.Context, addr string, h http.Handler, ready func(addr string)) error {
	return router.Serve(ctx, addr, h, ready)
}
