// Package problem turns errors into RFC 9457 application/problem+json
// answers. It holds the one table that maps domain errors to HTTP statuses
// and problem types, so handlers return errors and never pick a status.
//
// It knows the errors of tokens, jobs and blob (which every service may
// depend on) but not of identity: the progress service imports this package
// and must stay free of identity code. Services that authenticate people turn
// their identity errors into a *Problem at their own edge.
package problem

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/claimcheck/claimcheck/internal/blob"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redisconn"
	"github.com/claimcheck/claimcheck/tokens"
)

// ContentType is the media type of every error body.
const ContentType = "application/problem+json"

// TypePrefix starts every problem type URI. The URIs are identifiers, listed
// in the README; they are not meant to be fetched.
const TypePrefix = "urn:claimcheck:problem:"

// Problem is an RFC 9457 problem detail. It is also an error, so code that
// knows the exact answer can return one.
type Problem struct {
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Status     int            `json:"status"`
	Detail     string         `json:"detail,omitempty"`
	Instance   string         `json:"instance,omitempty"`
	Extensions map[string]any `json:"-"`
	// Headers are added to the response (WWW-Authenticate, Retry-After).
	Headers map[string]string `json:"-"`
	// Err is the cause, for logs only.
	Err error `json:"-"`
}

func (p *Problem) Error() string {
	if p.Detail != "" {
		return p.Title + ": " + p.Detail
	}
	return p.Title
}

func (p *Problem) Unwrap() error { return p.Err }

// MarshalJSON flattens extension members beside the standard ones, as RFC
// 9457 §3.2 describes.
func (p *Problem) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, len(p.Extensions)+5)
	for k, v := range p.Extensions {
		m[k] = v
	}
	m["type"], m["title"], m["status"] = p.Type, p.Title, p.Status
	if p.Detail != "" {
		m["detail"] = p.Detail
	}
	if p.Instance != "" {
		m["instance"] = p.Instance
	}
	return json.Marshal(m)
}

// KindRedisUnavailable is the kind of the 503 answered when Redis is away.
const KindRedisUnavailable = "redis-unavailable"

// New returns a problem of the given kind (the last part of its type URI).
func New(status int, kind, title, detail string) *Problem {
	return &Problem{Type: TypePrefix + kind, Title: title, Status: status, Detail: detail}
}

// With adds an extension member and returns p.
func (p *Problem) With(key string, value any) *Problem {
	if p.Extensions == nil {
		p.Extensions = map[string]any{}
	}
	p.Extensions[key] = value
	return p
}

// WithHeader adds a response header and returns p.
func (p *Problem) WithHeader(key, value string) *Problem {
	if p.Headers == nil {
		p.Headers = map[string]string{}
	}
	p.Headers[key] = value
	return p
}

// Unauthorized is the answer to a missing or bad credential; challenge is
// the WWW-Authenticate value (RFC 6750 §3).
func Unauthorized(detail, challenge string) *Problem {
	return New(http.StatusUnauthorized, "unauthorized", "Authentication required", detail).
		WithHeader("WWW-Authenticate", challenge)
}

// BadRequest is the answer to a request that cannot be understood.
func BadRequest(detail string) *Problem {
	return New(http.StatusBadRequest, "bad-request", "Bad request", detail)
}

// Invalid is the 422 for one bad field of a request body, with the field
// named by JSON Pointer in "errors" as job input errors are.
func Invalid(field, detail string) *Problem {
	return New(http.StatusUnprocessableEntity, "invalid-request", "Invalid request", field+": "+detail).
		With("errors", []jobs.FieldError{{Pointer: "/" + field, Detail: detail}})
}

