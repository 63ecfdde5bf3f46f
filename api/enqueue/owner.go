package enqueue

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/claimcheck/claimcheck/api/authn"
	"github.com/claimcheck/claimcheck/api/jsonbody"
	"github.com/claimcheck/claimcheck/api/problem"
	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/tokens"
)

// JobSummary is one entry of GET /v1/jobs: the job's record and where to
// follow it. It carries no job token; POST /v1/jobs/{id}/token issues one.
type JobSummary struct {
	*jobs.Job
	Links Links `json:"links"`
}

// ListResponse is the body of GET /v1/jobs.
type ListResponse struct {
	Jobs []JobSummary `json:"jobs"`
	// NextCursor, when present, fetches the next (older) page; a page may
	// hold fewer jobs than asked for and still have one.
	NextCursor string `json:"next_cursor,omitempty"`
}

var knownStates = []jobs.State{jobs.StateQueued, jobs.StateRunning, jobs.StateRetrying,
	jobs.StateSucceeded, jobs.StateFailed, jobs.StateCanceled}

// list serves GET /v1/jobs?state=&cursor=&limit=: the caller's own jobs,
// newest first.
func (s *Service) list(c *gin.Context) {
	limit := 20
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			problem.Abort(c, problem.BadRequest("limit must be an integer from 1 to 100"))
			return
		}
		limit = n
	}
	state := jobs.State(c.Query("state"))
	if state != "" && !slices.Contains(knownStates, state) {
		problem.Abort(c, problem.BadRequest("state must be one of queued, running, retrying, succeeded, failed, canceled"))
		return
	}
	page, err := s.cfg.Store.List(c, authn.Principal(c).UserID, c.Query("cursor"), limit, state)
	if err != nil {
		problem.Abort(c, err)
		return
	}
	out := ListResponse{Jobs: make([]JobSummary, 0, len(page.Jobs)), NextCursor: page.Next}
	for _, j := range page.Jobs {
		out.Jobs = append(out.Jobs, JobSummary{Job: j, Links: s.links(j.ID)})
	}
	if page.Next != "" {
		q := url.Values{"cursor": {page.Next}, "limit": {strconv.Itoa(limit)}}
		if state != "" {
			q.Set("state", string(state))
		}
		c.Header("Link", "</v1/jobs?"+q.Encode()+`>; rel="next"`)
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, out)
}

// TokenRequest is the body of POST /v1/jobs/{id}/token; every field is
// optional.
type TokenRequest struct {
	// Scope narrows the token, space-separated ("job:read" to share
	// progress only). Empty means everything the caller may have.
	Scope string `json:"scope,omitempty"`
	// ExpiresIn shortens the token's life (a Go duration); it can never
	// outlive the job's own token.
	ExpiresIn string `json:"expires_in,omitempty"`
}

// TokenResponse is the 201 body.
type TokenResponse struct {
	Token     string    `json:"token"`
	Scope     string    `json:"scope"`
	ExpiresAt time.Time `json:"expires_at"`
	Links     Links     `json:"links"`
}

// reissue mints another token for one of the caller's jobs. The result is
// never wider than the submission's own token: the same scopes at most,
// without job:cancel unless the credential may submit (cancel is part of
// submitting), and no later expiry.
func (s *Service) reissue(c *gin.Context) {
	p := authn.Principal(c)
	var req TokenRequest
	if c.Request.ContentLength != 0 {
		if _, err := jsonbody.Read(c, &req, 16<<10); err != nil {
			problem.Abort(c, err)
			return
		}
	}
	job, err := s.cfg.Store.Get(c, c.Param("id"))
	if err != nil || job.Owner != p.UserID {
		// Someone else's job is indistinguishable from none.
		problem.Abort(c, jobs.ErrNotFound)
		return
	}
	allowed := tokens.JobScopes
	if !p.Can(identity.ScopeJobsSubmit) {
		allowed = slices.DeleteFunc(slices.Clone(allowed), func(sc string) bool { return sc == tokens.ScopeJobCancel })
	}
	scopes := allowed
	if req.Scope != "" {
		scopes = strings.Fields(req.Scope)
		for _, sc := range scopes {
			if !slices.Contains(allowed, sc) {
				problem.Abort(c, problem.New(http.StatusForbidden, "scope-too-wide", "Scope not allowed",
					"a re-issued token may carry only "+strings.Join(allowed, " ")).With("allowed_scopes", allowed))
				return
			}
		}
	}
	_, exp := s.lifetimes(job.CreatedAt, job.MaxRetry, job.Timeout)
	if req.ExpiresIn != "" {
		d, err := time.ParseDuration(req.ExpiresIn)
		if err != nil || d <= 0 {
			problem.Abort(c, problem.Invalid("expires_in", `must be a positive duration such as "1h"`))
			return
		}
		if e := s.cfg.Now().Add(d); e.Before(exp) {
			exp = e
		}
	}
	tok, claims, err := s.cfg.Minter.MintJobAt(job.ID, p.UserID, job.TokenEpoch, scopes, exp)
	if err != nil {
		problem.Abort(c, problem.New(http.StatusConflict, "job-expired", "Job token cannot be issued",
			"the job's token lifetime is over; its record is about to expire"))
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusCreated, TokenResponse{Token: tok, Scope: claims.Scope, ExpiresAt: claims.Expires(), Links: s.links(job.ID)})
}

func (s *Service) links(id string) Links {
	self := s.cfg.ProgressURL + "/v1/jobs/" + id
	return Links{Self: self, Events: self + "/events", Result: self + "/result", Cancel: self + "/cancel", Logs: self + "/logs"}
}

// revokeTokens serves POST /v1/jobs/{id}/revoke-tokens: every job token of
// the job issued so far stops working at the progress service on its next
// request, and the owner gets a fresh full token. It needs jobs:submit, like
// cancelling.
func (s *Service) revokeTokens(c *gin.Context) {
	p := authn.Principal(c)
	job, err := s.cfg.Store.Get(c, c.Param("id"))
	if err != nil || job.Owner != p.UserID {
		problem.Abort(c, jobs.ErrNotFound)
		return
	}
	epoch, err := s.cfg.Store.RevokeTokens(c, job.ID)
	if err != nil {
		problem.Abort(c, err)
		return
	}
	_, exp := s.lifetimes(job.CreatedAt, job.MaxRetry, job.Timeout)
	tok, claims, err := s.cfg.Minter.MintJobAt(job.ID, p.UserID, epoch, tokens.JobScopes, exp)
	if err != nil {
		problem.Abort(c, problem.New(http.StatusConflict, "job-expired", "Job token cannot be issued",
			"the job's tokens are revoked, but its token lifetime is over, so no new one is issued"))
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusCreated, TokenResponse{Token: tok, Scope: claims.Scope, ExpiresAt: claims.Expires(), Links: s.links(job.ID)})
}
