package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Error is an answer that was not a success, read from its RFC 9457
// problem+json body.
type Error struct {
	Status int
	// Type is the problem type, urn:claimcheck:problem:<kind>.
	Type   string
	Title  string
	Detail string
	// Extensions are the problem's other members (known_types, errors, …).
	Extensions map[string]any
	// RetryAfter is the server's Retry-After, when it sent one.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("claimcheck: %d %s", e.Status, e.Title)
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// Sentinels for errors.Is on an *Error, by status.
var (
	ErrUnauthorized = errors.New("unauthorized")    // 401: no, bad, expired or revoked credential or token
	ErrForbidden    = errors.New("forbidden")       // 403: another job's token, a missing scope, CSRF
	ErrNotFound     = errors.New("not found")       // 404
	ErrConflict     = errors.New("conflict")        // 409: not finished, already finished
	ErrRateLimited  = errors.New("rate limited")    // 429: see RetryAfter
	ErrInvalid      = errors.New("invalid request") // 400, 413, 422
)

// Sentinels for errors.Is on a *StreamEndError (and, for their status, on
// an *Error they match ErrUnauthorized's).
var (
	ErrTokenExpired = errors.New("job token expired") // the stream reached the token's exp
	ErrTokenRevoked = errors.New("job token revoked") // the job's tokens were revoked
)

// StreamEndError is Wait's error when the server ended the job's event
// stream before the job ended, because the token it was opened with expired
// or was revoked: reconnecting with that token cannot help, so Wait returns
// instead. errors.Is matches ErrTokenExpired or ErrTokenRevoked by Reason,
// and ErrUnauthorized for both.
type StreamEndError struct {
	// Reason is the end event's: "token_expired" or "token_revoked".
	Reason string
}

func (e *StreamEndError) Error() string { return "claimcheck: event stream ended: " + e.Reason }

// Is matches ErrTokenExpired, ErrTokenRevoked and ErrUnauthorized.
func (e *StreamEndError) Is(target error) bool {
	switch target {
	case ErrTokenExpired:
		return e.Reason == endTokenExpired
	case ErrTokenRevoked:
		return e.Reason == endTokenRevoked
	case ErrUnauthorized:
		return e.Reason == endTokenExpired || e.Reason == endTokenRevoked
	}
	return false
}

// The end event's reasons.
const (
	endTokenExpired = "token_expired"
	endTokenRevoked = "token_revoked"
)

// Is matches the sentinel for the error's status.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrForbidden:
		return e.Status == http.StatusForbidden
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrConflict:
		return e.Status == http.StatusConflict
	case ErrRateLimited:
		return e.Status == http.StatusTooManyRequests
	case ErrInvalid:
		return e.Status == http.StatusBadRequest || e.Status == http.StatusRequestEntityTooLarge || e.Status == http.StatusUnprocessableEntity
	}
	return false
}

func errorFrom(resp *http.Response) error {
	e := &Error{Status: resp.StatusCode, Title: http.StatusText(resp.StatusCode)}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	var m map[string]any
	if json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&m) == nil {
		e.Type, _ = m["type"].(string)
		if t, ok := m["title"].(string); ok {
			e.Title = t
		}
		e.Detail, _ = m["detail"].(string)
		for _, k := range []string{"type", "title", "status", "detail", "instance"} {
			delete(m, k)
		}
		if len(m) > 0 {
			e.Extensions = m
		}
	}
	return e
}
