// Package account serves people's own sign-in state: creating a session with
// a password, listing sessions, and logging out of one or all of them.
package account

import (
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/go-redis/redis_rate/v10"

	"github.com/claimcheck/claimcheck/api/authn"
	"github.com/claimcheck/claimcheck/api/forwarded"
	"github.com/claimcheck/claimcheck/api/jsonbody"
	"github.com/claimcheck/claimcheck/api/problem"
	"github.com/claimcheck/claimcheck/api/ratelimit"
	"github.com/claimcheck/claimcheck/internal/identity"
)

// Service serves /v1/sessions and /v1/api-keys.
//
// "Sign out everywhere" (DELETE /v1/sessions) ends every session of the
// user and leaves their API keys working, as GitHub's does: keys are what
// scripts and CI run on, and signing out of a lost laptop should not stop
// them. "Revoke all my API keys" (DELETE /v1/api-keys) is its own action.
type Service struct {
	dir    *identity.Directory
	auth   authn.Authenticator
	limits *ratelimit.Limiter
}

// New returns the service. auth authenticates callers (the directory
// itself, or internal tokens behind a gateway); limits may be nil (no rate
// limits).
func New(dir *identity.Directory, auth authn.Authenticator, limits *ratelimit.Limiter) (*Service, error) {
	if dir == nil {
		return nil, errors.New("account: a Directory is required")
	}
	if auth == nil {
		auth = dir
	}
	return &Service{dir: dir, auth: auth, limits: limits}, nil
}

// Register adds the routes to r.
func (s *Service) Register(r gin.IRouter) {
	// Creating and listing credentials needs a session confirmed live in
	// this request (see authn.RequireSession); ending them does not.
	live := authn.RequireSession(s.dir.Sessions)
	r.POST("/v1/sessions", s.login)
	sessions := r.Group("/v1/sessions", authn.Require(s.auth))
	sessions.GET("", live, s.list)
	sessions.DELETE("", s.logoutEverywhere)
	sessions.DELETE("/current", s.logout)
	sessions.DELETE("/:id", s.revoke)
	keys := r.Group("/v1/api-keys", authn.Require(s.auth), live)
	keys.POST("", s.createKey)
	keys.GET("", s.listKeys)
	keys.DELETE("", s.revokeAllKeys)
	keys.DELETE("/:id", s.revokeKey)
}

type loginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// LoginResponse is the 201 body of POST /v1/sessions.
type LoginResponse struct {
	Session   string `json:"session"`
	ID        string `json:"id"`
	ExpiresAt string `json:"expires_at"`
}

// errBadLogin answers every refused sign-in alike: unknown user, wrong
// password, blocked user.
var errBadLogin = problem.Unauthorized("wrong user name or password", `Bearer realm="claimcheck"`)

// knownAddress names the (user, address) pairs that signed in lately, for
// knownAddressFor: such an address is not held by the per-user backstop.
const (
	knownAddress    = "login-known"
	knownAddressFor = 30 * 24 * time.Hour
)

