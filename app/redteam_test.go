package app_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/go-redis/redis_rate/v10"

	"github.com/claimcheck/claimcheck/api/ratelimit"
	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/secret"
	"github.com/claimcheck/claimcheck/tokens"
)

// Holes the red team's black-box re-test of issue 10 found around the
// fixes; each test failed on the main it was written against.

// TestRedteamSubSecondLinkExpiryIsInvalidRequest: a link asked for with an
// expires_in under a second is a bad request (422 naming expires_in), not a
// 401 invalid-token that tells the holder its perfectly good token is dead
// (links end on a whole second, so such a link would end before it starts).
func TestRedteamSubSecondLinkExpiryIsInvalidRequest(t *testing.T) {
	s := newStack(t)
	sub := s.submit(t, `{"type":"primes","input":{"n":1000}}`)
	s.waitState(t, sub, jobs.StateSucceeded)
	for _, d := range []string{"1ns", "500ms", "999ms"} {
		r := do(t, "POST", s.progress.URL+"/v1/jobs/"+sub.ID+"/links", sub.Token, strings.NewReader(`{"expires_in":"`+d+`"}`))
		p := decode[problemBody](t, r)
		if r.StatusCode != http.StatusUnprocessableEntity || p.Type != "urn:claimcheck:problem:invalid-request" {
			t.Errorf("expires_in %s: %d %s %q", d, r.StatusCode, p.Type, p.Detail)
		}
	}
	// The token still works, and a one-second link is fine.
	if r := do(t, "POST", s.progress.URL+"/v1/jobs/"+sub.ID+"/links", sub.Token, strings.NewReader(`{"expires_in":"1s"}`)); r.StatusCode != http.StatusCreated {
		t.Fatalf("expires_in 1s: %d", r.StatusCode)
	}
}

// TestRedteamGatewayAnswersEveryPathWithProblems: the gateway's own mux must
// not answer with Go's text/html redirect for an unclean path (dot
// segments, a double slash): every answer of every process is
// problem+json or the upstream's, never an HTML page.
func TestRedteamGatewayAnswersEveryPathWithProblems(t *testing.T) {
	s := newStack(t)
	tg := newTrustGateway(t, s)
	// Go's client sends these paths as written: it cleans none of them.
	for _, path := range []string{"/v1/results/../api-keys", "//v1/api-keys", "/v1/auth/../jobs", "/static/../../etc/passwd"} {
		req, err := http.NewRequest("GET", tg.gw.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); strings.HasPrefix(ct, "text/html") || resp.StatusCode/100 == 3 {
			t.Errorf("GET %s: %d %s %.60q", path, resp.StatusCode, ct, b)
		}
	}
}

// TestRedteamGatewayRefusalsCarryARequestID: a request the gateway refuses
// itself (a client's at+jwt, 401 credential-not-accepted) gets an
// X-Request-Id like every other answer, so it can be found in the logs —
// the gateway logs and ids only its own routes, not what it proxies or
// refuses on the way.
func TestRedteamGatewayRefusalsCarryARequestID(t *testing.T) {
	s := newStack(t)
	tg := newTrustGateway(t, s)
	session, _ := s.login(t)
	internal := tg.exchange(t, session)
	r := do(t, "GET", tg.gw.URL+"/v1/api-keys", internal, nil)
	if r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("client at+jwt through the gateway: %d", r.StatusCode)
	}
	if r.Header.Get("X-Request-Id") == "" {
		t.Error("the gateway's 401 credential-not-accepted has no X-Request-Id")
	}
	if r := do(t, "GET", tg.gw.URL+"/v1/jobs", session, nil); r.Header.Get("X-Request-Id") == "" {
		t.Error("a proxied answer has no X-Request-Id")
	}
}

