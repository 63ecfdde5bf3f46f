// Package gateway turns a person's opaque credential — a session cookie, a
// bearer session or an API key — into a seconds-long internal token
// ("phantom token", RFC 9068 at+jwt) for services behind it. It serves the
// exchange as a forward-auth endpoint (Traefik forwardAuth, nginx
// auth_request, Envoy ext_authz) and as claimcheck's own reverse proxy.
//
// Minted tokens are cached per credential and signing key for most of their
// life, so the common case costs no Redis call and no signature. Revoking a
// session or key, logging out everywhere, blocking a user or rotating keys
// purges the cache: synchronously in the process that did it, and through
// Redis pub/sub (identity.ListenRevocations) in every other one.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/claimcheck/claimcheck/api/authn"
	"github.com/claimcheck/claimcheck/api/forwarded"
	"github.com/claimcheck/claimcheck/api/problem"
	"github.com/claimcheck/claimcheck/api/ratelimit"
	"github.com/claimcheck/claimcheck/api/router"
	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/metrics"
	"github.com/claimcheck/claimcheck/internal/secret"
	"github.com/claimcheck/claimcheck/tokens"
)

// Headers the exchange answers with and the proxy forwards.
const (
	HeaderUser = "X-Claimcheck-User"
)

// Config wires the service.
type Config struct {
	// Auth resolves people's credentials (the identity directory); required.
	Auth authn.Authenticator
	// Minter signs internal tokens with the gateway's own keys; required.
	Minter *tokens.AccessMinter
	// Limits rate-limits the costly exchanges (cache misses and refused
	// credentials) per client address; nil means no limit.
	Limits *ratelimit.Limiter
	// CacheFor is how long a minted token is handed out again (three
	// quarters of the token's lifetime, so a client never receives one
	// about to expire). Zero or negative values take the default.
	CacheFor time.Duration
	// TrustedProxies are the proxies in front of the gateway; as a reverse
	// proxy it keys its rate limit on the client address they report
	// (nil: the connection's address). Behind a load balancer that is not
	// named here, every client shares the balancer's budget.
	TrustedProxies *forwarded.Proxies
	// MaxCacheEntries bounds the cache (100 000).
	MaxCacheEntries int
	Now             func() time.Time
	Logger          *slog.Logger
}

// Service serves the exchange and the gateway's JWKS.
type Service struct {
	cfg   Config
	cache *tokenCache
}

