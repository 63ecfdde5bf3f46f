package gateway

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/claimcheck/claimcheck/api/authn"
	"github.com/claimcheck/claimcheck/api/problem"
	"github.com/claimcheck/claimcheck/internal/identity"
)

// Proxy returns a reverse proxy to upstream that performs the exchange on
// every request carrying a claimcheck credential: the credential (session
// cookie or bearer) is removed and Authorization: Bearer <at+jwt> and
// X-Claimcheck-User are sent upstream instead. A refused credential never
// reaches upstream. Requests without one pass through unchanged (login,
// public routes, job tokens for the progress service), except that a
// client's own X-Claimcheck-User is always dropped. WebSocket upgrades and
// server-sent events pass through (httputil.ReverseProxy flushes event
// streams as they come).
func (s *Service) Proxy(upstream *url.URL) http.Handler {
	rp := s.reverseProxy(upstream)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del(HeaderUser)
		if isClaimcheckCredential(r) {
			// The gateway is the proxy here: the method is the request's
			// own, never one a header names.
			e, err := s.exchange(r.Context(), r, r.Method, func() string { return remoteIP(r) })
			if err != nil {
				problem.Write(w, problem.From(err))
				return
			}
			r.Header.Set("Authorization", e.authorization[0])
			r.Header.Set(HeaderUser, e.user)
		}
		// Upstream never sees the session, exchanged or not.
		stripSessionCookie(r)
		rp.ServeHTTP(w, r)
	})
}

// PassThrough proxies to the progress service, which takes job tokens and
// download links, never people's credentials: nothing is exchanged, and the
// session cookie and any X-Claimcheck-User are removed all the same.
func (s *Service) PassThrough(upstream *url.URL) http.Handler {
	rp := s.reverseProxy(upstream)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del(HeaderUser)
		stripSessionCookie(r)
		rp.ServeHTTP(w, r)
	})
}

// ProgressRoute reports whether a request belongs to the progress service:
// a job's status, events, cancel, result and links, and download links.
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
	case "events", "cancel", "result", "links":
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
// token) are not the gateway's to exchange.
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

// remoteIP is the connection's address: the proxy is the edge, so it
// believes no X-Forwarded-For.
func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
