package router

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"syscall"

	"github.com/gin-gonic/gin"

	"github.com/claimcheck/claimcheck/api/problem"
)

// recoverer turns a panic anywhere in the rest of the chain into a
// problem+json 500 "internal" with no detail, so no request can take the
// process down or show its client anything of the panic. The panic value and
// stack go to the server log at error level with the request's method, path
// and id. It replaces gin's recovery, which writes unstructured text to
// stderr and, in debug mode, the request's headers (cookies among them).
//
// Two panics are not errors of ours: http.ErrAbortHandler (how
// httputil.ReverseProxy, which the gateway uses, abandons a response) is
// re-raised for net/http to close the connection quietly, and a client that
// went away (EPIPE, ECONNRESET) is noted without a stack. A panic after the
// response started cannot become a problem; the connection is cut (by
// re-raising ErrAbortHandler) so the client sees a broken response rather
// than a short one that looks whole.
func recoverer(logger *slog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			rec := recover()
			if rec == nil {
				return
			}
			if rec == http.ErrAbortHandler { // compared as net/http does
				panic(rec)
			}
			attrs := []any{"method", c.Request.Method, "path", c.Request.URL.Path, "route", c.FullPath(), "request_id", requestIDOf(c)}
			if err, ok := rec.(error); ok && (errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)) {
				logger.WarnContext(c.Request.Context(), "client went away", append(attrs, "err", err)...)
				c.Abort()
				return
			}
			logger.ErrorContext(c.Request.Context(), "handler panicked",
				append(attrs, "panic", fmt.Sprint(rec), "stack", string(debug.Stack()))...)
			if c.Writer.Written() {
				c.Abort()
				panic(http.ErrAbortHandler)
			}
			// Drop what the handler had set (Location, a content type):
			// this answer is the problem alone.
			h := c.Writer.Header()
			id := h.Get(RequestIDHeader)
			clear(h)
			if id != "" {
				h.Set(RequestIDHeader, id)
			}
			p := problem.New(http.StatusInternalServerError, "internal", "Internal error", "")
			p.Instance = c.Request.URL.Path
			problem.Write(c.Writer, p)
			c.Abort()
		}()
		c.Next()
	}
}
