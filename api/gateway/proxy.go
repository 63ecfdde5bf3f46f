package gateway

import (
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/claimcheck/claimcheck/api/authn"
	"github.com/claimcheck/claimcheck/api/problem"
	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/secret"
	"github.com/claimcheck/claimcheck/tokens"
)

// Proxy returns a reverse proxy to upstream that performs the exchange on
// every request carrying a claimcheck credential: the credential (session
// cookie or bearer) is removed and Authorization: Bearer <at+jwt> and
// X-Claimcheck-User are sent upstream instead. A refused credential never
// reaches upstream. Requests without one pass through (login, public
// routes), except that a client's own X-Claimcheck-User is always dropped.
// WebSocket upgrades and server-sent events pass through
// (httputil.ReverseProxy flushes event streams as they come).
//
// The only tokens a client may send through are a job token or download
// link, to the progress service's routes (see forwardable): a client's
// at+jwt, or any other bearer, is refused with 401
// credential-not-accepted, so an internal token that leaked from behind
// the gateway is no way in from the outside.
func (s *Service) Proxy(upstream *url.URL) http.Handler {
	rp := s.reverseProxy(upstream)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del(HeaderUser)
		exchange := isClaimcheckCredential(r)
		if err := forwardable(r, !exchange); err != nil {
			problem.Write(w, err)
			return
		}
		if exchange {
			// The gateway is the proxy here: the method is the request's
			// own, never one a header names.
			e, err := s.exchange(r.Context(), r, r.Method, func() string { return s.cfg.TrustedProxies.ClientIP(r) })
			if err != nil {
				problem.Write(w, problem.From(err))
				return
			}
			// Set, not Add: whatever the client sent is replaced.
			r.Header.Set("Authorization", e.authorization[0])
			r.Header.Set(HeaderUser, e.user)
		}
		// Upstream never sees the session, exchanged or not.
		stripSessionCookie(r)
		rp.ServeHTTP(w, r)
	})
}

// PassThrough proxies to the progress service, which takes job tokens and
// download links, never people's credentials: nothing is exchanged, a
// bearer that is not a job token or link is refused (a session or API key
// is never shown to the progress service), and the session cookie and any
// X-Claimcheck-User are removed.
func (s *Service) PassThrough(upstream *url.URL) http.Handler {
	rp := s.reverseProxy(upstream)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del(HeaderUser)
		if err := forwardable(r, true); err != nil {
			problem.Write(w, err)
			return
		}
		stripSessionCookie(r)
		rp.ServeHTTP(w, r)
	})
}

// errNotAccepted refuses a token the gateway will not forward.
var errNotAccepted = problem.New(http.StatusUnauthorized, "credential-not-accepted", "Credential not accepted here",
	"the gateway forwards only job tokens and download links, and only to job status, events, logs, cancel, result and "+
		"download routes; elsewhere sign in, or send a session or API key").
	WithHeader("WWW-Authenticate", `Bearer realm="claimcheck", error="invalid_token"`)

// tokenParams are the query parameters in which the progress service takes
// a token: ?token= (EventSource cannot set headers) and a link's ?sig=.
var tokenParams = [...]string{"token", "sig"}

// forwardable checks the tokens r carries that the gateway does not
// exchange: the Authorization header (when bearer is set, that is, when it
// is not about to be replaced) and ?token= / ?sig=. Each must be a job
// token or download link, and the route one of the progress service's.
// Their JOSE header is read without verifying (the progress service
// verifies); it only routes.
func forwardable(r *http.Request, bearer bool) *problem.Problem {
	progress := ProgressRoute(r.Method, r.URL.Path)
	if authz := r.Header.Values("Authorization"); bearer && len(authz) > 0 {
		// One header only: upstream reads the first, and a second must not
		// ride along unchecked.
		cred, ok := secret.FromAuthorization(authz[0])
		if len(authz) > 1 || !ok || !progress || !progressToken(cred.Reveal()) {
			return errNotAccepted
		}
	}
	if r.URL.RawQuery == "" {
		return nil
	}
	q := r.URL.Query()
	for _, name := range tokenParams {
		for _, v := range q[name] {
			if !progress || !progressToken(v) {
				return errNotAccepted
			}
		}
	}
	return nil
}

// progressToken reports whether raw is a JWT whose header names it a job
// token or a download link.
func progressToken(raw string) bool {
	if len(raw) > tokens.MaxTokenSize {
		return false
	}
	t, _, err := jwt.NewParser().ParseUnverified(raw, jwt.MapClaims{})
	if err != nil {
		return false
	}
	typ, _ := t.Header["typ"].(string)
	return typ == tokens.TypeJob || typ == tokens.TypeLink
}

// ProgressRoute reports whether a request belongs to the progress service:
// a job's status, events, logs, cancel, result and links, and download
// links.
// (POST /v1/jobs/{id}/token and revoke-tokens are the api's.)
func ProgressRoute(method, path string) bool {
	if strings.HasPrefix(path, "/v1/results/") {
		return true
	}
	rest, ok := strings.CutPrefix(path, "/v1/jobs/")
	if !ok || rest == "" {
		return false
	}
	id, sub, nested := strings.Cut(rest, "/")
	if id == "" {
		return false
	}
	if !nested {
		return method == http.MethodGet || method == http.MethodHead
	}
	switch sub {
	case "events", "logs", "cancel", "result", "links", "receipt":
		return true
	}
	return false
}

func (s *Service) reverseProxy(upstream *url.URL) *httputil.ReverseProxy {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	// Headers must come within 90 s (a long-poll waits up to 60); bodies,
	// event streams among them, may take as long as they need.
	transport.ResponseHeaderTimeout = 90 * time.Second
	return &httputil.ReverseProxy{
		Transport: transport,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upstream)
			pr.SetXForwarded()
			pr.Out.Host = pr.In.Host // upstream sees the public host (cookies, links)
			// Forwarding headers still on the inbound request came from a
			// trusted proxy in front of the gateway (package forwarded
			// removed anyone else's): pass its view of host and scheme on.
			for _, h := range []string{"X-Forwarded-Host", "X-Forwarded-Proto"} {
				if v := pr.In.Header.Values(h); len(v) > 0 {
					pr.Out.Header[h] = slices.Clone(v)
				}
			}
			// Forward-auth headers mean nothing upstream.
			for _, h := range []string{"X-Forwarded-Method", "X-Forwarded-Uri", "X-Original-Method", "X-Original-URI"} {
				pr.Out.Header.Del(h)
			}
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			p := problem.New(http.StatusBadGateway, "bad-gateway", "Upstream unavailable", "the service behind the gateway did not answer")
			p.Err = err
			s.cfg.Logger.Error("gateway upstream", "path", r.URL.Path, "err", err)
			problem.Write(w, p)
		},
	}
}

// isClaimcheckCredential reports whether r carries a session cookie or a
// bearer session or API key; other bearer values (a job token, an internal
// token) are not the gateway's to exchange (see forwardable).
func isClaimcheckCredential(r *http.Request) bool {
	cred, viaCookie := authn.FromRequest(r)
	if cred == "" {
		return false
	}
	raw := cred.Reveal()
	return viaCookie || strings.HasPrefix(raw, identity.SessionPrefix) || strings.HasPrefix(raw, identity.APIKeyPrefix)
}

// stripSessionCookie removes the session cookie and keeps any others.
func stripSessionCookie(r *http.Request) {
	cookies := r.Cookies()
	r.Header.Del("Cookie")
	for _, c := range cookies {
		if c.Name != authn.CookieName {
			r.AddCookie(c)
		}
	}
}
