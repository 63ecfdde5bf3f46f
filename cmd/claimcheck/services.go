package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"

	"github.com/hibiken/asynq"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/internal/config"
	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/metrics"
	"github.com/claimcheck/claimcheck/internal/secret"
	"github.com/claimcheck/claimcheck/tokens"
	"github.com/claimcheck/claimcheck/worker"
	"github.com/claimcheck/claimcheck/worker/builtin"
)

func newDev() *cobra.Command {
	var c common
	var devKey, typesFile string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run api, worker, progress, the gateway exchange and the web UI in one process on one port",
		Long: `dev runs everything in one process: the enqueue API, a worker, the progress
service, the gateway's exchange (/v1/auth/exchange) and the web UI on one port. Without REDIS_URL it starts an embedded,
memory-only Redis (everything is lost on exit). It creates signing keys in the
data dir on first run and prints the URL and a ready-to-use API key.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := c.load(cmd); err != nil {
				return err
			}
			if err := addTypesFile(&c.cfg, typesFile); err != nil {
				return err
			}
			return runDev(cmd.Context(), cmd, c.cfg, secret.Secret(devKey))
		},
	}
	c.bind(cmd.Flags(), true)
	c.bindSessions(cmd.Flags())
	c.bindStreams(cmd.Flags())
	c.bindMetrics(cmd.Flags())
	c.bindResultsRedirect(cmd.Flags())
	cmd.Flags().StringVar(&typesFile, "types", "", "also serve the job types in this YAML or JSON `FILE` (programs run by the exec protocol; see README)")
	cmd.Flags().StringVar(&devKey, "dev-api-key", "", "use this API key (cck_…) instead of a new random one")
	cmd.Flags().DurationVar(&c.cfg.Worker.TaskCheckInterval, "task-check-interval", 0, "how often an idle worker polls for tasks (default 10ms)")
	bindPriority(cmd.Flags(), &c.cfg)
	bindRunningCap(cmd.Flags(), &c.cfg)
	config.BindWebhookAllowPrivate(cmd.Flags(), &c.cfg.WebhookAllowPrivate)
	config.AnnotateEnv(cmd.Flags())
	return cmd
}

func runDev(ctx context.Context, cmd *cobra.Command, cfg app.Config, devKey secret.Secret) error {
	out := cmd.OutOrStdout()
	r, err := config.OpenRedis(ctx, cfg.RedisURL)
	if err != nil {
		return err
	}
	defer r.Close()
	keys, created, err := tokens.EnsureDir(cfg.JobKeyDir)
	if err != nil {
		return err
	}
	if created {
		cfg.Logger.Info("generated a job-token signing key", "dir", cfg.JobKeyDir)
	}
	apiKey, err := devAPIKey(ctx, identity.NewAPIKeys(r.Client, nil), devKey)
	if err != nil {
		return err
	}
	password, err := devPassword(ctx, app.Identity(cfg, r.Client).Users)
	if err != nil {
		return err
	}
	w, err := app.Worker(cfg, r.Client)
	if err != nil {
		return err
	}
	if err := w.Start(); err != nil {
		return err
	}
	defer w.Shutdown()
	// dev's one process delivers webhooks too, linking to its own
	// progress routes.
	wh, err := app.Webhooks(cfg, r.Client, devProgressURL(cfg))
	if err != nil {
		return err
	}
	if err := wh.Start(); err != nil {
		return err
	}
	defer wh.Shutdown()
	dev, err := app.DevHandler(cfg, r.Client, keys)
	if err != nil {
		return err
	}
	defer dev.Progress.Close()
	_ = metrics.Queues(asynq.NewInspectorFromRedisClient(r.Client))
	dirs := map[string]*tokens.KeySet{cfg.JobKeyDir: keys, cfg.GatewayKeyDir: dev.GatewayKeys}
	go app.WatchRevocations(ctx, cfg, r.Client, dev.Gateway,
		app.AndReceiptKeys(app.ReloadKeys(ctx, cfg, dirs), cfg, r.Client, w.ReceiptKeys()), nil)
	return app.ServeWithOps(ctx, cfg, r.Client, dev.Handler, func(addr string) {
		url := "http://" + addr
		fmt.Fprintln(out, "claimcheck dev: api, worker, progress, gateway exchange and web UI on one port")
		if r.Embedded != nil {
			fmt.Fprintln(out, "  WARNING: REDIS_URL is not set: using an embedded in-process Redis (memory only; all jobs are lost on exit)")
		}
		fmt.Fprintf(out, "  URL:     %s\n", url)
		fmt.Fprintf(out, "  API key: %s\n", apiKey.Reveal())
		fmt.Fprintf(out, "  Web UI:  %s/ (sign in as dev, password %s)\n", url, password)
		fmt.Fprintf(out, "  Try:     curl -s -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' -d '{\"type\":\"primes\",\"input\":{\"n\":10000000}}' %s/v1/jobs\n", apiKey.Reveal(), url)
		if r.Embedded != nil {
			fmt.Fprintf(out, "  Redis:   %s (embedded; its password is new each run)\n", r.EmbeddedURL.Reveal())
		}
		fmt.Fprintln(out, "  The API key and passwords above are for this machine only: anyone who sees them can act as dev.")
	}, w.ReadyChecks()...)
}

// devProgressURL is dev's progress service's public URL: --progress-url,
// else its own address.
func devProgressURL(cfg app.Config) string {
	if cfg.ProgressURL != "" {
		return cfg.ProgressURL
	}
	host, port, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return "http://" + cfg.Addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// addTypesFile adds the job types of dev's --types FILE to the built-in
// ones: the in-process worker runs them and the api accepts them. A name in
// both is refused, as `claimcheck worker --types` refuses it.
func addTypesFile(cfg *app.Config, path string) error {
	if path == "" {
		return nil
	}
	more, err := worker.TypesFromFile(path)
	if err != nil {
		return fmt.Errorf("--types %s: %w", path, err)
	}
	for _, t := range more {
		if slices.ContainsFunc(cfg.Types, func(b worker.Type) bool { return b.Name == t.Name }) {
			return fmt.Errorf("--types %s: job type %q is also compiled in; rename one of them", path, t.Name)
		}
	}
	cfg.Types = append(slices.Clip(cfg.Types), more...)
	return nil
}

// devAPIKey returns the preset key (registering it if Redis does not know it
// yet) or a new random key for the user "dev".
func devAPIKey(ctx context.Context, keys *identity.APIKeys, preset secret.Secret) (secret.Secret, error) {
	if preset != "" {
		if _, err := keys.Authenticate(ctx, preset); err == nil {
			return preset, nil
		} else if !errors.Is(err, identity.ErrUnauthenticated) {
			return "", err
		}
	}
	s, _, err := keys.Create(ctx, "dev", "dev", preset)
	return s, err
}

// devPassword gives the user "dev" a fresh random password for the web UI,
// printed once like the API key.
func devPassword(ctx context.Context, users *identity.Users) (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	pw := base64.RawURLEncoding.EncodeToString(b)
	err := users.Add(ctx, "dev", pw)
	if errors.Is(err, identity.ErrUserExists) {
		err = users.SetPassword(ctx, "dev", pw)
	}
	return pw, err
}

func requireRedis(cfg app.Config, what string) error {
	if cfg.RedisURL == "" {
		return fmt.Errorf("%s needs a shared Redis: set REDIS_URL or --redis-url (only `dev` embeds one)", what)
	}
	return nil
}

// loadShared loads the configuration of a service that runs beside others
// and connects to their shared Redis; the caller closes it.
func (c *common) loadShared(cmd *cobra.Command, what string) (*config.Redis, error) {
	if err := c.load(cmd); err != nil {
		return nil, err
	}
	if err := requireRedis(c.cfg, what); err != nil {
		return nil, err
	}
	return config.OpenRedis(cmd.Context(), c.cfg.RedisURL)
}

func newAPI() *cobra.Command {
	var c common
	var trustGateway bool
	var gatewayJWKS string
	cmd := &cobra.Command{
		Use:   "api",
		Short: "Run the enqueue API (POST /v1/jobs, job types, JWKS)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := c.loadShared(cmd, "api")
			if err != nil {
				return err
			}
			defer r.Close()
			keys, created, err := tokens.EnsureDir(c.cfg.JobKeyDir)
			if err != nil {
				return err
			}
			if created {
				c.cfg.Logger.Info("generated a job-token signing key", "dir", c.cfg.JobKeyDir)
			}
			if trustGateway {
				if c.cfg.GatewayKeys, err = gatewayKeys(cmd.Context(), c.cfg, gatewayJWKS); err != nil {
					return err
				}
			}
			h, err := app.APIHandler(c.cfg, r.Client, keys)
			if err != nil {
				return err
			}
			dirs := map[string]*tokens.KeySet{c.cfg.JobKeyDir: keys}
			if ks, ok := c.cfg.GatewayKeys.(*tokens.KeySet); ok {
				dirs[c.cfg.GatewayKeyDir] = ks
			}
			go app.WatchRevocations(cmd.Context(), c.cfg, r.Client, nil, app.ReloadKeys(cmd.Context(), c.cfg, dirs, c.cfg.GatewayKeys), nil)
			_ = metrics.Queues(asynq.NewInspectorFromRedisClient(r.Client))
			return app.ServeWithOps(cmd.Context(), c.cfg, r.Client, h, listening(c.cfg, "api"))
		},
	}
	c.bind(cmd.Flags(), true)
	c.bindSessions(cmd.Flags())
	c.bindMetrics(cmd.Flags())
	cmd.Flags().BoolVar(&trustGateway, "trust-gateway", false, "authenticate people only by the gateway's internal tokens (at+jwt), not by sessions or API keys")
	cmd.Flags().StringVar(&gatewayJWKS, "gateway-jwks-url", "", "with --trust-gateway: the gateway's JWKS URL (default: public keys in DATA_DIR/keys/gateway)")
	cmd.Flags().StringVar(&c.cfg.ProgressURL, "progress-url", "", "public base URL of the progress service, for links and Location (default: same origin)")
	cmd.Flags().StringVar(&c.cfg.JobKeyDir, "key-dir", "", "job-token signing keys (default DATA_DIR/keys/jobs)")
	bindPriority(cmd.Flags(), &c.cfg)
	config.BindWebhookAllowPrivate(cmd.Flags(), &c.cfg.WebhookAllowPrivate)
	config.AnnotateEnv(cmd.Flags())
	return cmd
}

// gatewayKeys is how an api behind the gateway verifies its tokens: the
// gateway's JWKS when a URL is given, else the public keys in its key dir.
func gatewayKeys(ctx context.Context, cfg app.Config, jwksURL string) (tokens.KeySource, error) {
	if jwksURL != "" {
		return tokens.NewRemoteKeysOf(ctx, jwksURL, tokens.KindAccess, nil)
	}
	ks, err := tokens.LoadDir(cfg.GatewayKeyDir)
	if err != nil {
		return nil, fmt.Errorf("--trust-gateway: %w (give --gateway-jwks-url, or copy the gateway's *.pub.pem files there)", err)
	}
	return ks, nil
}

func newGateway() *cobra.Command {
	var c common
	var upstream, progressUpstream string
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Exchange sessions and API keys for short-lived internal tokens (forward-auth endpoint and reverse proxy)",
		Long: `gateway serves GET /v1/auth/exchange, which forward-auth proxies (Traefik
forwardAuth, nginx auth_request, Envoy ext_authz) call with the client's
request headers: a valid session cookie, bearer session or API key gets 200
with "Authorization: Bearer <at+jwt>" and X-Claimcheck-User; anything else a
401 or 403 problem. Its public keys are at /v1/auth/jwks.json.

With --upstream it is also a reverse proxy: every other request carrying a
credential is exchanged and forwarded with the internal token instead of the
credential (WebSockets and event streams pass through). Run the api behind it
with --trust-gateway.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := c.loadShared(cmd, "gateway")
			if err != nil {
				return err
			}
			defer r.Close()
			var up *url.URL
			if upstream != "" {
				if up, err = url.Parse(upstream); err != nil || up.Scheme == "" || up.Host == "" {
					return fmt.Errorf("--upstream %q: want an absolute URL such as http://127.0.0.1:8080", upstream)
				}
			}
			gwKeys, created, err := tokens.EnsureDir(c.cfg.GatewayKeyDir)
			if err != nil {
				return err
			}
			if created {
				c.cfg.Logger.Info("generated a gateway signing key", "dir", c.cfg.GatewayKeyDir)
			}
			gw, err := app.Gateway(c.cfg, r.Client, app.Identity(c.cfg, r.Client), gwKeys)
			if err != nil {
				return err
			}
			go app.WatchRevocations(cmd.Context(), c.cfg, r.Client, gw,
				app.ReloadKeys(cmd.Context(), c.cfg, map[string]*tokens.KeySet{c.cfg.GatewayKeyDir: gwKeys}), nil)
			var prog *url.URL
			if progressUpstream != "" {
				if prog, err = url.Parse(progressUpstream); err != nil || prog.Scheme == "" || prog.Host == "" {
					return fmt.Errorf("--progress-upstream %q: want an absolute URL such as http://127.0.0.1:8081", progressUpstream)
				}
			}
			return app.ServeWithOps(cmd.Context(), c.cfg, r.Client, app.GatewayHandler(c.cfg, gw, up, prog), listening(c.cfg, "gateway"))
		},
	}
	c.bind(cmd.Flags(), false)
	c.bindSessions(cmd.Flags())
	cmd.Flags().StringVar(&c.cfg.Addr, "addr", "127.0.0.1:8082", "listen address `host:port`")
	c.bindMetrics(cmd.Flags())
	cmd.Flags().StringVar(&upstream, "upstream", "", "proxy every other request to this URL, exchanged (default: forward-auth only)")
	cmd.Flags().StringVar(&progressUpstream, "progress-upstream", "", "with --upstream: send the progress service's routes here untouched, so one origin serves all (the web UI needs that)")
	cmd.Flags().StringVar(&c.cfg.GatewayKeyDir, "key-dir", "", "internal-token signing keys (default DATA_DIR/keys/gateway)")
	bindTrustedProxy(cmd.Flags(), &c.cfg) // forward-auth needs it: see README
	config.AnnotateEnv(cmd.Flags())
	return cmd
}

