// Package account serves people's own sign-in state: creating a session with
// a password, listing sessions, and logging out of one or all of them.
package account

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/claimcheck/claimcheck/api/authn"
	"github.com/claimcheck/claimcheck/api/problem"
	"github.com/claimcheck/claimcheck/internal/identity"
)

// Service serves /v1/sessions.
type Service struct {
	dir *identity.Directory
}

// New returns the service.
func New(dir *identity.Directory) (*Service, error) {
	if dir == nil {
		return nil, errors.New("account: a Directory is required")
	}
	return &Service{dir: dir}, nil
}

// Register adds the routes to r.
func (s *Service) Register(r gin.IRouter) {
	r.POST("/v1/sessions", s.login)
	auth := r.Group("/v1/sessions", authn.Require(s.dir))
	auth.GET("", s.list)
	auth.DELETE("", s.logoutEverywhere)
	auth.DELETE("/current", s.logout)
	auth.DELETE("/:id", s.revoke)
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

func (s *Service) login(c *gin.Context) {
	// A login form posted from another site would sign the victim's browser
	// into the attacker's account; refuse a foreign Origin when one is sent.
	if c.GetHeader("Origin") != "" && !authn.SameOrigin(c.Request) {
		problem.Abort(c, problem.New(http.StatusForbidden, "csrf", "Cross-site request refused", "login from another origin"))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, 16<<10))
	if err != nil {
		problem.Abort(c, fmt.Errorf("read body: %w", err))
		return
	}
	var req loginRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.Username == "" || req.Password == "" {
		problem.Abort(c, problem.BadRequest(`body must be {"username": …, "password": …}`))
		return
	}
	u, err := s.dir.Users.CheckPassword(c, req.Username, req.Password)
	if errors.Is(err, identity.ErrBadPassword) {
		problem.Abort(c, problem.Unauthorized("wrong user name or password", `Bearer realm="claimcheck"`))
		return
	}
	if err != nil {
		problem.Abort(c, err)
		return
	}
	sec, sess, err := s.dir.Sessions.Create(c, u.Name, c.Request.UserAgent(), c.ClientIP())
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
