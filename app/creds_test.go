package app_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/api/gateway"
	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/tokens"
)

// trustGateway is `claimcheck gateway --upstream --progress-upstream` in
// front of `claimcheck api --trust-gateway`, on s's Redis and progress
// service.
type trustGateway struct {
	gw     *httptest.Server // the public origin
	api    *httptest.Server // the api behind it, reachable directly for tests
	dir    *identity.Directory
	keys   *tokens.KeySet // the gateway's signing keys
	minter *tokens.AccessMinter
}

func newTrustGateway(t *testing.T, s *stack) *trustGateway {
	t.Helper()
	ctx := context.Background()
	cfg := app.Config{DataDir: t.TempDir(), Argon2: cheapArgon2, Logger: slog.New(slog.DiscardHandler)}.WithDefaults()
	gwKeys, _, err := tokens.EnsureDir(cfg.GatewayKeyDir)
	if err != nil {
		t.Fatal(err)
	}
	dir := app.Identity(cfg, s.rdb)
	gw, err := app.Gateway(cfg, s.rdb, dir, gwKeys)
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	t.Cleanup(stop)
	ready := make(chan struct{})
	go app.WatchRevocations(wctx, cfg, s.rdb, gw, nil, ready)
	<-ready
	// The api behind it verifies internal tokens with the gateway's JWKS.
	apiCfg := cfg
	apiCfg.JobKeyDir = s.cfg.JobKeyDir // the progress service knows these keys
	jobKeys, _, _ := tokens.EnsureDir(apiCfg.JobKeyDir)
	// The same gateway serves its JWKS on one port and proxies on another,
	// so the api can fetch its keys before the proxy knows the api's URL.
	jwks := httptest.NewServer(app.GatewayHandler(cfg, gw, nil, nil))
	t.Cleanup(jwks.Close)
	if apiCfg.GatewayKeys, err = tokens.NewRemoteKeysOf(ctx, jwks.URL+gateway.JWKSPath, tokens.KindAccess, nil); err != nil {
		t.Fatal(err)
	}
	apiHandler, err := app.APIHandler(apiCfg, s.rdb, jobKeys)
	if err != nil {
		t.Fatal(err)
	}
	tg := &trustGateway{api: httptest.NewServer(apiHandler), dir: dir, keys: gwKeys, minter: &tokens.AccessMinter{Keys: gwKeys}}
	t.Cleanup(tg.api.Close)
	upstream, _ := url.Parse(tg.api.URL)
	progressURL, _ := url.Parse(s.progress.URL)
	tg.gw = httptest.NewServer(app.GatewayHandler(cfg, gw, upstream, progressURL))
	t.Cleanup(tg.gw.Close)
	return tg
}

// exchange turns a session or API key into an internal token at the
// gateway's forward-auth endpoint.
func (tg *trustGateway) exchange(t *testing.T, cred string) string {
	t.Helper()
	resp := do(t, "GET", tg.gw.URL+"/v1/auth/exchange", cred, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("exchange: %d", resp.StatusCode)
	}
	tok, ok := strings.CutPrefix(resp.Header.Get("Authorization"), "Bearer ")
	if !ok {
		t.Fatal("exchange answered no token")
	}
	return tok
}

