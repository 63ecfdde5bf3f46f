package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// DefaultMaxRunningJobs is a worker's per-user cap on running jobs unless
// set (worker.DefaultMaxRunningJobs says why it is 4). It is declared here
// because the flag's default is, and this package imports no worker.
const DefaultMaxRunningJobs = 4

// Worker is a worker process's settings: what `claimcheck worker` and a
// program calling worker.Main read from their flags and environment. Bind
// declares the flags; Load applies the environment and checks them.
type Worker struct {
	// RedisURL is the shared Redis (--redis-url, REDIS_URL); required.
	RedisURL string
	// AllowExamplePasswords accepts a RedisURL with one of users.acl's
	// shipped passwords (throwaway setups only).
	AllowExamplePasswords bool
	// DataDir is where results go unless ResultsDir says otherwise.
	DataDir string
	// ResultsDir is the result blob directory, shared with the progress
	// service; empty means DataDir/results (see Results).
	ResultsDir string
	// ResultsURL is where results go when not in a directory
	// (--results-url, CLAIMCHECK_RESULTS_URL): file:///dir or
	// s3://bucket?endpoint=…&region=…; it and ResultsDir exclude each other.
	ResultsURL string
	// Retention is how long finished jobs and their results are kept.
	Retention time.Duration
	// LogFormat is "json" or "text"; LogLevel "debug", "info", "warn" or
	// "error".
	LogFormat, LogLevel string
	// Concurrency is how many jobs run at once (0: number of CPUs).
	Concurrency int
	// Pools are the pools the worker takes jobs from (empty: the pools of
	// its types).
	Pools []string
	// MetricsAddr, when set, is where /metrics, /healthz and /readyz are
	// served.
	MetricsAddr string
	// TaskCheckInterval is how often an idle worker polls (0: the worker's
	// default).
	TaskCheckInterval time.Duration
	// MaxRunningJobs caps each user's running jobs across the fleet, with
	// worker.Config's meaning: negative is no cap, 0 the default. The flag
	// reads 0 or less as no cap.
	MaxRunningJobs int
	// TypesFile is a file of job types that run programs (--types), added
	// to the types compiled in.
	TypesFile string
	// ResultsMinFree and ResultsMinFreePercent are the free space the
	// results store must keep for the worker to take jobs
	// (--results-min-free: bytes, or a percentage of the file system), in
	// worker.Config's terms: a negative byte floor or a zero percentage is
	// none of that kind.
	ResultsMinFree        int64
	ResultsMinFreePercent float64
	// ResultsCheckInterval is how often the worker checks its results
	// store (0: the worker's default, 5s).
	ResultsCheckInterval time.Duration
	// WebhookConcurrency is how many webhook deliveries run at once beside
	// the jobs (--webhook-concurrency, 8); 0: this worker delivers none.
	WebhookConcurrency int
	// ProgressURL is the progress service's public base URL, for the
	// download links of completed webhooks (--progress-url); without it
	// the worker delivers no webhooks.
	ProgressURL string
	// WebhookKeyDir and WebhookLinkKeyDir hold the webhook signing keys
	// and the keys of webhook download links (DataDir/keys/webhooks,
	// DataDir/keys/webhook-links); every worker must share them.
	WebhookKeyDir, WebhookLinkKeyDir string
	// WebhookAllowPrivate lets webhooks be delivered to loopback, private,
	// link-local and other non-public addresses (webhook.Guard.AllowPrivate;
	// --webhook-allow-private). Give the api the same value: it checks at
	// submit what the worker checks at connect time.
	WebhookAllowPrivate bool
	// ReceiptKeyDir holds the worker fleet's result-receipt signing keys
	// (--receipt-key-dir; empty: DataDir/keys/workers, see ReceiptKeys),
	// created on first use. It is the only key directory a worker reads.
	ReceiptKeyDir string
}

// ReceiptKeys is the receipt key directory: ReceiptKeyDir, or
// DataDir/keys/workers (app.Config.WorkerKeyDir's default too).
func (w *Worker) ReceiptKeys() string {
	if w.ReceiptKeyDir != "" {
		return w.ReceiptKeyDir
	}
	return filepath.Join(w.DataDir, "keys", "workers")
}

