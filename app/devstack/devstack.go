// Package devstack runs claimcheck the way `claimcheck dev` does — api,
// progress, gateway exchange and UI on one origin, plus a worker — on a
// given Redis, for tests and examples in any package.
package devstack

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/tokens"
	"github.com/claimcheck/claimcheck/worker"
)

// Stack is a running all-in-one claimcheck.
type Stack struct {
	URL string
	// APIKey is a fresh key of the user "ann".
	APIKey string
	Dev    *app.Dev
	Config app.Config
}

// Options adjust a stack; all optional.
type Options struct {
	// Config is the starting configuration (DataDir is required when
	// Start is not given a test). Logs are discarded unless it sets Logger.
	// Types nil means the built-in types; an empty, non-nil Types runs no
	// worker in the stack, for tests whose workers are processes of their
	// own.
	Config app.Config
	// Wrap puts a handler in front of the server's (to cut or drop
	// requests in tests).
	Wrap func(http.Handler) http.Handler
}

// Start runs a stack for the test and stops it when the test ends.
func Start(tb testing.TB, rdb redis.UniversalClient, o Options) *Stack {
	tb.Helper()
	if o.Config.DataDir == "" {
		o.Config.DataDir = tb.TempDir()
	}
	s, err := Run(rdb, o, tb.Cleanup)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// Run is Start without a test: cleanup receives what to do at the end.
func Run(rdb redis.UniversalClient, o Options, cleanup func(func())) (*Stack, error) {
	cfg := o.Config
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Worker.Concurrency == 0 {
		cfg.Worker = worker.Config{Concurrency: 2}
	}
	cfg = cfg.WithDefaults()
	keys, _, err := tokens.EnsureDir(cfg.JobKeyDir)
	if err != nil {
		return nil, err
	}
	dev, err := app.DevHandler(cfg, rdb, keys)
	if err != nil {
		return nil, err
	}
	cleanup(dev.Progress.Close)
	if len(cfg.Types) > 0 {
		w, err := app.Worker(cfg, rdb)
		if err != nil {
			return nil, err
		}
		if err := w.Start(); err != nil {
			return nil, err
		}
		cleanup(w.Shutdown)
	}
	key, _, err := identity.NewAPIKeys(rdb, nil).Create(context.Background(), "ann", "", "")
	if err != nil {
		return nil, err
	}
	h := dev.Handler
	if o.Wrap != nil {
		h = o.Wrap(h)
	}
	srv := httptest.NewServer(h)
	cleanup(srv.Close)
	return &Stack{URL: srv.URL, APIKey: key.Reveal(), Dev: dev, Config: cfg}, nil
}