func (s *Service) login(c *gin.Context) {
	// A login form posted from another site would sign the victim's browser
	// into the attacker's account; refuse a foreign Origin when one is sent.
	if c.GetHeader("Origin") != "" && !authn.SameOrigin(c.Request) {
		problem.Abort(c, problem.New(http.StatusForbidden, "csrf", "Cross-site request refused", "login from another origin"))
		return
	}
	var req loginRequest
	if _, err := jsonbody.Read(c, &req, 16<<10); err != nil {
		problem.Abort(c, err)
		return
	}
	if req.Username == "" || req.Password == "" {
		problem.Abort(c, problem.BadRequest(`body must be {"username": …, "password": …}`))
		return
	}
	// Every budget is spent before the password is hashed: a guesser pays
	// with its budget, not with our CPU. The order matters: a try refused
	// by the address's own budgets does not spend the user's backstop, so
	// an attacker held at its (user, address) limit cannot drain it.
	ip := forwarded.AddressKey(c.ClientIP())
	userKey, ok := identity.CanonicalUserName(req.Username)
	if !ok {
		userKey = "(invalid)" // no such user can exist; keep the key short
	}
	userIP := ip + "/" + userKey // neither an address nor a name holds '/'
	lim := s.limitsOf()
	for _, b := range []struct {
		limit     redis_rate.Limit
		kind, key string
	}{
		{lim.LoginPerIP, "login-ip", ip},
		{lim.LoginPerUserIP, "login-user-ip", userIP},
		{lim.LoginPerUser, "login-user", userKey},
	} {
		err := s.limits.Allow(c, b.limit, b.kind, b.key)
		if err != nil && b.kind == "login-user" && s.limits.Remembered(c, knownAddress, userIP) {
			// Attackers on many addresses can drain the backstop; an
			// address the owner signed in from lately still gets its own
			// (user, address) budget, so they cannot lock the owner out.
			err = nil
		}
		if err != nil {
			problem.Abort(c, err)
			return
		}
	}
	u, err := s.dir.Users.CheckPassword(c, req.Username, req.Password)
	if errors.Is(err, identity.ErrBadPassword) {
		problem.Abort(c, errBadLogin)
		return
	}
	if err != nil {
		problem.Abort(c, err)
		return
	}
	// The owner is in: this address's failures on them are forgiven, so
	// only failures count against the (user, address) budget. Best effort:
	// a failure here only leaves the budget as spent as it was.
	_ = s.limits.Reset(c, "login-user-ip", userIP)
	_ = s.limits.Remember(c, knownAddress, userIP, knownAddressFor)
	sec, sess, err := s.dir.Sessions.Create(c, u.Name, c.Request.UserAgent(), ip)
	if errors.Is(err, identity.ErrUserBlocked) {
		// Blocked while the password was being checked: the same answer
		// as any refused sign-in.
		problem.Abort(c, errBadLogin)
		return
	}
	if err != nil {
		problem.Abort(c, err)
		return
	}
	authn.SetCookie(c, sec, sess.ExpiresAt)
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusCreated, LoginResponse{Session: sec.Reveal(), ID: sess.ID, ExpiresAt: sess.ExpiresAt.Format("2006-01-02T15:04:05Z07:00")})
}

type sessionView struct {
	identity.Session
	Current bool `json:"current"`
}

func (s *Service) list(c *gin.Context) {
	p := authn.Principal(c)
	list, err := s.dir.Sessions.List(c, p.UserID)
	if err != nil {
		problem.Abort(c, err)
		return
	}
	out := make([]sessionView, 0, len(list))
	for _, sess := range list {
		out = append(out, sessionView{Session: sess, Current: p.Via == "session" && sess.ID == p.CredentialID})
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, gin.H{"sessions": out})
}

func (s *Service) logout(c *gin.Context) {
	p := authn.Principal(c)
	if p.Via != "session" {
		problem.Abort(c, problem.New(http.StatusConflict, "not-a-session", "Not signed in with a session",
			"this request authenticated with an API key; revoke keys under /v1/api-keys"))
		return
	}
	if err := s.dir.Sessions.Revoke(c, p.UserID, p.CredentialID); err != nil && !errors.Is(err, identity.ErrSessionNotFound) {
		problem.Abort(c, err)
		return
	}
	authn.ClearCookie(c)
	c.Status(http.StatusNoContent)
}

func (s *Service) revoke(c *gin.Context) {
	p := authn.Principal(c)
	err := s.dir.Sessions.Revoke(c, p.UserID, c.Param("id"))
	if errors.Is(err, identity.ErrSessionNotFound) {
		problem.Abort(c, problem.New(http.StatusNotFound, "not-found", "Not found", "you have no session with that id"))
		return
	}
	if err != nil {
		problem.Abort(c, err)
		return
	}
	if p.Via == "session" && c.Param("id") == p.CredentialID {
		authn.ClearCookie(c)
	}
	c.Status(http.StatusNoContent)
}

