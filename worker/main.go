package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"

	"github.com/claimcheck/claimcheck/api/router"
	"github.com/claimcheck/claimcheck/internal/config"
	"github.com/claimcheck/claimcheck/internal/metrics"
)

// Main is a whole worker process in one call: it reads the flags of
// os.Args and the environment exactly as `claimcheck worker` does (see
// BindFlags), runs types until SIGINT or SIGTERM, shuts down gracefully and
// returns (a second signal ends it at once). On a bad flag or a failure to start or serve it prints one line
// to stderr and exits with status 1; -h prints the flags and their
// environment variables.
//
//	func main() { worker.Main(wordfreq()) }
func Main(types ...Type) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// The first signal starts the graceful shutdown; a second one,
		// from someone who will not wait for it, ends the process.
		<-ctx.Done()
		stop()
	}()
	code := mainArgs(ctx, os.Args, os.Stdout, os.Stderr, types)
	stop()
	if code != 0 {
		os.Exit(code)
	}
}

// mainArgs is Main with its process (arguments, output, signals) passed in.
func mainArgs(ctx context.Context, args []string, stdout, stderr io.Writer, types []Type) int {
	name := filepath.Base(args[0])
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported once, below
	run := bindFlags(fs, stderr)
	config.AnnotateEnv(fs)
	fs.Usage = func() {
		fmt.Fprintf(stdout, "Usage: %s [flags]\n\nRuns a claimcheck worker for the job types %s and serves until SIGINT or SIGTERM.\n"+
			"Every flag can also be set in the environment: CLAIMCHECK_<FLAG> with dashes as\nunderscores, and REDIS_URL for --redis-url.\n\nFlags:\n%s",
			name, typeNames(types), fs.FlagUsages())
	}
	err := fs.Parse(args[1:])
	switch {
	case errors.Is(err, pflag.ErrHelp):
		return 0
	case err == nil && fs.NArg() > 0:
		err = fmt.Errorf("unexpected argument %q (see -h)", fs.Arg(0))
	case err == nil:
		err = run(ctx, types...)
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", name, strings.ReplaceAll(err.Error(), "\n", " "))
		return 1
	}
	return 0
}

// BindFlags declares the worker process's flags on fs (config.Worker:
// --redis-url, --data-dir, --results-dir or --results-url, --concurrency, --pools,
// --log-format, --log-level, --metrics-addr, --task-check-interval,
// --max-running-jobs, --retention, --types, --receipt-key-dir,
// --allow-example-passwords) and
// returns the process: after fs is parsed, run applies the environment to
// the flags not given (CLAIMCHECK_<FLAG>, REDIS_URL), refuses to start
// without a Redis URL or with users.acl's example passwords, adds the job
// types of --types FILE to types (a name in both refuses the start), runs
// them, serves /metrics, /healthz and /readyz on --metrics-addr when set,
// and when ctx ends shuts down gracefully: running jobs get
// Config.ShutdownTimeout, then go back to their queue.
//
// Main uses it on os.Args; `claimcheck worker` on its own flag set, so
// both read identical flags. Logs go to stderr.
func BindFlags(fs *pflag.FlagSet) func(ctx context.Context, types ...Type) error {
	return bindFlags(fs, os.Stderr)
}

func bindFlags(fs *pflag.FlagSet, logs io.Writer) func(ctx context.Context, types ...Type) error {
	var c config.Worker
	c.Bind(fs)
	return func(ctx context.Context, types ...Type) error {
		return serve(ctx, fs, &c, logs, types)
	}
}

// serve is the process BindFlags returns.
func serve(ctx context.Context, fs *pflag.FlagSet, c *config.Worker, logs io.Writer, types []Type) error {
	logger, err := c.Load(fs, logs)
	if err != nil {
		return err
	}
	// This is the whole process: whatever logs through the standard
	// library (net/http's server errors, say) comes out in the same
	// format, not as plain text among JSON lines.
	slog.SetDefault(logger)
	if types, err = withTypesFile(types, c.TypesFile); err != nil {
		return err
	}
	if len(types) == 0 {
		return errors.New("no job types to serve: pass Go types to worker.Main, or a --types FILE")
	}
	receiptKeys, err := LoadReceiptKeys(c.ReceiptKeys())
	if err != nil {
		return err
	}
	r, err := config.OpenRedis(ctx, c.RedisURL)
	if err != nil {
		return err
	}
	defer r.Close()
	w, err := New(Config{
		ReceiptKeys:       receiptKeys,
		ResultsURL:        c.Results(),
		Concurrency:       c.Concurrency,
		Pools:             c.Pools,
		TaskCheckInterval: c.TaskCheckInterval,
		Retention:         c.Retention,
		MaxRunningJobs:    c.MaxRunningJobs,
		Logger:            logger,

		ResultsMinFree:        c.ResultsMinFree,
		ResultsMinFreePercent: c.ResultsMinFreePercent,
		ResultsCheckInterval:  c.ResultsCheckInterval,
	}, r.Client, types...)
	if err != nil {
		return err
	}
	if err := w.Start(); err != nil {
		return err
	}
	defer w.Shutdown() // running tasks get ShutdownTimeout, then go back to their queue
	go watchReceiptKeys(ctx, r.Client, c.ReceiptKeys(), receiptKeys, logger)
	stopWebhooks, err := startWebhooks(c, r.Client, logger)
	if err != nil {
		return err
	}
	defer stopWebhooks() // first: deliveries under way finish (at most 30 s)
	logger.Info("worker running", "types", typeNames(types))
	_ = metrics.Queues(asynq.NewInspectorFromRedisClient(r.Client)) // once per process; a second call changes nothing
	if c.MetricsAddr == "" {
		<-ctx.Done()
	} else if err := router.Serve(ctx, c.MetricsAddr, opsHandler(logger, r.Client, w), func(addr string) {
		logger.Info("worker metrics listening", "addr", addr)
	}); err != nil {
		return err
	}
	logger.Info("worker shutting down")
	return nil
}

// opsHandler is router.Ops for a worker: /healthz, /metrics, and a
// /readyz that also fails while the worker is paused because its results
// store cannot take results (health.go), naming results-store-writable or
// results-store-space. It is built here rather than by wrapping router.Ops
// because router.Ready takes its checks at registration; the Redis check
// is Ops's.
func opsHandler(logger *slog.Logger, rdb redis.UniversalClient, w *Server) http.Handler {
	return router.Ops(logger, rdb, w.ReadyChecks()...)
}

// withTypesFile adds the types of a --types file to the given ones. A name
// in both is refused: which of the two would run is not something to guess.
func withTypesFile(types []Type, path string) ([]Type, error) {
	if path == "" {
		return types, nil
	}
	more, err := TypesFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("--types %s: %w", path, err)
	}
	for _, t := range more {
		if slices.ContainsFunc(types, func(g Type) bool { return g.Name == t.Name }) {
			return nil, fmt.Errorf("--types %s: job type %q is also compiled in; rename one of them", path, t.Name)
		}
	}
	return append(slices.Clip(types), more...), nil
}

func typeNames(types []Type) string {
	names := make([]string, len(types))
	for i, t := range types {
		names[i] = t.Name
	}
	return strings.Join(names, ",")
}
