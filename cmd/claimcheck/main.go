// Command claimcheck is the one binary of claimcheck: every service, the
// all-in-one dev mode, and the admin tools. It only parses flags and the
// environment and hands them to package app.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/claimcheck/claimcheck/api/forwarded"
	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/internal/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "claimcheck:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "claimcheck",
		Short: "A job API for long-running compute, authorised by per-job tokens",
		Long: `claimcheck runs jobs on Asynq workers and hands each submitter a job token:
an EdDSA JWT that names that one job. The token alone lets its holder watch,
cancel and download the job from the progress service.

Every flag can also be set in the environment: CLAIMCHECK_<FLAG> with dashes as
underscores (CLAIMCHECK_DATA_DIR), and REDIS_URL for --redis-url.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newDev(), newAPI(), newWorker(), newProgress(), newGateway(), newHealthcheck(), newSubmit(), newJobs(), newReceipt(), newKeys(), newAPIKeys(), newUsers(), newToken())
	return root
}

// common holds the flags every service shares.
type common struct {
	cfg       app.Config
	logFormat string
	logLevel  string
	// allowExample lets REDIS_URL carry a password users.acl ships with.
	allowExample bool
}

func (c *common) bind(fs *pflag.FlagSet, addr bool) {
	if addr {
		fs.StringVar(&c.cfg.Addr, "addr", "127.0.0.1:8080", "listen address `host:port`")
		bindTrustedProxy(fs, &c.cfg)
		fs.IntVar(&c.cfg.MaxActiveJobs, "max-active-jobs", 100, "each user's queued and running jobs at most (-1: no cap)")
	}
	fs.StringVar(&c.cfg.DataDir, "data-dir", ".claimcheck", "directory for keys and results")
	fs.StringVar(&c.cfg.RedisURL, "redis-url", "", "Redis `URL` (redis://[user:pass@]host:port/db); env REDIS_URL")
	fs.BoolVar(&c.allowExample, "allow-example-passwords", false, "accept a REDIS_URL with one of deploy/redis/users.acl's example passwords (change-me-…): throwaway setups only")
	fs.StringVar(&c.cfg.ResultsDir, "results-dir", "", "result blob directory (default DATA_DIR/results); must be shared by workers and progress")
	fs.StringVar(&c.cfg.ResultsURL, "results-url", "", config.ResultsURLUsage)
	fs.DurationVar(&c.cfg.Retention, "retention", 24*time.Hour, "how long finished jobs and their results are kept")
	fs.StringVar(&c.logFormat, "log-format", "", "log format: text or json (default: json for api, worker, progress and gateway; text for dev and the admin commands)")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
}

// bindResultsRedirect adds --results-redirect (dev, progress): result
// downloads answered with a redirect to a URL the object store signed.
func (c *common) bindResultsRedirect(fs *pflag.FlagSet) {
	fs.BoolVar(&c.cfg.ResultsRedirect, "results-redirect", false,
		"answer result downloads with a 307 to a URL the object store signed (at most 15 min, never past the token or link; it cannot be revoked before it expires); needs an s3:// --results-url")
}

// bindMetrics adds --metrics-addr: the operations server of a service.
func (c *common) bindMetrics(fs *pflag.FlagSet) {
	fs.StringVar(&c.cfg.MetricsAddr, "metrics-addr", "", "serve /metrics, /healthz and /readyz on this address, apart from the public one (e.g. 127.0.0.1:9090; default off)")
}

// defaultLogFormat is JSON for the long-running services, which run under
// a supervisor and feed a log pipeline, and text for dev and the admin
// commands, which a person reads.
func defaultLogFormat(command string) string {
	switch command {
	case "api", "worker", "progress", "gateway":
		return "json"
	}
	return "text"
}

// bindSessions adds the session lifetimes. Every process that signs people
// in or checks their sessions (api, gateway, dev) needs the same values:
// the check also slides the idle expiry by its own settings.
func (c *common) bindSessions(fs *pflag.FlagSet) {
	fs.DurationVar(&c.cfg.Sessions.IdleTimeout, "session-idle", 12*time.Hour, "end a session not used for this long (sliding)")
	fs.DurationVar(&c.cfg.Sessions.AbsoluteLifetime, "session-lifetime", 7*24*time.Hour, "end a session this long after sign-in, however much it is used")
}

// bindStreams adds the progress service's caps on open event streams and
// long-polls (dev and progress).
func (c *common) bindStreams(fs *pflag.FlagSet) {
	fs.IntVar(&c.cfg.Streams.PerToken, "max-streams-per-token", 4, "open event streams and long-polls per job token (jti) at most (-1: no cap)")
	fs.IntVar(&c.cfg.Streams.PerJob, "max-streams-per-job", 32, "open event streams and long-polls per job at most (-1: no cap)")
	fs.IntVar(&c.cfg.Streams.PerAddress, "max-streams-per-address", 64, "open event streams and long-polls per client address at most (-1: no cap)")
}

// load applies the environment to flags the command line did not set, then
// defaults, and sets up logging.
func (c *common) load(cmd *cobra.Command) error {
	if err := config.ApplyEnv(cmd.Flags()); err != nil {
		return err
	}
	if err := config.CheckRedisPassword(c.cfg.RedisURL, c.allowExample); err != nil {
		return err
	}
	if err := config.CheckResults(c.cfg.ResultsDir, c.cfg.ResultsURL); err != nil {
		return err
	}
	if c.logFormat == "" {
		c.logFormat = defaultLogFormat(cmd.Name())
	}
	logger, err := config.NewLogger(cmd.ErrOrStderr(), c.logFormat, c.logLevel)
	if err != nil {
		return err
	}
	c.cfg.Logger = logger
	// Code without a logger of its own (problem.Abort, go-redis's lines
	// routed by config.OpenRedis) writes through the default: the same
	// format, so a JSON log has no plain-text lines.
	slog.SetDefault(logger)
	c.cfg = c.cfg.WithDefaults()
	if _, err := forwarded.Parse(c.cfg.TrustedProxies); err != nil {
		return fmt.Errorf("--trusted-proxy: %w", err)
	}
	return nil
}

// bindTrustedProxy adds --trusted-proxy, for every process that can sit
// behind a proxy (api, dev, gateway, progress).
func bindTrustedProxy(fs *pflag.FlagSet, cfg *app.Config) {
	fs.StringSliceVar(&cfg.TrustedProxies, "trusted-proxy", nil,
		"addresses or CIDRs of the proxies in front of this process: only their X-Forwarded-* headers are believed (client address, host, scheme, forward-auth method); everyone else's are dropped")
}
