package progress

import (
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/gin-gonic/gin"

	"github.com/claimcheck/claimcheck/api/jsonbody"
	"github.com/claimcheck/claimcheck/api/problem"
	"github.com/claimcheck/claimcheck/tokens"
)

// LinkRequest is the optional body of POST /v1/jobs/{id}/links.
type LinkRequest struct {
	// Filename for Content-Disposition (default "<job id>.<ext>").
	Filename string `json:"filename,omitempty"`
	// Disposition is "attachment" (default: download) or "inline" (show
	// in the browser).
	Disposition string `json:"disposition,omitempty"`
	// ExpiresIn is the link's lifetime as a Go duration (10m; at most 24h).
	// A link never outlives the token that asks for it nor the job's
	// record: a longer lifetime is shortened to fit, and the response's
	// expires_at says when the link really ends.
	ExpiresIn string `json:"expires_in,omitempty"`
}

// LinkResponse is the 201 body.
type LinkResponse struct {
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expires_at"`
}

// createLink serves POST /v1/jobs/{id}/links: a URL that downloads the
// result without any header, for a browser's <a href> or a plain curl.
//
// A derived credential never outlives the one it came from: the link's exp
// is at most the asking token's exp and the record's expiry. An expires_in
// beyond that is shortened rather than refused (the caller could not know
// the record's expiry, and the answer says the real expires_at); one beyond
// MaxLinkLifetime is still refused, as that limit is documented.
func (s *Service) createLink(c *gin.Context) {
	var req LinkRequest
	if c.Request.ContentLength != 0 {
		if _, err := jsonbody.Read(c, &req, 4<<10); err != nil {
			problem.Abort(c, err)
			return
		}
	}
	switch req.Disposition {
	case "":
		req.Disposition = "attachment"
	case "attachment", "inline":
	default:
		problem.Abort(c, problem.Invalid("disposition", `must be "attachment" or "inline"`))
		return
	}
	if req.Filename != "" && !safeFilename(req.Filename) {
		problem.Abort(c, problem.Invalid("filename", "1-128 printable characters, no slashes, quotes or control characters"))
		return
	}
	var ttl time.Duration
	if req.ExpiresIn != "" {
		d, err := time.ParseDuration(req.ExpiresIn)
		// A link's exp is in whole seconds: under one, it would be
		// refused as expiring before it starts.
		if err != nil || d < time.Second || d > tokens.MaxLinkLifetime {
			problem.Abort(c, problem.Invalid("expires_in", `a duration from 1s up to 24h, such as "10m"`))
			return
		}
		ttl = d
	}
	j, err := s.succeeded(c)
	if err != nil {
		problem.Abort(c, err)
		return
	}
	notAfter := jobClaims(c).Expires()
	left, err := s.cfg.Store.TTL(c, j.ID)
	if err != nil {
		problem.Abort(c, err)
		return
	}
	if left > 0 {
		if rec := s.cfg.Now().Add(left); rec.Before(notAfter) {
			notAfter = rec
		}
	}
	tok, claims, err := s.cfg.Links.MintLinkUntil(j.ID, j.TokenEpoch, req.Filename, req.Disposition, ttl, notAfter)
	if err != nil {
		problem.Abort(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusCreated, LinkResponse{
		URL:       s.cfg.PublicURL + "/v1/results/" + url.PathEscape(j.ID) + "?sig=" + url.QueryEscape(tok),
		ExpiresAt: claims.Expires(),
	})
}

// download serves GET /v1/results/{id}?sig=<link token>. The link alone
// authorises it; the response must not leak the URL onwards (no-referrer)
// or linger in shared caches (private).
func (s *Service) download(c *gin.Context) {
	c.Header("Referrer-Policy", "no-referrer")
	sig := c.Query("sig")
	if sig == "" {
		problem.Abort(c, problem.Unauthorized("a download link carries its signature in ?sig=", `Bearer realm="claimcheck"`))
		return
	}
	claims, err := s.verifyLink(sig)
	if err != nil {
		problem.Abort(c, err)
		return
	}
	if claims.Job != c.Param("id") {
		problem.Abort(c, tokens.ErrWrongJob)
		return
	}
	c.Set(claimsKey, &tokens.JobClaims{Job: claims.Job, Epoch: claims.Epoch})
	j, err := s.succeeded(c)
	if err != nil {
		problem.Abort(c, err)
		return
	}
	s.serveResult(c, j, claims.Disposition, claims.Filename, "private, no-store", claims.Expires())
}

func safeFilename(name string) bool {
	if len(name) == 0 || len(name) > 128 || strings.ContainsAny(name, `/\\"`) || name == "." || name == ".." {
		return false
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}
