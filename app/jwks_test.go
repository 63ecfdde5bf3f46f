package app_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/tokens"
)

// TestProgressStartsBeforeTheJWKS starts a progress service whose
// --jwks-url has nothing listening yet (the api starts after it; issue 12,
// part 8). It starts anyway; until the api serves its JWKS, /readyz says
// not ready naming jwks and a job token is answered 503 with Retry-After
// (the token may be fine: not 401); once a real api serves the JWKS on
// that address, the service becomes ready and verifies the token.
func TestProgressStartsBeforeTheJWKS(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel) // ends the background fetching
	rdb := redistest.Client(t)
	cfg := app.Config{DataDir: t.TempDir(), Argon2: cheapArgon2, Logger: slog.New(slog.DiscardHandler)}.WithDefaults()
	keys, _, err := tokens.EnsureDir(cfg.JobKeyDir)
	if err != nil {
		t.Fatal(err)
	}
	token, _, err := (&tokens.Minter{Keys: keys}).MintJob("job-early", "ann", tokens.JobScopes, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	// An address with nothing listening: connection refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	pcfg := cfg
	pcfg.JWKSURL = "http://" + addr + "/.well-known/jwks.json"
	pkeys, err := app.ProgressKeys(ctx, pcfg)
	if err != nil {
		t.Fatalf("progress does not start while the JWKS is unreachable: %v", err)
	}
	prog, err := app.Progress(pcfg, rdb, pkeys)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(app.Handler(pcfg, prog))
	t.Cleanup(srv.Close)

	get := func(path string) (*http.Response, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp, body
	}
	resp, body := get("/readyz")
	if failing, _ := body["failing"].([]any); resp.StatusCode != http.StatusServiceUnavailable || !slices.Contains(failing, any("jwks")) {
		t.Fatalf("/readyz without keys: %d %v, want 503 failing jwks", resp.StatusCode, body)
	}
	resp, body = get("/v1/jobs/job-early")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
		body["type"] != "urn:claimcheck:problem:keys-unavailable" {
		t.Fatalf("a job token without keys: %d Retry-After %q %v, want 503 keys-unavailable with Retry-After",
			resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}

	// Now the api comes up on that address.
	apiHandler, err := app.APIHandler(cfg, rdb, keys)
	if err != nil {
		t.Fatal(err)
	}
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the reserved address was taken meanwhile: %v", err)
	}
	api := &httptest.Server{Listener: ln, Config: &http.Server{Handler: apiHandler}}
	api.Start()
	t.Cleanup(api.Close)

	waitfor.True(t, 30*time.Second, func() bool { resp, _ := get("/readyz"); return resp.StatusCode == http.StatusOK })
	// The token verifies now: the job does not exist, so 404, not 401 or 503.
	if resp, body := get("/v1/jobs/job-early"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a job token once the keys are loaded: %d %v, want 404", resp.StatusCode, body)
	}
}
