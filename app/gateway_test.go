package app_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/tokens"
)

// TestTrustGatewayDeployment runs `claimcheck gateway --upstream` in front
// of `claimcheck api --trust-gateway`: people get in only through the
// gateway, and no token kind works where another is expected.
func TestTrustGatewayDeployment(t *testing.T) {
	s := newStack(t)
	ctx := context.Background()
	tg := newTrustGateway(t, s)
	dir, api, gwSrv := tg.dir, tg.api, tg.gw

	session, _ := s.login(t)
	// Through the gateway: the session becomes an internal token.
	r := do(t, "POST", gwSrv.URL+"/v1/jobs", session, strings.NewReader(`{"type":"primes","input":{"n":100}}`))
	sub := decode[submitted](t, r)
	if r.StatusCode != 202 || sub.Token == "" {
		t.Fatalf("submit through the gateway: %d", r.StatusCode)
	}
	if r := do(t, "GET", gwSrv.URL+"/v1/jobs", s.apiKey, nil); r.StatusCode != 200 {
		t.Fatalf("API key through the gateway: %d", r.StatusCode)
	}
	// The progress service's routes pass through the same origin, untouched.
	if r := do(t, "GET", gwSrv.URL+"/v1/jobs/"+sub.ID, sub.Token, nil); r.StatusCode != 200 {
		t.Fatalf("job status through the gateway: %d", r.StatusCode)
	}
	if r := do(t, "POST", gwSrv.URL+"/v1/jobs/"+sub.ID+"/token", session, strings.NewReader(`{"scope":"job:read"}`)); r.StatusCode != 201 {
		t.Fatalf("re-issue through the gateway (an api route under /v1/jobs/{id}): %d", r.StatusCode)
	}
	// Sign-in passes through untouched.
	if r := do(t, "POST", gwSrv.URL+"/v1/sessions", "", strings.NewReader(`{"username":"ann","password":"correct horse"}`)); r.StatusCode != 201 {
		t.Fatalf("login through the gateway: %d", r.StatusCode)
	}

	// Straight to the api, a session or API key is not enough…
	for _, cred := range []string{session, s.apiKey} {
		if r := do(t, "POST", api.URL+"/v1/jobs", cred, strings.NewReader(`{"type":"count"}`)); r.StatusCode != 401 {
			t.Fatalf("%.4s… sent directly to a trust-gateway api: %d", cred, r.StatusCode)
		}
	}
	// …a job token is not an internal token…
	if r := do(t, "GET", api.URL+"/v1/jobs", sub.Token, nil); r.StatusCode != 401 {
		t.Fatalf("job token at the api: %d", r.StatusCode)
	}
	// …and an internal token is not a job token.
	ex, err := http.NewRequest("GET", gwSrv.URL+"/v1/auth/exchange", nil)
	if err != nil {
		t.Fatal(err)
	}
	ex.Header.Set("Authorization", "Bearer "+session)
	resp, err := http.DefaultClient.Do(ex)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("exchange: %v", err)
	}
	resp.Body.Close()
	internal, _ := strings.CutPrefix(resp.Header.Get("Authorization"), "Bearer ")
	if r := do(t, "GET", s.progress.URL+"/v1/jobs/"+sub.ID, internal, nil); r.StatusCode != 401 {
		t.Fatalf("internal token at the progress service: %d", r.StatusCode)
	}
	if r := do(t, "GET", api.URL+"/v1/jobs", internal, nil); r.StatusCode != 200 {
		t.Fatalf("internal token at the api: %d", r.StatusCode)
	}
	// Blocking ann leaves that internal token valid for the rest of its
	// (at most 60 s) life, but it cannot submit: the job is created in one
	// script that checks the owner's blocked flag.
	if err := dir.Block(ctx, "ann"); err != nil {
		t.Fatal(err)
	}
	if r := do(t, "POST", api.URL+"/v1/jobs", internal, strings.NewReader(`{"type":"primes","input":{"n":100}}`)); r.StatusCode != 401 {
		t.Fatalf("submission by a blocked user with a still-valid internal token: %d", r.StatusCode)
	}
	if err := dir.Unblock(ctx, "ann"); err != nil {
		t.Fatal(err)
	}
	session, _ = s.login(t)

	// Logout through the gateway happens at the api, another process: the
	// gateway hears of it on Redis pub/sub and refuses the session from then
	// on (BenchmarkRevokeAcrossGateways measures how soon).
	if r := do(t, "DELETE", gwSrv.URL+"/v1/sessions/current", session, nil); r.StatusCode != 204 {
		t.Fatalf("logout through the gateway: %d", r.StatusCode)
	}
	waitfor.True(t, time.Second, func() bool {
		return do(t, "GET", gwSrv.URL+"/v1/jobs", session, nil).StatusCode == 401
	})
}

