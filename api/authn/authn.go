// Package authn authenticates people on the API: a bearer credential (API
// key or session) or the session cookie that browsers send. It owns the
// cookie's attributes and the CSRF rule for cookie-authenticated requests.
//
// CSRF: a browser attaches the cookie to cross-site requests, so a request
// that authenticates by cookie and changes state (any method but GET, HEAD
// and OPTIONS) must carry an Origin header naming this site. Bearer
// credentials are never sent by a browser on its own, so they need no check.
// SameSite=Lax on the cookie is a second line of defence, not the first.
package authn

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/claimcheck/claimcheck/api/problem"
	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/secret"
)

// CookieName is the session cookie.
const CookieName = "claimcheck_session"

// Authenticator resolves a credential to a principal; an unknown, expired or
// revoked credential is an error wrapping identity.ErrUnauthenticated.
type Authenticator interface {
	Authenticate(ctx context.Context, s secret.Secret) (*identity.Principal, error)
}

// ErrRevoked answers a credential that is unknown, expired or revoked —
// including one whose user was blocked while the request was under way.
var ErrRevoked = problem.Unauthorized("the credential is unknown, expired or revoked",
	`Bearer realm="claimcheck", error="invalid_token"`)

// Principal returns who the request acts for; nil before Require ran.
func Principal(c *gin.Context) *identity.Principal {
	p, _ := c.Get(principalKeyName)
	pp, _ := p.(*identity.Principal)
	return pp
}

const principalKeyName = "claimcheck.principal"

// Credential returns the raw credential the request authenticated with, so
// that "log out" can name the current session.
func Credential(c *gin.Context) secret.Secret {
	v, _ := c.Get(credentialKeyName)
	s, _ := v.(secret.Secret)
	return s
}

const credentialKeyName = "claimcheck.credential"

// Require authenticates every request it guards, answering 401 (or 403 for
// a cookie request that fails the CSRF check) before the handler runs.
func Require(a Authenticator) gin.HandlerFunc {
	return func(c *gin.Context) {
		cred, viaCookie := FromRequest(c.Request)
		if cred == "" {
			problem.Abort(c, problem.Unauthorized("sign in, or send an API key or session: Authorization: Bearer <credential>",
				`Bearer realm="claimcheck"`))
			return
		}
		if viaCookie && !SafeMethod(c.Request.Method) && !SameOrigin(c.Request) {
			problem.Abort(c, problem.New(http.StatusForbidden, "csrf", "Cross-site request refused",
				"a cookie-authenticated request that changes state must carry an Origin header naming this site"))
			return
		}
		p, err := a.Authenticate(c, cred)
		if errors.Is(err, identity.ErrUnauthenticated) {
			if viaCookie {
				ClearCookie(c)
			}
			problem.Abort(c, ErrRevoked)
			return
		}
		if err != nil {
			problem.Abort(c, err)
			return
		}
		c.Set(principalKeyName, p)
		c.Set(credentialKeyName, cred)
		c.Next()
	}
}

// RequireScope answers 403 insufficient_scope (RFC 6750 §3.1) unless the
// credential Require accepted carries scope.
func RequireScope(scope string) gin.HandlerFunc {
	return func(c *gin.Context) {
		if p := Principal(c); p == nil || !p.Can(scope) {
			problem.Abort(c, InsufficientScope(scope))
			return
		}
		c.Next()
	}
}

// InsufficientScope is the 403 for a credential that lacks scope, for a
// handler whose need for a scope depends on the request (RequireScope
// answers the same for a whole route).
func InsufficientScope(scope string) *problem.Problem {
	return problem.New(http.StatusForbidden, "insufficient-scope", "Insufficient scope",
		"this credential lacks the "+scope+" scope").
		WithHeader("WWW-Authenticate", `Bearer realm="claimcheck", error="insufficient_scope", scope="`+scope+`"`)
}

// RequireSession refuses credentials other than a session (an API key, an
// internal token): what it guards is managing credentials, which a leaked
// key must not be able to do.
func RequireSession(c *gin.Context) {
	if p := Principal(c); p == nil || p.Via != "session" {
		problem.Abort(c, problem.New(http.StatusForbidden, "session-required", "Session required",
			"sign in with a password to manage API keys; an API key cannot manage keys"))
		return
	}
	c.Next()
}

// FromRequest takes the bearer credential, else the session cookie; the
// bool says it came from the cookie (and so needs the CSRF check).
func FromRequest(r *http.Request) (secret.Secret, bool) {
	if s, ok := secret.FromAuthorization(r.Header.Get("Authorization")); ok {
		return s, false
	}
	if ck, err := r.Cookie(CookieName); err == nil && ck.Value != "" {
		return secret.Secret(ck.Value), true
	}
	return "", false
}

// SafeMethod reports whether a method changes nothing (GET, HEAD, OPTIONS),
// so that a cross-site request with it needs no CSRF check.
func SafeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// SameOrigin reports whether the request's Origin (or, failing that, its
// Referer) names the host the request was sent to. Behind a proxy the
// forwarded host counts.
func SameOrigin(r *http.Request) bool {
	src := r.Header.Get("Origin")
	if src == "" || src == "null" {
		src = r.Header.Get("Referer")
	}
	if src == "" {
		return false
	}
	u, err := url.Parse(src)
	if err != nil || u.Host == "" {
		return false
	}
	host := r.Host
	if fwd := r.Header.Get("X-Forwarded-Host"); fwd != "" {
		host = strings.TrimSpace(strings.Split(fwd, ",")[0])
	}
	return strings.EqualFold(u.Host, host)
}

// secureRequest reports whether the client reached us over TLS, directly or
// through a proxy that says so.
func secureRequest(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

// SetCookie hands a browser its session: HttpOnly (no script can read it),
// SameSite=Lax, and Secure whenever the request came over TLS.
func SetCookie(c *gin.Context, s secret.Secret, expires time.Time) {
	http.SetCookie(c.Writer, &http.Cookie{
		Name: CookieName, Value: s.Reveal(), Path: "/", Expires: expires,
		HttpOnly: true, Secure: secureRequest(c.Request), SameSite: http.SameSiteLaxMode,
	})
}

// ClearCookie tells a browser to drop its session cookie.
func ClearCookie(c *gin.Context) {
	http.SetCookie(c.Writer, &http.Cookie{
		Name: CookieName, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: secureRequest(c.Request), SameSite: http.SameSiteLaxMode,
	})
}