// keysOf counts user's API keys in Redis.
func (tg *trustGateway) keysOf(t *testing.T, user string) int {
	t.Helper()
	keys, err := tg.dir.APIKeys.ListUser(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	return len(keys)
}

// TestFinding1InternalTokenCannotCreateAPIKey is the review's repro: a
// session exchanged for an at+jwt, the at+jwt used to mint an API key, then
// "sign out everywhere". The gateway refuses a client's at+jwt outright;
// sent straight to the api, an at+jwt manages credentials only while its
// session is live in Redis, and never after sign-out.
func TestFinding1InternalTokenCannotCreateAPIKey(t *testing.T) {
	s := newStack(t)
	tg := newTrustGateway(t, s)
	session, _ := s.login(t)
	at := tg.exchange(t, session)
	before := tg.keysOf(t, "ann")

	// Through the gateway, a client's at+jwt never reaches the api.
	r := do(t, "POST", tg.gw.URL+"/v1/api-keys", at, strings.NewReader(`{"name":"stolen"}`))
	if p := decode[problemBody](t, r); r.StatusCode != 401 || p.Type != "urn:claimcheck:problem:credential-not-accepted" || tg.keysOf(t, "ann") != before {
		t.Fatalf("client at+jwt through the gateway: %d %+v", r.StatusCode, p)
	}
	// The session itself, exchanged by the gateway, may create a key: its
	// session is live.
	r = do(t, "POST", tg.gw.URL+"/v1/api-keys", session, strings.NewReader(`{"name":"mine"}`))
	mine := decode[keyBody](t, r)
	if r.StatusCode != 201 || mine.Key == "" {
		t.Fatalf("create a key with a live session through the gateway: %d", r.StatusCode)
	}
	// Sign out everywhere.
	if r := do(t, "DELETE", tg.gw.URL+"/v1/sessions", session, nil); r.StatusCode != 204 {
		t.Fatalf("sign out everywhere: %d", r.StatusCode)
	}
	before = tg.keysOf(t, "ann")
	waitfor.True(t, time.Second, func() bool {
		return do(t, "GET", tg.gw.URL+"/v1/jobs", session, nil).StatusCode == 401
	})
	// The old at+jwt is still inside its 60 s, but its session is gone:
	// straight to the api it manages no credential any more.
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/v1/api-keys", `{"name":"after sign-out"}`},
		{"GET", "/v1/api-keys", ""},
		{"GET", "/v1/sessions", ""},
		{"DELETE", "/v1/api-keys", ""},
	} {
		var body *strings.Reader
		if tc.body != "" {
			body = strings.NewReader(tc.body)
		}
		var r *http.Response
		if body != nil {
			r = do(t, tc.method, tg.api.URL+tc.path, at, body)
		} else {
			r = do(t, tc.method, tg.api.URL+tc.path, at, nil)
		}
		if p := decode[problemBody](t, r); r.StatusCode != 401 || p.Type != "urn:claimcheck:problem:unauthorized" {
			t.Errorf("%s %s with a signed-out at+jwt: %d %+v", tc.method, tc.path, r.StatusCode, p)
		}
	}
	if n := tg.keysOf(t, "ann"); n != before {
		t.Fatalf("ann has %d keys after the refusals, had %d", n, before)
	}
	// Sign-out-everywhere ends sessions, not API keys (as GitHub's does);
	// "revoke all my API keys" is its own action.
	if r := do(t, "GET", tg.gw.URL+"/v1/jobs", mine.Key, nil); r.StatusCode != 200 {
		t.Fatalf("API key after sign-out-everywhere: %d", r.StatusCode)
	}
	session, _ = s.login(t)
	r = do(t, "DELETE", tg.gw.URL+"/v1/api-keys", session, nil)
	if got := decode[struct{ Revoked int }](t, r); r.StatusCode != 200 || got.Revoked != before || tg.keysOf(t, "ann") != 0 {
		t.Fatalf("revoke all my API keys: %d %+v (had %d)", r.StatusCode, got, before)
	}
	// The gateway, another process, hears of each key on pub/sub and stops
	// exchanging it.
	waitfor.True(t, time.Second, func() bool {
		return do(t, "GET", tg.gw.URL+"/v1/jobs", mine.Key, nil).StatusCode == 401
	})
	if r := do(t, "GET", tg.gw.URL+"/v1/jobs", session, nil); r.StatusCode != 200 {
		t.Fatalf("the session after revoking all keys: %d", r.StatusCode)
	}
}

// TestFinding1InternalTokenMustNameALiveSessionOfItsSubject: what the api
// behind the gateway checks on the credential routes. An at+jwt minted from
// an API key has no session (403 session-required); one naming a session of
// another user, or a made-up one, is refused (401); one naming its own live
// session may create a key. Nothing is created by a refusal.
func TestFinding1InternalTokenMustNameALiveSessionOfItsSubject(t *testing.T) {
	s := newStack(t)
	tg := newTrustGateway(t, s)
	ctx := context.Background()
	if err := identity.NewUsers(s.rdb, cheapArgon2, nil).Add(ctx, "bob", "battery staple"); err != nil {
		t.Fatal(err)
	}
	_, annSess, err := tg.dir.Sessions.Create(ctx, "ann", "", "")
	if err != nil {
		t.Fatal(err)
	}
	fromKey := tg.exchange(t, s.apiKey)
	bobWithAnnsSession, _, _ := tg.minter.MintAccess("bob", annSess.ID, identity.AllScopes)
	madeUp, _, _ := tg.minter.MintAccess("ann", "0123456789abcdef", identity.AllScopes)
	annBefore, bobBefore := tg.keysOf(t, "ann"), tg.keysOf(t, "bob")
	for _, tc := range []struct {
		name, tok string
		status    int
		problem   string
	}{
		{"at+jwt from an API key", fromKey, 403, "session-required"},
		{"at+jwt naming another user's session", bobWithAnnsSession, 401, "unauthorized"},
		{"at+jwt naming no session", madeUp, 401, "unauthorized"},
	} {
		for _, path := range []string{"/v1/api-keys", "/v1/sessions"} {
			method, body := "GET", ""
			if path == "/v1/api-keys" {
				method, body = "POST", `{"name":"x"}`
			}
			var r *http.Response
			if body != "" {
				r = do(t, method, tg.api.URL+path, tc.tok, strings.NewReader(body))
			} else {
				r = do(t, method, tg.api.URL+path, tc.tok, nil)
			}
			if p := decode[problemBody](t, r); r.StatusCode != tc.status || p.Type != "urn:claimcheck:problem:"+tc.problem {
				t.Errorf("%s: %s %s: %d %+v, want %d %s", tc.name, method, path, r.StatusCode, p, tc.status, tc.problem)
			}
		}
	}
	if tg.keysOf(t, "ann") != annBefore || tg.keysOf(t, "bob") != bobBefore {
		t.Fatal("a refused request created a key")
	}
	own, _, _ := tg.minter.MintAccess("ann", annSess.ID, identity.AllScopes)
	if r := do(t, "POST", tg.api.URL+"/v1/api-keys", own, strings.NewReader(`{"name":"ok"}`)); r.StatusCode != 201 {
		t.Fatalf("at+jwt naming its own live session: %d", r.StatusCode)
	}
}
