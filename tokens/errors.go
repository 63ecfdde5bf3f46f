package tokens

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalid is wrapped by every reason a token is refused outright (HTTP
// 401): it is malformed, forged, expired or not meant for this verifier.
var ErrInvalid = errors.New("invalid token")

// The reasons a token is invalid. Each wraps ErrInvalid.
var (
	ErrMalformed       = fmt.Errorf("%w: malformed", ErrInvalid)
	ErrTooLarge        = fmt.Errorf("%w: too large", ErrInvalid)
	ErrWrongType       = fmt.Errorf("%w: wrong typ", ErrInvalid)
	ErrForbiddenHeader = fmt.Errorf("%w: forbidden header", ErrInvalid)
	ErrUnknownKey      = fmt.Errorf("%w: unknown signing key", ErrInvalid)
	ErrSignature       = fmt.Errorf("%w: bad signature or algorithm", ErrInvalid)
	ErrExpired         = fmt.Errorf("%w: expired", ErrInvalid)
	ErrNotYetValid     = fmt.Errorf("%w: not yet valid", ErrInvalid)
	ErrWrongIssuer     = fmt.Errorf("%w: wrong issuer", ErrInvalid)
	ErrWrongAudience   = fmt.Errorf("%w: wrong audience", ErrInvalid)
)

// ErrKeysUnavailable means the verifier has no keys to check a token with
// yet (a JWKS not fetched since the process started). It does not wrap
// ErrInvalid: the token may be fine, so the answer is 503 with
// Retry-After, not 401.
var ErrKeysUnavailable = errors.New("verification keys not loaded yet")

// ErrForbidden is wrapped by every reason a valid token does not allow a
// request (HTTP 403).
var ErrForbidden = errors.New("token does not allow this")

// ErrWrongJob means the token names another job.
var ErrWrongJob = fmt.Errorf("%w: token is for another job", ErrForbidden)

// ScopeError means the token lacks the scope a request needs.
type ScopeError struct {
	Need string
	Have []string
}

func (e *ScopeError) Error() string {
	return "token lacks scope " + e.Need + " (has " + strings.Join(e.Have, " ") + ")"
}

// Unwrap makes a ScopeError an ErrForbidden.
func (e *ScopeError) Unwrap() error { return ErrForbidden }

// verifyError reports one reason with the library error that caused it:
// its text is the reason's alone, and errors.Is finds both.
type verifyError struct {
	reason error
	cause  error
}

func (e *verifyError) Error() string {
	if e.cause != nil && e.reason == ErrMalformed {
		return e.reason.Error() + ": " + e.cause.Error()
	}
	return e.reason.Error()
}

func (e *verifyError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.reason}
	}
	return []error{e.reason, e.cause}
}

// Reason names why err refused a token, for metrics: "ok" for nil, else a
// short fixed word (never the token or the error's text).
func Reason(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrKeysUnavailable):
		return "keys-unavailable"
	case errors.Is(err, ErrExpired):
		return "expired"
	case errors.Is(err, ErrSignature):
		return "signature"
	case errors.Is(err, ErrUnknownKey):
		return "unknown-key"
	case errors.Is(err, ErrWrongType):
		return "wrong-type"
	case errors.Is(err, ErrForbiddenHeader):
		return "forbidden-header"
	case errors.Is(err, ErrWrongIssuer), errors.Is(err, ErrWrongAudience):
		return "wrong-issuer-or-audience"
	case errors.Is(err, ErrNotYetValid):
		return "not-yet-valid"
	case errors.Is(err, ErrTooLarge):
		return "too-large"
	}
	return "malformed"
}