func newProgress() *cobra.Command {
	var c common
	cmd := &cobra.Command{
		Use:   "progress",
		Short: "Run the progress/results service (status, cancel, result download for job-token holders)",
		Long: `progress serves job status, cancellation and results to holders of a job token.
It verifies tokens with public keys only: from --jwks-url (the api's
/.well-known/jwks.json) or from the public key files in --key-dir.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := c.loadShared(cmd, "progress")
			if err != nil {
				return err
			}
			defer r.Close()
			keys, err := app.ProgressKeys(cmd.Context(), c.cfg)
			if err != nil {
				return err
			}
			prog, err := app.Progress(c.cfg, r.Client, keys)
			if err != nil {
				return err
			}
			defer prog.Close()
			// Rotated or retired api keys reach this process at once.
			dirs := map[string]*tokens.KeySet{}
			if ks, ok := keys.(*tokens.KeySet); ok {
				dirs[c.cfg.JobKeyDir] = ks
			}
			go app.WatchRevocations(cmd.Context(), c.cfg, r.Client, nil, app.ReloadKeys(cmd.Context(), c.cfg, dirs, keys), nil)
			return app.ServeWithOps(cmd.Context(), c.cfg, r.Client, app.Handler(c.cfg, prog), listening(c.cfg, "progress"))
		},
	}
	c.bind(cmd.Flags(), false)
	cmd.Flags().StringVar(&c.cfg.Addr, "addr", "127.0.0.1:8081", "listen address `host:port`")
	c.bindMetrics(cmd.Flags())
	cmd.Flags().StringVar(&c.cfg.JWKSURL, "jwks-url", "", "fetch the api's public keys from this URL")
	bindTrustedProxy(cmd.Flags(), &c.cfg)
	cmd.Flags().StringVar(&c.cfg.ProgressURL, "public-url", "", "this service's public base URL, for absolute download links (default: relative links)")
	cmd.Flags().StringVar(&c.cfg.JobKeyDir, "key-dir", "", "read public keys from this directory (default DATA_DIR/keys/jobs)")
	cmd.Flags().StringVar(&c.cfg.LinkKeyDir, "link-key-dir", "", "download-link signing keys, shared by every progress instance (default DATA_DIR/keys/progress)")
	c.bindStreams(cmd.Flags())
	c.bindResultsRedirect(cmd.Flags())
	config.AnnotateEnv(cmd.Flags())
	return cmd
}

func newWorker() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run an Asynq worker for the built-in job types (and those of --types FILE)",
		Long: `worker runs the built-in job types, and with --types FILE also the programs a
types file describes, until SIGINT or SIGTERM. It reads exactly the flags and
environment a worker.Main program of your own reads (package worker, BindFlags).`,
		Args: cobra.NoArgs,
	}
	run := worker.BindFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return run(cmd.Context(), builtin.Types()...)
	}
	config.AnnotateEnv(cmd.Flags())
	return cmd
}

// bindPriority adds the api's priority setting (api, dev).
func bindPriority(fs *pflag.FlagSet, cfg *app.Config) {
	fs.BoolVar(&cfg.PriorityForAll, "priority-for-all", false, `let every user submit at priority "high" (default: only credentials with the jobs:priority scope, which an operator grants)`)
}

// bindRunningCap adds the per-user running-job cap (dev; the worker's is in
// config.Worker). It is enforced where jobs start, so every worker of a
// fleet needs the same value.
func bindRunningCap(fs *pflag.FlagSet, cfg *app.Config) {
	config.BindMaxRunningJobs(fs, &cfg.Worker.MaxRunningJobs)
}

func listening(cfg app.Config, what string) func(string) {
	return func(addr string) { cfg.Logger.Info(what+" listening", "addr", addr) }
}
