package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/api/authn"
	"github.com/claimcheck/claimcheck/api/gateway"
	"github.com/claimcheck/claimcheck/api/ratelimit"
	"github.com/claimcheck/claimcheck/api/router"
	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/secret"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/tokens"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// countingAuth counts the lookups that reach the identity store.
type countingAuth struct {
	dir   *identity.Directory
	calls atomic.Int32
	// afterLookup, if set, runs once between a lookup and its answer:
	// where a revocation can land while the exchange is minting.
	afterLookup atomic.Pointer[func()]
}

func (a *countingAuth) Authenticate(ctx context.Context, s secret.Secret) (*identity.Principal, error) {
	a.calls.Add(1)
	p, err := a.dir.Authenticate(ctx, s)
	if f := a.afterLookup.Swap(nil); f != nil {
		(*f)()
	}
	return p, err
}

type fixture struct {
	rdb    redis.UniversalClient
	dir    *identity.Directory
	auth   *countingAuth
	gw     *gateway.Service
	keys   *tokens.KeySet
	srv    *httptest.Server
	verify *tokens.AccessVerifier
}

func newFixtureTB(tb testing.TB) *fixture { return newFixture(tb, nil) }

func newFixture(t testing.TB, limits *ratelimit.Limits) *fixture {
	t.Helper()
	rdb := redistest.Client(t)
	f := &fixture{rdb: rdb, dir: identity.NewDirectory(rdb, identity.SessionConfig{}, &identity.Argon2Params{Memory: 64, Time: 1, Threads: 1}, nil)}
	f.auth = &countingAuth{dir: f.dir}
	k, err := tokens.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	f.keys, _ = tokens.NewKeySet(k)
	var lim *ratelimit.Limiter
	if limits != nil {
		lim = ratelimit.New(rdb, *limits)
	}
	f.gw, err = gateway.New(gateway.Config{Auth: f.auth, Minter: &tokens.AccessMinter{Keys: f.keys}, Limits: lim, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	f.dir.Revocations.OnRevoke(f.gw.Purge)
	r := router.New(slog.New(slog.DiscardHandler))
	f.gw.Register(r)
	f.srv = httptest.NewServer(r)
	t.Cleanup(f.srv.Close)
	f.verify = &tokens.AccessVerifier{Keys: f.keys}
	return f
}

// exchange calls the endpoint as a forward-auth proxy would.
func (f *fixture) exchange(t *testing.T, method, path string, hdr ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, f.srv.URL+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Cookie" {
			req.AddCookie(&http.Cookie{Name: authn.CookieName, Value: hdr[i+1]})
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func (f *fixture) internalToken(t *testing.T, resp *http.Response) *tokens.AccessClaims {
	t.Helper()
	if resp.StatusCode != 200 {
		t.Fatalf("exchange: %d", resp.StatusCode)
	}
	tok, ok := strings.CutPrefix(resp.Header.Get("Authorization"), "Bearer ")
	if !ok {
		t.Fatalf("no bearer in %q", resp.Header.Get("Authorization"))
	}
	claims, err := f.verify.VerifyAccess(tok)
	if err != nil {
		t.Fatalf("minted token does not verify: %v", err)
	}
	return claims
}

func TestExchangeEveryCredentialKind(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	sess, info, _ := f.dir.Sessions.Create(ctx, "ann", "", "")
	key, keyInfo, _ := f.dir.APIKeys.CreateKey(ctx, identity.KeySpec{User: "bob", Scopes: []string{identity.ScopeJobsRead}})

	for _, tc := range []struct {
		name, method, path string
		hdr                []string
		user, sid, scope   string
	}{
		{"cookie", "GET", "/v1/auth/exchange", []string{"Cookie", sess.Reveal(), "X-Forwarded-Method", "GET"}, "ann", info.ID, "jobs:submit jobs:read"},
		{"bearer session, any method and sub-path", "POST", "/v1/auth/exchange/v1/jobs", []string{"Authorization", "Bearer " + sess.Reveal()}, "ann", info.ID, "jobs:submit jobs:read"},
		{"api key", "HEAD", "/v1/auth/exchange", []string{"Authorization", "Bearer " + key.Reveal()}, "bob", "", "jobs:read"},
	} {
		resp := f.exchange(t, tc.method, tc.path, tc.hdr...)
		c := f.internalToken(t, resp)
		if c.Subject != tc.user || c.SessionID != tc.sid || c.Scope != tc.scope || resp.Header.Get(gateway.HeaderUser) != tc.user ||
			c.Expires().Sub(time.Unix(c.IssuedAt, 0)) > tokens.MaxAccessLifetime || resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: claims %+v user header %q", tc.name, c, resp.Header.Get(gateway.HeaderUser))
		}
	}
	_ = keyInfo

	for _, tc := range []struct {
		name string
		hdr  []string
	}{
		{"no credential", nil},
		{"unknown session", []string{"Authorization", "Bearer ccs_nope"}},
		{"a job token is not a credential here", []string{"Authorization", "Bearer eyJhbGciOiJFZERTQSJ9.e30.sig"}},
	} {
		resp := f.exchange(t, "GET", "/v1/auth/exchange", tc.hdr...)
		if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") || resp.Header.Get("Authorization") != "" {
			t.Errorf("%s: %d %q", tc.name, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	}
}

func TestExchangeIsCachedAndRevocationPurgesAtOnce(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	sess, info, _ := f.dir.Sessions.Create(ctx, "ann", "", "")
	bearer := []string{"Authorization", "Bearer " + sess.Reveal()}

	first := f.exchange(t, "GET", "/v1/auth/exchange", bearer...)
	second := f.exchange(t, "GET", "/v1/auth/exchange", bearer...)
	if first.Header.Get("Authorization") != second.Header.Get("Authorization") || f.auth.calls.Load() != 1 {
		t.Fatalf("second exchange was not served from the cache (%d lookups)", f.auth.calls.Load())
	}

	// Logout: the very next exchange is refused, no TTL to wait out.
	if err := f.dir.Sessions.Revoke(ctx, "ann", info.ID); err != nil {
		t.Fatal(err)
	}
	if r := f.exchange(t, "GET", "/v1/auth/exchange", bearer...); r.StatusCode != 401 {
		t.Fatalf("exchange after logout: %d", r.StatusCode)
	}

	// Logout everywhere and block, likewise.
	s2, _, _ := f.dir.Sessions.Create(ctx, "ann", "", "")
	f.internalToken(t, f.exchange(t, "GET", "/v1/auth/exchange", "Authorization", "Bearer "+s2.Reveal()))
	if _, err := f.dir.Sessions.RevokeAll(ctx, "ann"); err != nil {
		t.Fatal(err)
	}
	if r := f.exchange(t, "GET", "/v1/auth/exchange", "Authorization", "Bearer "+s2.Reveal()); r.StatusCode != 401 {
		t.Fatalf("exchange after logout everywhere: %d", r.StatusCode)
	}
	if err := f.dir.Users.Add(ctx, "bob", "battery staple"); err != nil {
		t.Fatal(err)
	}
	key, _, _ := f.dir.APIKeys.Create(ctx, "bob", "", "")
	f.internalToken(t, f.exchange(t, "GET", "/v1/auth/exchange", "Authorization", "Bearer "+key.Reveal()))
	if err := f.dir.Block(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if r := f.exchange(t, "GET", "/v1/auth/exchange", "Authorization", "Bearer "+key.Reveal()); r.StatusCode != 401 {
		t.Fatalf("exchange after block: %d", r.StatusCode)
	}
}

// TestRevocationDuringAMissIsNotCached revokes a session after the exchange
// looked it up but before it minted and cached a token: that one answer may
// still be 200 (the request was in flight), but nothing may be cached for the
// revoked session, so the next exchange is refused.
func TestRevocationDuringAMissIsNotCached(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	sess, info, _ := f.dir.Sessions.Create(ctx, "ann", "", "")
	bearer := []string{"Authorization", "Bearer " + sess.Reveal()}
	revoke := func() {
		if err := f.dir.Sessions.Revoke(ctx, "ann", info.ID); err != nil {
			t.Error(err)
		}
	}
	f.auth.afterLookup.Store(&revoke)
	f.internalToken(t, f.exchange(t, "GET", "/v1/auth/exchange", bearer...))
	if r := f.exchange(t, "GET", "/v1/auth/exchange", bearer...); r.StatusCode != 401 {
		t.Fatalf("exchange after a revocation that raced the first one: %d, want 401", r.StatusCode)
	}
}

func TestRevocationReachesAnotherInstance(t *testing.T) {
	a, b := newFixture(t, nil), newFixture(t, nil) // two gateways, one Redis
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan struct{})
	go func() { _ = identity.ListenRevocations(ctx, redistest.Client(t), b.gw.Purge, ready) }()
	<-ready
	sess, info, _ := a.dir.Sessions.Create(ctx, "ann", "", "")
	bearer := []string{"Authorization", "Bearer " + sess.Reveal()}
	b.internalToken(t, b.exchange(t, "GET", "/v1/auth/exchange", bearer...)) // cached in b
	if err := a.dir.Sessions.Revoke(ctx, "ann", info.ID); err != nil {       // revoked through a
		t.Fatal(err)
	}
	waitfor.True(t, time.Second, func() bool {
		return b.exchange(t, "GET", "/v1/auth/exchange", bearer...).StatusCode == 401
	})
}

// TestExchangeCSRFUsesTheForwardedMethod calls the exchange as a trusted
// proxy: the fixture's router has no forwarded filter in front, so every
// header arrives (app's TestFinding9… tests cover untrusted
// callers).
func TestExchangeCSRFUsesTheForwardedMethod(t *testing.T) {
	f := newFixture(t, nil)
	sess, _, _ := f.dir.Sessions.Create(context.Background(), "ann", "", "")
	ck := []string{"Cookie", sess.Reveal()}
	cases := []struct {
		hdr    []string
		status int
	}{
		{append([]string{"X-Forwarded-Method", "POST", "Origin", "https://evil.example"}, ck...), 403},
		{append([]string{"X-Original-Method", "DELETE"}, ck...), 403}, // no Origin at all
		{append([]string{"X-Forwarded-Method", "GET", "Origin", "https://evil.example"}, ck...), 200},
		{append([]string{"X-Forwarded-Method", "POST", "Origin", "https://jobs.example", "X-Forwarded-Host", "jobs.example", "X-Forwarded-Proto", "https"}, ck...), 200},
		{append([]string{"X-Forwarded-Method", "POST", "Origin", "https://jobs.example", "X-Forwarded-Host", "jobs.example"}, ck...), 403}, // scheme differs
		{ck, 403}, // no method named: fails closed
		// A bearer credential is never sent by a browser on its own.
		{[]string{"X-Forwarded-Method", "POST", "Origin", "https://evil.example", "Authorization", "Bearer " + sess.Reveal()}, 200},
	}
	for i, tc := range cases {
		if r := f.exchange(t, "GET", "/v1/auth/exchange", tc.hdr...); r.StatusCode != tc.status {
			t.Errorf("case %d: %d, want %d", i, r.StatusCode, tc.status)
		}
	}
}

func TestExchangeMissesAreRateLimited(t *testing.T) {
	l := ratelimit.Limits{Exchange: redis_rate.PerMinute(3)}
	f := newFixture(t, &l)
	sess, _, _ := f.dir.Sessions.Create(context.Background(), "ann", "", "")
	for i := range 3 {
		if r := f.exchange(t, "GET", "/v1/auth/exchange", "Authorization", fmt.Sprintf("Bearer ccs_guess%d", i)); r.StatusCode != 401 {
			t.Fatalf("guess %d: %d", i, r.StatusCode)
		}
	}
	r := f.exchange(t, "GET", "/v1/auth/exchange", "Authorization", "Bearer "+sess.Reveal())
	if r.StatusCode != 429 || r.Header.Get("Retry-After") == "" {
		t.Fatalf("4th miss: %d %q", r.StatusCode, r.Header.Get("Retry-After"))
	}
}

func TestProxyForwardsTheInternalTokenNotTheCredential(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	sess, _, _ := f.dir.Sessions.Create(ctx, "ann", "", "")

	var reached atomic.Int32
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		var sub string
		if c, err := f.verify.VerifyAccess(tok); err == nil {
			sub = c.Subject
		}
		fmt.Fprintf(w, "sub=%s user=%s cookie=%s", sub, r.Header.Get(gateway.HeaderUser), r.Header.Get("Cookie"))
	}))
	defer upstream.Close()
	u, _ := url.Parse(upstream.URL)
	proxy := httptest.NewServer(f.gw.Proxy(u))
	defer proxy.Close()

	get := func(hdr ...string) (int, string) {
		req, _ := http.NewRequest("GET", proxy.URL+"/v1/jobs", nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Add(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("Cookie", authn.CookieName+"="+sess.Reveal()+"; theme=dark", gateway.HeaderUser, "root")
	if code != 200 || body != "sub=ann user=ann cookie=theme=dark" {
		t.Fatalf("cookie request upstream saw %d %q", code, body)
	}
	// No credential: passed through, but a client's X-Claimcheck-User never is.
	if code, body := get(gateway.HeaderUser, "root"); code != 200 || body != "sub= user= cookie=" {
		t.Fatalf("anonymous request upstream saw %d %q", code, body)
	}
	// A refused credential never reaches upstream.
	before := reached.Load()
	if code, _ := get("Authorization", "Bearer cck_revoked_or_made_up_0123456789"); code != 401 || reached.Load() != before {
		t.Fatalf("bad key: %d, upstream reached %d times", code, reached.Load()-before)
	}
}

func TestProxyPassesEventStreamsAndWebSockets(t *testing.T) {
	f := newFixture(t, nil)
	sess, _, _ := f.dir.Sessions.Create(context.Background(), "ann", "", "")
	release := make(chan struct{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			http.Error(w, "no token", 401)
			return
		}
		if r.Header.Get("Upgrade") == "websocket" {
			conn, rw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			rw.Flush()
			line, _ := rw.ReadString('\n')
			rw.WriteString("echo " + line)
			rw.Flush()
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		<-release // the second event waits until the client has the first
		fmt.Fprint(w, "data: second\n\n")
	}))
	defer upstream.Close()
	u, _ := url.Parse(upstream.URL)
	proxy := httptest.NewServer(f.gw.Proxy(u))
	defer proxy.Close()

	req, _ := http.NewRequest("GET", proxy.URL+"/v1/jobs/x/events", nil)
	req.Header.Set("Authorization", "Bearer "+sess.Reveal())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "data: first\n" {
		t.Fatalf("first event through the proxy: %q %v", line, err)
	}
	close(release)
	_, _ = br.ReadString('\n')
	if line, _ := br.ReadString('\n'); line != "data: second\n" {
		t.Fatalf("second event: %q", line)
	}

	conn, err := net.Dial("tcp", strings.TrimPrefix(proxy.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", sess.Reveal())
	cr := bufio.NewReader(conn)
	status, _ := cr.ReadString('\n')
	if !strings.Contains(status, "101") {
		t.Fatalf("upgrade through the proxy: %q", status)
	}
	for {
		l, err := cr.ReadString('\n')
		if err != nil || l == "\r\n" {
			break
		}
	}
	fmt.Fprint(conn, "ping\n")
	if l, err := cr.ReadString('\n'); err != nil || l != "echo ping\n" {
		t.Fatalf("websocket bytes through the proxy: %q %v", l, err)
	}
}

func TestProgressRoute(t *testing.T) {
	for _, tc := range []struct {
		method, path string
		want         bool
	}{
		{"GET", "/v1/jobs/019a", true},
		{"HEAD", "/v1/jobs/019a", true},
		{"GET", "/v1/jobs/019a/events", true},
		{"GET", "/v1/jobs/019a/logs", true},
		{"POST", "/v1/jobs/019a/cancel", true},
		{"GET", "/v1/jobs/019a/result", true},
		{"POST", "/v1/jobs/019a/links", true},
		{"GET", "/v1/jobs/019a/receipt", true},
		{"GET", "/v1/results/019a", true},
		{"GET", "/v1/jobs", false},
		{"POST", "/v1/jobs", false},
		{"POST", "/v1/jobs/019a", false},
		{"POST", "/v1/jobs/019a/token", false},
		{"POST", "/v1/jobs/019a/revoke-tokens", false},
		{"GET", "/v1/jobs/", false},
		{"GET", "/v1/sessions", false},
	} {
		if got := gateway.ProgressRoute(tc.method, tc.path); got != tc.want {
			t.Errorf("%s %s: %v, want %v", tc.method, tc.path, got, tc.want)
		}
	}
}
