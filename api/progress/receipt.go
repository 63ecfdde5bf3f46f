package progress

import (
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/claimcheck/claimcheck/api/problem"
	"github.com/claimcheck/claimcheck/internal/jobs"
)

// ReceiptContentType is the media type of GET /v1/jobs/{id}/receipt: the
// registered JWT type (RFC 7519 §10.3.1). The token's own typ header,
// receipt+jwt, is what says which kind of JWT it is.
const ReceiptContentType = "application/jwt"

// noReceipt is the answer for a job without a receipt: it has not
// succeeded (yet), or the worker that ran it held no receipt keys.
func noReceipt(j *jobs.Job) error {
	detail := "job " + j.ID + " is " + string(j.State) + "; only a job that succeeded has a receipt"
	if j.State == jobs.StateSucceeded {
		detail = "job " + j.ID + " succeeded on a worker that signs no receipts"
	}
	return problem.New(http.StatusNotFound, "no-receipt", "No receipt", detail).With("state", j.State)
}

// receipt serves a succeeded job's result receipt: the compact JWS the
// worker signed and stored with the success (see package worker). Like the
// result, it needs scope job:result; unlike the result, its holder keeps it
// after the job's record and result have expired, and checks it offline
// against the api's JWKS (keys of kind "receipt").
func (s *Service) receipt(c *gin.Context) {
	j, err := s.job(c)
	if err != nil {
		problem.Abort(c, err)
		return
	}
	if j.State != jobs.StateSucceeded {
		problem.Abort(c, noReceipt(j))
		return
	}
	tok, err := s.cfg.Store.Receipt(c, j.ID)
	if errors.Is(err, jobs.ErrNoReceipt) {
		problem.Abort(c, noReceipt(j))
		return
	}
	if err != nil {
		problem.Abort(c, err)
		return
	}
	h := c.Writer.Header()
	// Written once with the success and never changed.
	h.Set("Cache-Control", "private, max-age=3600, immutable")
	h.Set("X-Content-Type-Options", "nosniff")
	c.Data(http.StatusOK, ReceiptContentType, []byte(tok))
}