func (s *Service) logoutEverywhere(c *gin.Context) {
	p := authn.Principal(c)
	if _, err := s.dir.Sessions.RevokeAll(c, p.UserID); err != nil {
		problem.Abort(c, err)
		return
	}
	authn.ClearCookie(c)
	c.Status(http.StatusNoContent)
}

func (s *Service) limitsOf() ratelimit.Limits {
	if s.limits == nil {
		return ratelimit.Limits{}
	}
	return s.limits.Limits
}

// CreateKeyRequest is the body of POST /v1/api-keys.
type CreateKeyRequest struct {
	Name string `json:"name"`
	// Scopes default to every scope (jobs:submit, jobs:read).
	Scopes []string `json:"scopes,omitempty"`
	// ExpiresIn is a Go duration ("720h"); empty means the key does not
	// expire on its own.
	ExpiresIn string `json:"expires_in,omitempty"`
}

// CreateKeyResponse is the 201 body: the key's description and, this once,
// its secret.
type CreateKeyResponse struct {
	identity.APIKey
	Key string `json:"key"`
}

func (s *Service) createKey(c *gin.Context) {
	var req CreateKeyRequest
	if _, err := jsonbody.Read(c, &req, 16<<10); err != nil {
		problem.Abort(c, err)
		return
	}
	spec := identity.KeySpec{User: authn.Principal(c).UserID, Name: req.Name, Scopes: req.Scopes}
	if req.ExpiresIn != "" {
		d, err := time.ParseDuration(req.ExpiresIn)
		if err != nil || d <= 0 {
			problem.Abort(c, problem.Invalid("expires_in", `must be a positive duration such as "720h"`))
			return
		}
		spec.ExpiresAt = time.Now().Add(d)
	}
	if len(req.Name) > 100 {
		problem.Abort(c, problem.Invalid("name", "at most 100 characters"))
		return
	}
	sec, key, err := s.dir.APIKeys.CreateKey(c, spec)
	if errors.Is(err, identity.ErrBadScope) {
		problem.Abort(c, problem.Invalid("scopes", err.Error()))
		return
	}
	if errors.Is(err, identity.ErrUserBlocked) {
		problem.Abort(c, authn.ErrRevoked) // blocked since this request was authenticated
		return
	}
	if err != nil {
		problem.Abort(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.Header("Location", "/v1/api-keys/"+key.ID)
	c.JSON(http.StatusCreated, CreateKeyResponse{APIKey: *key, Key: sec.Reveal()})
}

func (s *Service) listKeys(c *gin.Context) {
	keys, err := s.dir.APIKeys.ListUser(c, authn.Principal(c).UserID)
	if err != nil {
		problem.Abort(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, gin.H{"api_keys": keys})
}

func (s *Service) revokeKey(c *gin.Context) {
	err := s.dir.APIKeys.RevokeOwn(c, authn.Principal(c).UserID, c.Param("id"))
	if errors.Is(err, identity.ErrNotFound) {
		problem.Abort(c, problem.New(http.StatusNotFound, "not-found", "Not found", "you have no API key with that id"))
		return
	}
	if err != nil {
		problem.Abort(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

// RevokeAllKeysResponse is the 200 body of DELETE /v1/api-keys.
type RevokeAllKeysResponse struct {
	// Revoked is how many keys stopped working.
	Revoked int `json:"revoked"`
}

// revokeAllKeys ends every API key of the caller ("revoke all my API
// keys"); sessions are not touched. Each key's revocation is announced, so
// every gateway forgets the tokens it minted from them.
func (s *Service) revokeAllKeys(c *gin.Context) {
	n, err := s.dir.APIKeys.RevokeAllOwn(c, authn.Principal(c).UserID)
	if err != nil {
		problem.Abort(c, err)
		return
	}
	c.JSON(http.StatusOK, RevokeAllKeysResponse{Revoked: n})
}
