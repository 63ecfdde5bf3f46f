package tokens_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/tokens"
)

// TestStartRemoteKeysBeforeTheJWKSAnswers starts a key source against a
// real HTTP server that refuses the JWKS (503) at first. The source starts
// without keys: Ready and PublicKey fail with ErrKeysUnavailable, and the
// verifier refuses a good token with it, never with ErrInvalid (so the
// service answers 503, not 401). Once the server serves the set, the
// background fetching loads it and the same token verifies.
func TestStartRemoteKeysBeforeTheJWKSAnswers(t *testing.T) {
	ks := newSet(t)
	var serving atomic.Bool
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if !serving.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		_ = json.NewEncoder(w).Encode(ks.JWKS())
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	r := tokens.StartRemoteKeys(ctx, srv.URL, nil, slog.New(slog.DiscardHandler))
	token, _, err := (&tokens.Minter{Keys: ks}).MintJob("job-1", "ann", tokens.JobScopes, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	v := &tokens.Verifier{Keys: r}
	if err := r.Ready(ctx); !errors.Is(err, tokens.ErrKeysUnavailable) {
		t.Fatalf("Ready before the JWKS answered = %v, want ErrKeysUnavailable", err)
	}
	if _, err := v.VerifyJob(token); !errors.Is(err, tokens.ErrKeysUnavailable) || errors.Is(err, tokens.ErrInvalid) {
		t.Fatalf("VerifyJob without keys = %v, want ErrKeysUnavailable and not ErrInvalid", err)
	}
	if got := tokens.Reason(tokens.ErrKeysUnavailable); got != "keys-unavailable" {
		t.Errorf("Reason = %q", got)
	}
	// It keeps trying: a second request reaches the server on its own.
	waitfor.True(t, 10*time.Second, func() bool { return hits.Load() >= 2 })
	serving.Store(true)
	waitfor.True(t, 30*time.Second, func() bool { return r.Ready(ctx) == nil })
	if c, err := v.VerifyJob(token); err != nil || c.Job != "job-1" {
		t.Fatalf("VerifyJob once loaded = %+v, %v", c, err)
	}
}