// Bind declares the worker's flags on fs, with their defaults, into w.
// The flags and their names are the interface of `claimcheck worker` and
// of every worker.Main program; AnnotateEnv adds the variables to the help.
func (w *Worker) Bind(fs *pflag.FlagSet) {
	fs.StringVar(&w.DataDir, "data-dir", ".claimcheck", "directory for results, unless --results-dir says otherwise")
	fs.StringVar(&w.RedisURL, "redis-url", "", "the shared Redis `URL` (redis://[user:pass@]host:port/db)")
	fs.BoolVar(&w.AllowExamplePasswords, "allow-example-passwords", false, "accept a REDIS_URL with one of deploy/redis/users.acl's example passwords (change-me-…): throwaway setups only")
	fs.StringVar(&w.ResultsDir, "results-dir", "", "result blob directory (default DATA_DIR/results); must be shared by workers and progress")
	fs.StringVar(&w.ResultsURL, "results-url", "", ResultsURLUsage)
	fs.DurationVar(&w.Retention, "retention", 24*time.Hour, "how long finished jobs and their results are kept")
	fs.StringVar(&w.LogFormat, "log-format", "json", "log format: text or json")
	fs.StringVar(&w.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.IntVar(&w.Concurrency, "concurrency", 0, "jobs run at once (default: number of CPUs)")
	fs.StringSliceVar(&w.Pools, "pools", nil, "comma-separated `pools` to take jobs from (default: the pools of this worker's job types)")
	fs.StringVar(&w.MetricsAddr, "metrics-addr", "", "serve /metrics, /healthz and /readyz on this address (e.g. 127.0.0.1:9090; default off)")
	fs.DurationVar(&w.TaskCheckInterval, "task-check-interval", 0, "how often an idle worker polls for tasks (default 10ms)")
	BindMaxRunningJobs(fs, &w.MaxRunningJobs)
	w.ResultsMinFree = DefaultResultsMinFree
	fs.Var(&minFree{bytes: &w.ResultsMinFree, percent: &w.ResultsMinFreePercent}, "results-min-free",
		"pause taking jobs while the results store has less free space than this: bytes (suffixes KiB, MiB, GiB, TiB) or a percentage of its file system (5%); 0: no floor")
	fs.DurationVar(&w.ResultsCheckInterval, "results-check-interval", 0, "how often the results store is checked for writes and free space (default 5s)")
	fs.IntVar(&w.WebhookConcurrency, "webhook-concurrency", 8, "webhook deliveries run at once, beside the jobs (0: this worker delivers none)")
	fs.StringVar(&w.ProgressURL, "progress-url", "", "the progress service's public base `URL`, for the download links in completed webhooks (needed to deliver webhooks)")
	fs.StringVar(&w.WebhookKeyDir, "webhook-key-dir", "", "webhook signing keys (default DATA_DIR/keys/webhooks); shared by every worker")
	fs.StringVar(&w.WebhookLinkKeyDir, "webhook-link-key-dir", "", "signing keys of webhook download links (default DATA_DIR/keys/webhook-links); shared by every worker")
	BindWebhookAllowPrivate(fs, &w.WebhookAllowPrivate)
	fs.StringVar(&w.ReceiptKeyDir, "receipt-key-dir", "", "result-receipt signing keys, shared by every worker (default DATA_DIR/keys/workers; created on first use)")
	fs.StringVar(&w.TypesFile, "types", "", "also serve the job types in this YAML or JSON `FILE` (programs run by the exec protocol; see README)")
}

// WebhookKeys returns the webhook key directories, defaults applied.
func (w *Worker) WebhookKeys() (keys, links string) {
	keys, links = w.WebhookKeyDir, w.WebhookLinkKeyDir
	if keys == "" {
		keys = filepath.Join(w.DataDir, "keys", "webhooks")
	}
	if links == "" {
		links = filepath.Join(w.DataDir, "keys", "webhook-links")
	}
	return keys, links
}

// DefaultResultsMinFree is --results-min-free unless given: 1 GiB, the
// default cap on one result, so a result as large as allowed still fits
// (worker.DefaultResultsMinFree says more; a test keeps the two equal).
const DefaultResultsMinFree = 1 << 30

// minFree reads --results-min-free: "2GiB", "500MiB", "1073741824" or
// "5%". Setting one kind of floor clears the other.
type minFree struct {
	bytes   *int64
	percent *float64
}

var sizeSuffixes = []struct {
	suffix string
	mult   int64
}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}

func (m *minFree) String() string {
	if m.bytes == nil {
		return ""
	}
	if *m.percent > 0 {
		return strconv.FormatFloat(*m.percent, 'g', -1, 64) + "%"
	}
	if *m.bytes <= 0 {
		return "0"
	}
	for _, s := range sizeSuffixes {
		if *m.bytes%s.mult == 0 {
			return strconv.FormatInt(*m.bytes/s.mult, 10) + s.suffix
		}
	}
	return strconv.FormatInt(*m.bytes, 10)
}

func (m *minFree) Type() string { return "size" }

