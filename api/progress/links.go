package progress

import (
	"net/http"
	"net/url"
	"strconv"
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
	// Once makes a one-time link: every byte of the result is served at
	// most once through it, and of concurrent downloads exactly one gets
	// it. The first GET claims the link and streams from the start (or
	// from N, for Range: bytes=N-); meanwhile every other request is 409
	// link-in-use. A download that reaches the end uses the link up: 410
	// link-used from then on. One that stops short after serving bytes up
	// to offset N (the count the server handed to the connection, which a
	// client that lost bytes in flight may not have) can be resumed for
	// ResumeWindow (60 s) after it stopped, only with Range: bytes=N- (or
	// none, for N = 0); anything else meanwhile is 409 link-interrupted,
	// whose resume_from names N, and after the window the link is used up. A server that dies mid-download leaves
	// the link interrupted once its lease (15 s) lapses, at an offset up
	// to 1 MiB past what it wrote. A client that stops reading is cut off
	// when one write of the result (32 KiB at most) has waited a minute,
	// which leaves the link interrupted: a claim is never held for ever
	// by a connection that is open but idle. A one-time link takes no
	// other Range (416 link-range), ignores conditional headers but
	// If-Range, and is
	// always served by this service, never redirected to the results
	// store (a signed URL could be fetched again). HEAD answers what a GET
	// with the same headers would (200/206 with the headers, or the
	// 409/410) and changes nothing. Revoking the job's tokens kills the
	// link as any other. A job may be given MaxOnceLinks of them (then 429
	// too-many-links): each keeps its state in Redis until its exp.
	Once bool `json:"once,omitempty"`
}

// LinkResponse is the 201 body.
type LinkResponse struct {
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expires_at"`
	// Once echoes a one-time link's request.
	Once bool `json:"once,omitempty"`
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
	if req.Once {
		ok, err := s.cfg.Store.CountOnceLink(c, j.ID, s.onceLinkCap)
		if err != nil {
			problem.Abort(c, err)
			return
		}
		if !ok {
			problem.Abort(c, problem.New(http.StatusTooManyRequests, "too-many-links", "Too many one-time links",
				"this job has been given the most one-time links it may have ("+strconv.Itoa(s.onceLinkCap)+
					"); plain links can still be made").With("limit", s.onceLinkCap))
			return
		}
	}
	tok, claims, err := s.cfg.Links.Mint(j.ID, j.TokenEpoch, tokens.LinkOptions{
		Filename: req.Filename, Disposition: req.Disposition, TTL: ttl, NotAfter: notAfter, Once: req.Once,
	})
	if err != nil {
		problem.Abort(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusCreated, LinkResponse{
		URL:       s.cfg.PublicURL + "/v1/results/" + url.PathEscape(j.ID) + "?sig=" + url.QueryEscape(tok),
		ExpiresAt: claims.Expires(),
		Once:      claims.Once,
	})
}

// download serves GET /v1/results/{id}?sig=<link token>. The link alone
// authorises it; the response must not leak the URL onwards (no-referrer)
// or linger in shared caches (private). A one-time link is checked the
// same way, revocation first, and then served by downloadOnce.
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
	if claims.Once {
		s.downloadOnce(c, j, claims)
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
