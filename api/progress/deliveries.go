package progress

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/claimcheck/claimcheck/api/problem"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/tokens"
)

// DeliveriesResponse is the body of GET /v1/jobs/{id}/deliveries.
type DeliveriesResponse struct {
	// Deliveries are the job's webhook delivery attempts, oldest first
	// (the newest jobs.MaxDeliveries).
	Deliveries []jobs.Delivery `json:"deliveries"`
}

// deliveries serves GET /v1/jobs/{id}/deliveries: how each attempt to
// deliver the job's webhook events went. The record is read first, so a
// job that is gone (or a revoked token) answers as GET /v1/jobs/{id} does.
func (s *Service) deliveries(c *gin.Context) {
	j, err := s.job(c)
	if err != nil {
		problem.Abort(c, err)
		return
	}
	ds, err := s.cfg.Store.Deliveries(c, j.ID)
	if err != nil {
		problem.Abort(c, err)
		return
	}
	c.Header("Cache-Control", "private, no-cache")
	c.JSON(http.StatusOK, DeliveriesResponse{Deliveries: ds})
}

// verifyLink checks a download link: with this service's own keys, and,
// when that fails, as a link the webhook deliverer minted (its issuer and
// its published keys, Config.WebhookLinks). The first verifier's error is
// the answer unless the link is the deliverer's.
func (s *Service) verifyLink(sig string) (*tokens.LinkClaims, error) {
	claims, err := s.cfg.LinkVerifier.VerifyLink(sig)
	if err == nil || s.cfg.WebhookLinks == nil {
		return claims, err
	}
	wc, werr := s.cfg.WebhookLinks.VerifyLink(sig)
	if werr == nil {
		if wc.Once {
			// The deliverer never mints one-time links; one that says
			// so would skip the per-job cap on them (POST …/links).
			return nil, fmt.Errorf("%w: a webhook link cannot be one-time", tokens.ErrMalformed)
		}
		return wc, nil
	}
	if errors.Is(err, tokens.ErrUnknownKey) {
		return nil, werr // not ours: the deliverer's verdict is the one that says why
	}
	return nil, err
}
