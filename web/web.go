// Package web is claimcheck's browser UI, embedded in the binary so the dev
// and api processes serve it with no build step and no CDN. For now it is a
// single page that explains how to submit a job; the full UI comes later.
package web

import (
	"embed"
	"net/http"

	"github.com/gin-gonic/gin"
)

//go:embed static
var static embed.FS

// Service serves the UI at /.
type Service struct{}

// Register adds the UI's routes to r.
func (Service) Register(r gin.IRouter) {
	r.GET("/", func(c *gin.Context) {
		page, err := static.ReadFile("static/index.html")
		if err != nil {
			c.Status(http.StatusInternalServerError)
			return
		}
		c.Header("Content-Security-Policy", "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		c.Header("X-Content-Type-Options", "nosniff")
		c.Data(http.StatusOK, "text/html; charset=utf-8", page)
	})
}