// From maps any error to a problem. Unknown errors become a 500 whose detail
// reveals nothing; the cause is kept for the log.
func From(err error) *Problem {
	var p *Problem
	if errors.As(err, &p) {
		return p
	}
	var maxBytes *http.MaxBytesError
	var unknownType *jobs.UnknownTypeError
	var inputErr *jobs.InputError
	var scopeErr *tokens.ScopeError
	var quotaErr *jobs.QuotaError
	switch {
	case errors.As(err, &maxBytes):
		p = New(http.StatusRequestEntityTooLarge, "body-too-large", "Request body too large",
			"the body exceeds "+strconv.FormatInt(maxBytes.Limit, 10)+" bytes").With("limit", maxBytes.Limit)
	case errors.Is(err, tokens.ErrKeysUnavailable):
		// The token could not be checked yet (the api's JWKS has not been
		// fetched since start): the client should come back, not give up.
		p = New(http.StatusServiceUnavailable, "keys-unavailable", "Not ready",
			"the keys that verify job tokens are not loaded yet; retry shortly").WithHeader("Retry-After", "2")
	case errors.Is(err, tokens.ErrInvalid):
		// Say what is wrong with the token (expired, bad signature, …) but
		// never echo it: err's text is the package's, not the token's.
		p = Unauthorized(err.Error(), `Bearer realm="claimcheck", error="invalid_token"`)
		p.Type, p.Title = TypePrefix+"invalid-token", "Invalid token"
	case errors.Is(err, jobs.ErrTokenRevoked):
		p = Unauthorized("this job's tokens were revoked after this one was issued; ask the owner for a new one",
			`Bearer realm="claimcheck", error="invalid_token"`)
		p.Type, p.Title = TypePrefix+"invalid-token", "Invalid token"
	case errors.As(err, &scopeErr):
		p = New(http.StatusForbidden, "insufficient-scope", "Token does not allow this", err.Error()).
			With("required_scope", scopeErr.Need).
			WithHeader("WWW-Authenticate", `Bearer realm="claimcheck", error="insufficient_scope", scope="`+scopeErr.Need+`"`)
	case errors.Is(err, tokens.ErrForbidden):
		p = New(http.StatusForbidden, "wrong-job", "Token is for another job",
			"a job token only grants access to the job it names")
	case errors.As(err, &unknownType):
		p = New(http.StatusUnprocessableEntity, "unknown-job-type", "Unknown job type", unknownType.Error()).
			With("known_types", unknownType.Known)
	case errors.As(err, &inputErr):
		p = New(http.StatusUnprocessableEntity, "invalid-input", "Invalid job input", inputErr.Error()).
			With("errors", inputErr.Errors)
	case errors.Is(err, jobs.ErrNotFound), errors.Is(err, blob.ErrNotFound):
		p = New(http.StatusNotFound, "not-found", "Not found", "no such job, or its record has expired")
	case errors.Is(err, jobs.ErrNotFinished):
		p = New(http.StatusConflict, "not-finished", "Job has not succeeded", err.Error())
	case errors.Is(err, jobs.ErrFinished):
		p = New(http.StatusConflict, "already-finished", "Job already finished", err.Error())
	case errors.As(err, &quotaErr):
		// Retry-After is a hint: when a slot frees depends on the jobs.
		p = New(http.StatusTooManyRequests, "quota-exceeded", "Too many active jobs",
			"you have "+strconv.Itoa(quotaErr.Active)+" jobs queued or running, the most allowed; wait for one to end or cancel one").
			With("active_jobs", quotaErr.Active).With("limit", quotaErr.Limit).WithHeader("Retry-After", "5")
	case errors.Is(err, jobs.ErrBadCursor):
		p = BadRequest("cursor is not one this API handed out")
	case redisconn.Unavailable(err):
		// Redis is away (down, frozen, loading): the request may be
		// repeated as it was. The Redis client's monitor logs the outage
		// once, so Abort does not log each request.
		p = New(http.StatusServiceUnavailable, KindRedisUnavailable, "Service unavailable",
			"the data store did not answer in time; nothing was changed that the request asked for, retry after Retry-After seconds").
			WithHeader("Retry-After", "2")
	default:
		p = New(http.StatusInternalServerError, "internal", "Internal error", "")
	}
	p.Err = err
	return p
}

// Abort answers the request with err as problem+json and stops the handler
// chain. 5xx causes are logged; client errors are not (they are the
// client's, and could be made to flood the log).
func Abort(c *gin.Context, err error) {
	p := From(err)
	// Redis being away is logged once by its client's monitor, and a
	// failing /readyz is its poller's to report: neither per request.
	if p.Status >= 500 && p.Type != TypePrefix+KindRedisUnavailable && p.Type != TypePrefix+"not-ready" {
		slog.ErrorContext(c.Request.Context(), "request failed", "method", c.Request.Method, "path", c.FullPath(), "err", err)
	}
	if p.Instance == "" {
		// A copy: p may be a shared value (a package's ready-made answer),
		// and this request's path is this response's alone.
		cp := *p
		cp.Instance = c.Request.URL.Path
		p = &cp
	}
	Write(c.Writer, p)
	c.Abort()
}

// Write sends p on w.
func Write(w http.ResponseWriter, p *Problem) {
	for k, v := range p.Headers {
		w.Header().Set(k, v)
	}
	body, err := json.Marshal(p)
	if err != nil {
		body = []byte(`{"type":"` + TypePrefix + `internal","title":"Internal error","status":500}`)
		p.Status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", ContentType)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	_, _ = w.Write(body)
}

// NoRoute answers unknown paths and methods with problem+json instead of
// Gin's plain text.
func NoRoute(c *gin.Context) {
	Abort(c, New(http.StatusNotFound, "not-found", "Not found", "no route for "+c.Request.Method+" "+c.Request.URL.Path))
}
