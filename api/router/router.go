// Package router builds the Gin engine every claimcheck HTTP service shares:
// panic recovery into problem+json, problem+json for unknown routes, an
// access log that never records query strings (where credentials may ride),
// and GET /healthz.
package router

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/claimcheck/claimcheck/api/problem"
)

// New returns an engine with the shared middleware. logger may be nil.
func New(logger *slog.Logger) *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	if logger == nil {
		logger = slog.Default()
	}
	r := gin.New()
	// Trust no proxy's X-Forwarded-For until told to (SetTrustedProxies):
	// the client address keys rate limits, and must not be choosable.
	_ = r.SetTrustedProxies(nil)
	r.HandleMethodNotAllowed = true
	r.ContextWithFallback = true
	r.Use(problem.Recover(), accessLog(logger))
	r.NoRoute(problem.NoRoute)
	r.NoMethod(func(c *gin.Context) {
		problem.Abort(c, problem.New(http.StatusMethodNotAllowed, "method-not-allowed", "Method not allowed",
			c.Request.Method+" is not allowed on "+c.Request.URL.Path))
	})
	r.GET("/healthz", func(c *gin.Context) {
		c.Header("Cache-Control", "no-store")
		c.JSON(http.StatusOK, gin.H{"status": "ok"})
	})
	return r
}

// accessLog logs one line per request with the path only: query strings and
// headers can carry tokens, so they are never logged.
func accessLog(logger *slog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		if c.Request.URL.Path == "/healthz" {
			return
		}
		logger.LogAttrs(c.Request.Context(), slog.LevelInfo, "http",
			slog.String("method", c.Request.Method),
			slog.String("path", c.Request.URL.Path),
			slog.Int("status", c.Writer.Status()),
			slog.Int("bytes", c.Writer.Size()),
			slog.Duration("duration", time.Since(start)),
		)
	}
}