func (m *minFree) Set(v string) error {
	v = strings.TrimSpace(v)
	if p, ok := strings.CutSuffix(v, "%"); ok {
		f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || f < 0 || f >= 100 {
			return fmt.Errorf("%q: a percentage from 0 to under 100", v)
		}
		*m.bytes, *m.percent = -1, f
		return nil
	}
	mult := int64(1)
	for _, s := range sizeSuffixes {
		if n, ok := strings.CutSuffix(v, s.suffix); ok {
			v, mult = strings.TrimSpace(n), s.mult
			break
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return fmt.Errorf("%q: a size such as 1GiB, 500MiB or 5%%", v)
	}
	*m.bytes, *m.percent = n*mult, 0
	if n == 0 {
		*m.bytes = -1 // worker.Config: negative is no floor, 0 the default
	}
	return nil
}

// BindMaxRunningJobs declares --max-running-jobs into p, in
// worker.Config.MaxRunningJobs's terms (negative: no cap), defaulting to
// DefaultMaxRunningJobs. It is enforced where jobs start, so every worker
// of a fleet needs the same value.
func BindMaxRunningJobs(fs *pflag.FlagSet, p *int) {
	*p = DefaultMaxRunningJobs
	fs.Var((*runningCap)(p), "max-running-jobs",
		"each user's jobs running at once across the fleet; give every worker the same value (0 or less: no cap)")
}

// BindWebhookAllowPrivate declares --webhook-allow-private into p: the
// operator's explicit allow of webhook URLs that lead to loopback, private,
// link-local, CGNAT, cloud metadata and other non-public addresses
// (webhook.Guard), refused by default at submit (api) and at connect time
// (worker). The api and every worker need the same value.
func BindWebhookAllowPrivate(fs *pflag.FlagSet, p *bool) {
	fs.BoolVar(p, "webhook-allow-private", false,
		"let webhook URLs lead to loopback, private, link-local and cloud-metadata addresses; anyone who can submit a job can then make this deployment send requests into its own network (tests and trusted setups only; give api and workers the same value)")
}

// runningCap reads --max-running-jobs, where 0 means no cap, into
// worker.Config.MaxRunningJobs, where 0 means the default and no cap is
// negative.
type runningCap int

func (r *runningCap) String() string { return strconv.Itoa(max(int(*r), 0)) }
func (r *runningCap) Type() string   { return "int" }
func (r *runningCap) Set(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil {
		return err
	}
	if n <= 0 {
		n = -1
	}
	*r = runningCap(n)
	return nil
}

// Load finishes w after fs is parsed: the environment fills the flags the
// command line did not set, then the settings are checked (no shipped
// example password, a Redis URL given, a log format and level that exist)
// and the logger they ask for, writing to logs, is returned. Nothing is
// opened or touched before every check passed.
func (w *Worker) Load(fs *pflag.FlagSet, logs io.Writer) (*slog.Logger, error) {
	if err := ApplyEnv(fs); err != nil {
		return nil, err
	}
	if err := CheckRedisPassword(w.RedisURL, w.AllowExamplePasswords); err != nil {
		return nil, err
	}
	if err := CheckResults(w.ResultsDir, w.ResultsURL); err != nil {
		return nil, err
	}
	logger, err := NewLogger(logs, w.LogFormat, w.LogLevel)
	if err != nil {
		return nil, err
	}
	if w.RedisURL == "" {
		return nil, errors.New("worker needs a shared Redis: set REDIS_URL or --redis-url (only `dev` embeds one)")
	}
	pools := w.Pools[:0:0]
	for _, p := range w.Pools {
		if p = strings.TrimSpace(p); p != "" {
			pools = append(pools, p)
		}
	}
	w.Pools = pools
	return logger, nil
}

// ResultsURLUsage is --results-url's help, the same for every command.
const ResultsURLUsage = "where results are kept, instead of --results-dir: file:///dir, or s3://bucket?endpoint=…&region=… for an S3-compatible store (credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY); workers and progress must name the same one"

// CheckResults refuses a results directory and URL given together: which
// one was meant is not for the process to guess.
func CheckResults(dir, url string) error {
	if dir != "" && url != "" {
		return errors.New("--results-dir and --results-url both set: give one (--results-dir DIR is --results-url file://DIR)")
	}
	return nil
}

// Results is where results go: ResultsURL, ResultsDir, or DataDir/results.
func (w *Worker) Results() string {
	if w.ResultsURL != "" {
		return w.ResultsURL
	}
	if w.ResultsDir != "" {
		return w.ResultsDir
	}
	return filepath.Join(w.DataDir, "results")
}
