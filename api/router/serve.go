package router

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"
)

// Ops is a process's operations server, for --metrics-addr: GET /healthz,
// GET /readyz (Redis answers, and every extra check passes: a worker's
// results store, say) and GET /metrics. It is the only handler that serves
// /metrics. Every claimcheck process, the worker and a worker.Main program
// included, serves this one.
func Ops(logger *slog.Logger, rdb redis.UniversalClient, extra ...Check) http.Handler {
	r := New(logger)
	Metrics(r)
	Ready(r, append([]Check{{Name: "redis", Check: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }}}, extra...)...)
	return r
}

// Serve runs h on addr until ctx is done, then shuts down gracefully: it
// stops accepting, and gives in-flight requests up to 10s. ready, if not nil,
// receives the bound address once listening (addr may use port 0).
func Serve(ctx context.Context, addr string, h http.Handler, ready func(addr string)) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		IdleTimeout:       120 * time.Second,
		// No WriteTimeout: result downloads and event streams are long by
		// design; handlers bound their own work.
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	if ready != nil {
		ready(ln.Addr().String())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
