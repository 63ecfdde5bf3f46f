// Package router builds the Gin engine every claimcheck HTTP service shares:
// panic recovery into problem+json, problem+json for unknown routes, a
// request id on every request, an access log that never records query
// strings (where credentials may ride), request metrics, GET /healthz (the
// process serves) and GET /readyz (its dependencies answer). GET /metrics
// is not on it: Metrics registers it, on an operations engine only, so a
// public listener never shows traffic, queue depths or build details; Ops is
// that operations engine, and Serve the graceful HTTP server every process,
// worker.Main programs included, runs its handlers with.
package router

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gin-gonic/gin"

	"github.com/claimcheck/claimcheck/api/problem"
	"github.com/claimcheck/claimcheck/internal/metrics"
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
	// Recovery first, so a panic anywhere after it, middleware included,
	// is answered as a problem.
	r.Use(recoverer(logger), requestID, accessLog(logger))
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

// Metrics registers GET /metrics (Prometheus). Call it on an engine that
// listens only where the scraper reaches (--metrics-addr), never on a
// public one.
func Metrics(r gin.IRouter) {
	r.GET("/metrics", gin.WrapH(promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{})))
}

// Check is one readiness condition (Redis answers, keys are loaded).
type Check struct {
	Name  string
	Check func(ctx context.Context) error
}

// Ready registers GET /readyz: 200 when every check passes within two
// seconds, else 503 naming the ones that failed (never their errors'
// text, which may hold addresses).
func Ready(r gin.IRouter, checks ...Check) {
	r.GET("/readyz", func(c *gin.Context) {
		// The request's context, not c: gin reuses c for another request
		// once this one returns, while a timer that fired at the deadline
		// may still be reading its parent.
		ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
		defer cancel()
		var failed []string
		for _, ch := range checks {
			if err := ch.Check(ctx); err != nil {
				failed = append(failed, ch.Name)
			}
		}
		c.Header("Cache-Control", "no-store")
		if len(failed) > 0 {
			problem.Abort(c, problem.New(http.StatusServiceUnavailable, "not-ready", "Not ready",
				"failing: "+strings.Join(failed, ", ")).With("failing", failed))
			return
		}
		c.JSON(http.StatusOK, gin.H{"status": "ready"})
	})
}

// RequestIDHeader carries a request's id in both directions.
const RequestIDHeader = "X-Request-Id"

var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// requestID keeps a well-formed incoming X-Request-Id (a proxy's) or makes
// one, and echoes it; the access log reads it back from the response
// headers (cheaper than the context's key map, which would be made for it
// alone on the hot forward-auth path).
func requestID(c *gin.Context) {
	id := c.GetHeader(RequestIDHeader)
	if !requestIDPattern.MatchString(id) {
		var b [12]byte
		_, _ = rand.Read(b[:])
		id = hex.EncodeToString(b[:])
	}
	c.Writer.Header()[RequestIDHeader] = []string{id}
	c.Next()
}

// requestIDOf is the id requestID gave c.
func requestIDOf(c *gin.Context) string {
	if v := c.Writer.Header()[RequestIDHeader]; len(v) > 0 {
		return v[0]
	}
	return ""
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
		took := time.Since(start)
		route := c.FullPath()
		if route == "" {
			route = "unmatched" // bounded label: never the raw path
		}
		metrics.HTTPRequests.WithLabelValues(route, methodLabel(c.Request.Method), strconv.Itoa(c.Writer.Status())).Observe(took.Seconds())
		if c.Request.URL.Path == "/metrics" || c.Request.URL.Path == "/readyz" {
			return
		}
		logger.LogAttrs(c.Request.Context(), slog.LevelInfo, "http",
			slog.String("method", c.Request.Method),
			slog.String("path", c.Request.URL.Path),
			slog.Int("status", c.Writer.Status()),
			slog.Int("bytes", c.Writer.Size()),
			slog.Duration("duration", took),
			slog.String("request_id", requestIDOf(c)),
		)
	}
}

// methodLabel bounds the method label: clients may send any token as a
// method.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}