// TestRedteamSignedOutInternalTokenCannotReissueJobTokens: a copied at+jwt
// whose session has ended (sign out everywhere) must not mint new
// credentials within its remaining 60 s — a re-issued job token is one, and
// lives as long as the job's original (days), so without a live-session
// check on POST /v1/jobs/{id}/token the "≤ 60 s" of an internal token
// becomes days of access to every job of the user. Refused: 401, and the
// job's token epoch (what revoke-tokens would bump) unchanged.
func TestRedteamSignedOutInternalTokenCannotReissueJobTokens(t *testing.T) {
	s := newStack(t)
	tg := newTrustGateway(t, s)
	session, _ := s.login(t)
	at := tg.exchange(t, session)
	r := do(t, "POST", tg.gw.URL+"/v1/jobs", session, strings.NewReader(`{"type":"primes","input":{"n":100}}`))
	sub := decode[submitted](t, r)
	if r.StatusCode != 202 {
		t.Fatalf("submit through the gateway: %d", r.StatusCode)
	}
	if r := do(t, "DELETE", tg.gw.URL+"/v1/sessions", session, nil); r.StatusCode != 204 {
		t.Fatalf("sign out everywhere: %d", r.StatusCode)
	}
	for _, path := range []string{"/v1/jobs/" + sub.ID + "/token", "/v1/jobs/" + sub.ID + "/revoke-tokens"} {
		r := do(t, "POST", tg.api.URL+path, at, strings.NewReader(`{}`))
		b, _ := io.ReadAll(r.Body)
		if r.StatusCode != http.StatusUnauthorized {
			t.Errorf("POST %s with a signed-out at+jwt: %d %.120s", path, r.StatusCode, b)
		}
	}
	// The submission's own token still works: nothing was revoked.
	if r := do(t, "GET", s.progress.URL+"/v1/jobs/"+sub.ID, sub.Token, nil); r.StatusCode != 200 {
		t.Fatalf("the original job token after the refusals: %d", r.StatusCode)
	}
}

// TestRevokedKeysInternalTokenCannotReissueJobTokens: the same for an
// at+jwt minted from an API key: it carries the key's id, so the api
// confirms the key is live before re-issuing — which works while it is,
// and is refused once the key is revoked.
func TestRevokedKeysInternalTokenCannotReissueJobTokens(t *testing.T) {
	s := newStack(t)
	tg := newTrustGateway(t, s)
	at := tg.exchange(t, s.apiKey)
	r := do(t, "POST", tg.gw.URL+"/v1/jobs", s.apiKey, strings.NewReader(`{"type":"primes","input":{"n":100}}`))
	sub := decode[submitted](t, r)
	if r.StatusCode != 202 {
		t.Fatalf("submit through the gateway: %d", r.StatusCode)
	}
	reissue := func() int {
		r := do(t, "POST", tg.api.URL+"/v1/jobs/"+sub.ID+"/token", at, strings.NewReader(`{"scope":"job:read"}`))
		r.Body.Close()
		return r.StatusCode
	}
	if code := reissue(); code != http.StatusCreated {
		t.Fatalf("re-issue with a live key's at+jwt: %d", code)
	}
	p, err := s.dir.APIKeys.Authenticate(context.Background(), secret.Secret(s.apiKey))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.dir.APIKeys.Revoke(context.Background(), p.CredentialID); err != nil {
		t.Fatal(err)
	}
	if code := reissue(); code != http.StatusUnauthorized {
		t.Fatalf("re-issue with a revoked key's at+jwt: %d, want 401", code)
	}
}

// TestGatewayProxyLimitsTheClientBehindATrustedProxy: behind a load
// balancer named by --trusted-proxy, the gateway's reverse proxy keys its
// exchange limit on the client the balancer reports, so one client spending
// it on made-up credentials does not refuse another; a client's own
// X-Forwarded-For is believed from no one else.
func TestGatewayProxyLimitsTheClientBehindATrustedProxy(t *testing.T) {
	s := newStack(t)
	limits := ratelimit.DefaultLimits()
	limits.Exchange = redis_rate.PerMinute(2)
	cfg := app.Config{DataDir: t.TempDir(), Argon2: cheapArgon2, Logger: slog.New(slog.DiscardHandler),
		Limits: &limits, TrustedProxies: []string{"127.0.0.1"}}.WithDefaults()
	gwKeys, _, err := tokens.EnsureDir(cfg.GatewayKeyDir)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := app.Gateway(cfg, s.rdb, app.Identity(cfg, s.rdb), gwKeys)
	if err != nil {
		t.Fatal(err)
	}
	upstream, _ := url.Parse(s.api.URL)
	srv := httptest.NewServer(app.GatewayHandler(cfg, gw, upstream, nil))
	t.Cleanup(srv.Close)
	call := func(client string) int {
		r := do(t, "GET", srv.URL+"/v1/jobs", "cck_made-up", nil, "X-Forwarded-For", client)
		r.Body.Close()
		return r.StatusCode
	}
	for i := range 2 {
		if code := call("198.51.100.1"); code != http.StatusUnauthorized {
			t.Fatalf("made-up key %d from the first client: %d", i, code)
		}
	}
	if code := call("198.51.100.1"); code != http.StatusTooManyRequests {
		t.Fatalf("third made-up key from the first client: %d, want 429", code)
	}
	if code := call("198.51.100.2"); code != http.StatusUnauthorized {
		t.Fatalf("another client behind the same balancer: %d, want its own budget (401)", code)
	}
}
