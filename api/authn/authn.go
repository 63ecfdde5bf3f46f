// Package authn authenticates people on the API: a bearer credential (API
// key or session) or the session cookie that browsers send. It owns the
// cookie's attributes and the CSRF rule for cookie-authenticated requests.
//
// CSRF: a browser attaches the cookie to cross-site requests, so a request
// that authenticates by cookie and changes state (any method but GET, HEAD
// and OPTIONS) must carry an Origin header naming this site — scheme, host
// and port (see SameOrigin). Bearer
// credentials are never sent by a browser on its own, so they need no check.
// SameSite=Lax on the cookie is a second line of defence, not the first.
package authn

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/claimcheck/claimcheck/api/forwarded"
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
		if refused(c, err) {
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

// SessionChecker confirms, against the session store and at the moment of
// asking, that user has a live session with id (identity.Sessions does).
// An unknown, foreign or expired session is an error wrapping
// identity.ErrUnauthenticated.
type SessionChecker interface {
	Confirm(ctx context.Context, user, id string) error
}

// RequireSession guards managing credentials (creating and listing API
// keys, listing sessions): it refuses anything but a session (403
// session-required), and a session that is not live in the session store
// in this very request (401). Behind a gateway the principal comes from an
// internal token whose sid was live when it was minted, up to a minute ago;
// confirming it here is what stops a copied internal token from turning
// into a credential that outlives it, or one that survives "sign out
// everywhere". It costs one lookup on these routes only.
func RequireSession(live SessionChecker) gin.HandlerFunc {
	return func(c *gin.Context) {
		p := Principal(c)
		if p == nil || p.Via != "session" || p.CredentialID == "" {
			problem.Abort(c, problem.New(http.StatusForbidden, "session-required", "Session required",
				"sign in with a password to manage API keys and sessions; an API key cannot"))
			return
		}
		if refused(c, live.Confirm(c, p.UserID, p.CredentialID)) {
			return
		}
		c.Next()
	}
}

// CredentialChecker confirms, at the moment of asking, that the credential
// a principal was authenticated with is live (identity.Directory does).
type CredentialChecker interface {
	Confirm(ctx context.Context, p *identity.Principal) error
}

// RequireLive guards routes that derive a credential outliving the
// request's own — re-issuing a job token, revoking a job's tokens for a
// fresh one — behind a gateway, where the principal comes from an internal
// token: its session or API key must be live in Redis in this request, so
// a copied internal token cannot outlast "sign out everywhere" or a
// revoked key through the job tokens it collects. A nil live means the
// principal was looked up in this request already (no gateway), and
// nothing is checked.
func RequireLive(live CredentialChecker) gin.HandlerFunc {
	return func(c *gin.Context) {
		if live == nil {
			c.Next()
			return
		}
		if refused(c, live.Confirm(c, Principal(c))) {
			return
		}
		c.Next()
	}
}

// refused answers a failed credential lookup or confirmation and reports
// whether it did: an unknown, ended or revoked credential is ErrRevoked
// (and a browser's cookie is cleared), anything else its own problem.
func refused(c *gin.Context, err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, identity.ErrUnauthenticated) {
		if _, viaCookie := FromRequest(c.Request); viaCookie {
			ClearCookie(c)
		}
		err = ErrRevoked
	}
	problem.Abort(c, err)
	return true
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

// SameOrigin reports whether the request comes from a page of this site:
// its Origin, compared as scheme, host and port (RFC 6454), equals the
// origin the request was sent to. That origin is https when the connection
// is TLS or a trusted proxy's X-Forwarded-Proto says so, and the host is a
// trusted proxy's X-Forwarded-Host or else Host; default ports (http 80,
// https 443) and case do not matter. Forwarding headers from anyone but a
// --trusted-proxy never get this far (package forwarded removes them).
//
// "Origin: null" (a sandboxed frame, a redirect across sites, a file: page)
// names no site, so it is refused — no Referer can vouch for it. Only a
// request with no Origin at all (older browsers, some same-origin requests)
// falls back to its Referer, compared the same way.
func SameOrigin(r *http.Request) bool {
	src, sent := r.Header["Origin"]
	if !sent {
		src = r.Header.Values("Referer")
	}
	if len(src) != 1 { // none, or two that might disagree
		return false
	}
	got, ok := originOf(src[0], sent)
	if !ok {
		return false
	}
	want, ok := originOf(forwarded.Proto(r)+"://"+forwarded.Host(r), true)
	return ok && got == want
}

// originOf normalises u to scheme://host:port, lower case with the port
// spelled out. An Origin (isOrigin) may carry nothing else; a Referer may
// carry a path and query.
func originOf(u string, isOrigin bool) (string, bool) {
	p, err := url.Parse(u)
	if err != nil || p.Host == "" || p.User != nil || p.Opaque != "" {
		return "", false
	}
	if isOrigin && (p.Path != "" || p.RawQuery != "" || p.Fragment != "") {
		return "", false
	}
	scheme := strings.ToLower(p.Scheme)
	port := p.Port()
	switch {
	case port != "":
	case scheme == "http":
		port = "80"
	case scheme == "https":
		port = "443"
	default:
		return "", false
	}
	host := strings.ToLower(p.Hostname())
	if host == "" {
		return "", false
	}
	return scheme + "://" + net.JoinHostPort(host, port), true
}

// secureRequest reports whether the client reached us over TLS, directly or
// through a trusted proxy that says so.
func secureRequest(r *http.Request) bool {
	return forwarded.Proto(r) == "https"
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