// TestKeyRotationReachesRunningProcesses rotates the gateway's key on disk
// and announces it as `claimcheck keys rotate` does: the running gateway
// signs with the new kid at once, old-kid tokens still verify, and after
// retiring, they do not.
func TestKeyRotationReachesRunningProcesses(t *testing.T) {
	rdb := redistest.Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := app.Config{DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)}.WithDefaults()
	gwKeys, _, err := tokens.EnsureDir(cfg.GatewayKeyDir)
	if err != nil {
		t.Fatal(err)
	}
	dir := app.Identity(cfg, rdb)
	gw, err := app.Gateway(cfg, rdb, dir, gwKeys)
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go app.WatchRevocations(ctx, cfg, rdb, gw, app.ReloadKeys(ctx, cfg, map[string]*tokens.KeySet{cfg.GatewayKeyDir: gwKeys}), ready)
	<-ready
	srv := httptest.NewServer(app.GatewayHandler(cfg, gw, nil, nil))
	defer srv.Close()
	sess, _, _ := dir.Sessions.Create(ctx, "ann", "", "")
	exchange := func() (string, string) {
		req, _ := http.NewRequest("GET", srv.URL+"/v1/auth/exchange", nil)
		req.Header.Set("Authorization", "Bearer "+sess.Reveal())
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("exchange: %v", err)
		}
		resp.Body.Close()
		tok, _ := strings.CutPrefix(resp.Header.Get("Authorization"), "Bearer ")
		return tok, kidOf(t, tok)
	}
	oldTok, oldKid := exchange()

	// Another process (the CLI) verifies with its own view of the keys.
	verifier := &tokens.AccessVerifier{Keys: gwKeys}
	newKey, prev, err := tokens.RotateDir(cfg.GatewayKeyDir)
	if err != nil || prev != oldKid {
		t.Fatalf("rotate: %v (previous %q, want %q)", err, prev, oldKid)
	}
	if err := dir.Revocations.Announce(ctx, identity.Revocation{Kind: identity.RevokedAll}); err != nil {
		t.Fatal(err)
	}
	var tok, kid string
	waitfor.True(t, 2*time.Second, func() bool { tok, kid = exchange(); return kid == newKey.ID })
	if _, err := verifier.VerifyAccess(tok); err != nil {
		t.Fatalf("new-kid token: %v", err)
	}
	if _, err := verifier.VerifyAccess(oldTok); err != nil {
		t.Fatalf("old-kid token after rotation: %v", err)
	}
	if err := tokens.RetireKey(cfg.GatewayKeyDir, oldKid); err != nil {
		t.Fatal(err)
	}
	if err := tokens.RetireKey(cfg.GatewayKeyDir, newKey.ID); err == nil {
		t.Fatal("retired the active key")
	}
	if err := dir.Revocations.Announce(ctx, identity.Revocation{Kind: identity.RevokedAll}); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, 2*time.Second, func() bool {
		_, err := verifier.VerifyAccess(oldTok)
		return err != nil
	})
	if _, err := verifier.VerifyAccess(oldTok); err == nil || !strings.Contains(err.Error(), "key") {
		t.Fatalf("retired kid: %v", err)
	}
}

func kidOf(t *testing.T, tok string) string {
	t.Helper()
	h, _, _ := strings.Cut(tok, ".")
	var hdr struct{ Kid string }
	decodeSegment(t, h, &hdr)
	return hdr.Kid
}

func decodeSegment(t *testing.T, seg string, v any) {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}