// New validates cfg and applies defaults.
func New(cfg Config) (*Service, error) {
	if cfg.Auth == nil || cfg.Minter == nil || cfg.Minter.Keys == nil {
		return nil, errors.New("gateway: Auth and Minter (with Keys) are required")
	}
	lifetime := cfg.Minter.Lifetime
	if lifetime <= 0 || lifetime > tokens.MaxAccessLifetime {
		lifetime = tokens.MaxAccessLifetime
	}
	if cfg.CacheFor <= 0 || cfg.CacheFor > lifetime {
		cfg.CacheFor = lifetime * 3 / 4
	}
	if cfg.MaxCacheEntries <= 0 {
		cfg.MaxCacheEntries = 100_000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Service{cfg: cfg, cache: newTokenCache(cfg.MaxCacheEntries)}, nil
}

// Purge forgets cached tokens that rev covers. Wire it to the directory's
// in-process revocations and to identity.ListenRevocations.
func (s *Service) Purge(rev identity.Revocation) {
	s.cache.purge(rev)
}

// JWKSPath is where the gateway publishes its public keys; services in
// --trust-gateway mode verify internal tokens against it.
const JWKSPath = "/v1/auth/jwks.json"

// Register adds the exchange (any method, any sub-path, as forward-auth
// proxies call it) and the JWKS.
func (s *Service) Register(r gin.IRouter) {
	r.Any("/v1/auth/exchange", s.serveExchange)
	r.Any("/v1/auth/exchange/*rest", s.serveExchange)
	r.GET(JWKSPath, func(c *gin.Context) {
		c.Header("Cache-Control", "public, max-age=60")
		c.JSON(http.StatusOK, s.cfg.Minter.Keys.JWKSAs(tokens.KindAccess))
	})
}

// serveExchange answers 200 with the internal token in Authorization and the
// user in X-Claimcheck-User, or a 401/403/429 problem. The body is empty:
// forward-auth proxies copy headers, not bodies.
func (s *Service) serveExchange(c *gin.Context) {
	e, err := s.exchange(c, c.Request, ForwardedMethod(c.Request), c.ClientIP)
	if err != nil {
		problem.Abort(c, err)
		return
	}
	// The keys are canonical already, and the values were built when the
	// token was minted, so this allocates nothing.
	h := c.Writer.Header()
	h["Authorization"] = e.authorization
	h[HeaderUser] = e.userHeader
	h["Cache-Control"] = noStore
	c.Status(http.StatusOK)
}

// ForwardedMethod is the method of the request being authorised: a
// forward-auth proxy calls the exchange with its own method and names the
// original in X-Forwarded-Method (Traefik, Envoy) or X-Original-Method
// (nginx, by our config). Only a --trusted-proxy's headers reach this far
// (package forwarded removes anyone else's), so it is "" — unknown, which
// the CSRF check treats as state-changing — when the caller is not a trusted
// proxy, when the proxy names no method, or when the headers disagree.
func ForwardedMethod(r *http.Request) string {
	m := ""
	for _, h := range []string{"X-Forwarded-Method", "X-Original-Method"} {
		for _, v := range r.Header.Values(h) {
			v = strings.ToUpper(strings.TrimSpace(v))
			if v == "" || (m != "" && v != m) {
				return ""
			}
			m = v
		}
	}
	return m
}

// ForwardedPath is the path being authorised (no query: it is logged),
// from X-Forwarded-Uri (Traefik, Envoy) or X-Original-URI (nginx).
func ForwardedPath(r *http.Request) string {
	for _, h := range []string{"X-Forwarded-Uri", "X-Original-URI"} {
		if u := r.Header.Get(h); u != "" {
			path, _, _ := strings.Cut(u, "?")
			return path
		}
	}
	return r.URL.Path
}

var noStore = []string{"no-store"}

// The exchange's counters, looked up once: the cached path counts every call.
var (
	exchangesHit     = metrics.Exchanges.WithLabelValues("hit")
	exchangesMiss    = metrics.Exchanges.WithLabelValues("miss")
	exchangesRefused = metrics.Exchanges.WithLabelValues("refused")
)

var errCrossSite = problem.New(http.StatusForbidden, "csrf", "Cross-site request refused",
	"a cookie-authenticated request that changes state (or whose method a trusted proxy did not name) must carry an Origin header naming this site")

var errNoCredential = problem.Unauthorized("sign in, or send an API key or session: Authorization: Bearer <credential>",
	`Bearer realm="claimcheck"`)

// exchange resolves r's credential to an internal token, from the cache when
// it can. method is that of the request being authorised ("" when unknown,
// which counts as state-changing): r.Method when the gateway is the proxy,
// ForwardedMethod for forward-auth. clientIP keys the rate limit; it is
// asked only on a cache miss, since resolving it behind trusted proxies is
// not free.
func (s *Service) exchange(ctx context.Context, r *http.Request, method string, clientIP func() string) (*minted, error) {
	cred, viaCookie := authn.FromRequest(r)
	if cred == "" {
		return nil, errNoCredential
	}
	if viaCookie && !authn.SafeMethod(method) && !authn.SameOrigin(r) {
		return nil, errCrossSite
	}
	signer, err := s.cfg.Minter.Keys.Signer()
	if err != nil {
		return nil, fmt.Errorf("exchange: %w", err)
	}
	now := s.cfg.Now()
	h := credentialHash(cred.Reveal())
	if e := s.cache.get(h, now, signer.ID); e != nil {
		exchangesHit.Inc()
		return e, nil
	}
	if s.cfg.Limits != nil {
		if err := s.cfg.Limits.Allow(ctx, s.cfg.Limits.Limits.Exchange, "exchange", forwarded.AddressKey(clientIP())); err != nil {
			return nil, err
		}
	}
	e, err := s.mint(ctx, h, cred, now)
	if err != nil {
		exchangesRefused.Inc()
		return nil, err
	}
	exchangesMiss.Inc()
	return e, nil
}

// ReadyChecks: the gateway can sign.
func (s *Service) ReadyChecks() []router.Check {
	return []router.Check{{Name: "signing-key", Check: func(context.Context) error { _, err := s.cfg.Minter.Keys.Signer(); return err }}}
}

func (s *Service) mint(ctx context.Context, h [32]byte, cred secret.Secret, now time.Time) (*minted, error) {
	gen := s.cache.generation() // before the lookup: see tokenCache
	p, err := s.cfg.Auth.Authenticate(ctx, cred)
	if errors.Is(err, identity.ErrUnauthenticated) {
		return nil, authn.ErrRevoked
	}
	if err != nil {
		return nil, err
	}
	kind, sid := identity.RevokedAPIKey, ""
	if p.Via == "session" {
		kind, sid = identity.RevokedSession, p.CredentialID
	}
	mint := s.cfg.Minter.MintAccess
	if kind == identity.RevokedAPIKey {
		mint, sid = s.cfg.Minter.MintAccessForKey, p.CredentialID
	}
	tok, claims, err := mint(p.UserID, sid, p.Scopes)
	if err != nil {
		return nil, fmt.Errorf("exchange: %w", err)
	}
	kid, _ := s.cfg.Minter.Keys.Signer()
	e := &minted{token: tok, user: p.UserID, credKind: kind, credID: p.CredentialID, useUntil: now.Add(s.cfg.CacheFor),
		authorization: []string{"Bearer " + tok}, userHeader: []string{p.UserID}}
	if kid != nil {
		e.kid = kid.ID
	}
	if exp := claims.Expires(); exp.Before(e.useUntil) {
		e.useUntil = exp
	}
	if !p.ExpiresAt.IsZero() && p.ExpiresAt.Before(e.useUntil) {
		e.useUntil = p.ExpiresAt
	}
	s.cache.put(h, e, now, gen)
	return e, nil
}
