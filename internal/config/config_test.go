package config_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"

	"github.com/claimcheck/claimcheck/internal/config"
	"github.com/claimcheck/claimcheck/internal/redistest"
)

func TestEnvName(t *testing.T) {
	for flag, want := range map[string]string{
		"redis-url": "REDIS_URL", "data-dir": "CLAIMCHECK_DATA_DIR", "max-running-jobs": "CLAIMCHECK_MAX_RUNNING_JOBS", "types": "CLAIMCHECK_TYPES",
	} {
		if got := config.EnvName(flag); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", flag, got, want)
		}
	}
}

// TestCheckRedisPassword: the shipped example passwords are refused unless
// allowed, in either URL spelling, naming the example but never another
// password or the URL.
func TestCheckRedisPassword(t *testing.T) {
	for _, tc := range []struct {
		name, url string
		allow     bool
		refused   bool
	}{
		{"example as password", "redis://:change-me-worker@h:6379/0", false, true},
		{"example with a user", "redis://worker:change-me-worker@h:6379/0", false, true},
		{"example as lone user", "redis://change-me-api@h:6379/0", false, true},
		{"example allowed", "redis://:change-me-worker@h:6379/0", true, false},
		{"own password", "redis://:change-me-worker-not@h:6379/0", false, false},
		{"no password", "redis://h:6379/0", false, false},
		{"empty", "", false, false},
		{"not a URL", "::::", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := config.CheckRedisPassword(tc.url, tc.allow)
			if (err != nil) != tc.refused {
				t.Fatalf("refused = %v, want %v", err, tc.refused)
			}
			if err != nil {
				if !strings.Contains(err.Error(), "shipped example password") || !strings.Contains(err.Error(), config.AllowExampleEnv+"=1") {
					t.Errorf("error does not say why or how to go on: %v", err)
				}
				if strings.Contains(err.Error(), "h:6379") {
					t.Errorf("error echoes the URL: %v", err)
				}
			}
		})
	}
}

func TestAllowExampleFromEnv(t *testing.T) {
	for v, want := range map[string]bool{"1": true, "true": true, "0": false, "": false, "yes please": false} {
		t.Setenv(config.AllowExampleEnv, v)
		if got := config.AllowExampleFromEnv(); got != want {
			t.Errorf("%s=%q: %v, want %v", config.AllowExampleEnv, v, got, want)
		}
	}
}

func TestNewLogger(t *testing.T) {
	var b bytes.Buffer
	l, err := config.NewLogger(&b, "json", "warn")
	if err != nil {
		t.Fatal(err)
	}
	l.Info("dropped")
	l.Warn("kept")
	var line map[string]any
	if err := json.Unmarshal(b.Bytes(), &line); err != nil || line["msg"] != "kept" {
		t.Fatalf("json logger at warn wrote %q (%v)", b.String(), err)
	}
	if _, err := config.NewLogger(&b, "yaml", "info"); err == nil || !strings.Contains(err.Error(), "--log-format") {
		t.Errorf("yaml format: %v", err)
	}
	if _, err := config.NewLogger(&b, "text", "loud"); err == nil || !strings.Contains(err.Error(), "--log-level") {
		t.Errorf("level loud: %v", err)
	}
}

// parse binds config.Worker on a fresh flag set and parses args.
func parse(t *testing.T, args ...string) (*config.Worker, *pflag.FlagSet) {
	t.Helper()
	var w config.Worker
	fs := pflag.NewFlagSet("w", pflag.ContinueOnError)
	w.Bind(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return &w, fs
}

// TestWorkerFlags: the worker's flags exist under their documented names,
// the command line wins over the environment and the environment over
// defaults.
func TestWorkerFlags(t *testing.T) {
	var w config.Worker
	fs := pflag.NewFlagSet("w", pflag.ContinueOnError)
	w.Bind(fs)
	var names []string
	fs.VisitAll(func(f *pflag.Flag) { names = append(names, f.Name) })
	want := "allow-example-passwords,concurrency,data-dir,log-format,log-level,max-running-jobs,metrics-addr,pools,progress-url,receipt-key-dir,redis-url,results-check-interval,results-dir,results-min-free,results-url,retention,task-check-interval,types,webhook-allow-private,webhook-concurrency,webhook-key-dir,webhook-link-key-dir"
	if got := strings.Join(names, ","); got != want {
		t.Errorf("flags\n got %s\nwant %s", got, want)
	}

	t.Setenv("REDIS_URL", "redis://from-env:1/0")
	t.Setenv("CLAIMCHECK_CONCURRENCY", "7")
	t.Setenv("CLAIMCHECK_POOLS", "gpu, ,cpu")
	t.Setenv("CLAIMCHECK_DATA_DIR", "/srv/cc")
	t.Setenv("CLAIMCHECK_LOG_LEVEL", "debug")
	t.Setenv("CLAIMCHECK_WEBHOOK_ALLOW_PRIVATE", "true")
	c, fs := parse(t, "--concurrency", "3", "--max-running-jobs", "0", "--task-check-interval", "50ms", "--types", "t.yaml")
	var logs bytes.Buffer
	logger, err := c.Load(fs, &logs)
	if err != nil {
		t.Fatal(err)
	}
	if c.RedisURL != "redis://from-env:1/0" || c.Concurrency != 3 || c.MaxRunningJobs != -1 ||
		c.TaskCheckInterval != 50*time.Millisecond || c.TypesFile != "t.yaml" || c.Retention != 24*time.Hour ||
		!c.WebhookAllowPrivate {
		t.Errorf("loaded %+v", *c)
	}
	if strings.Join(c.Pools, "|") != "gpu|cpu" {
		t.Errorf("pools %q, want gpu and cpu", c.Pools)
	}
	if c.Results() != "/srv/cc/results" {
		t.Errorf("results dir %q, want DATA_DIR/results", c.Results())
	}
	logger.Debug("hello")
	if !strings.HasPrefix(logs.String(), "{") || !strings.Contains(logs.String(), "hello") {
		t.Errorf("want JSON logs at debug (CLAIMCHECK_LOG_LEVEL), got %q", logs.String())
	}

	// Defaults: the cap is DefaultMaxRunningJobs, shown as such in help.
	c, _ = parse(t, "--results-dir", "/r")
	if c.MaxRunningJobs != config.DefaultMaxRunningJobs || c.Results() != "/r" || c.LogFormat != "json" || c.WebhookAllowPrivate {
		t.Errorf("defaults %+v", *c)
	}
	if f := fs.Lookup("max-running-jobs"); f.DefValue != "4" {
		t.Errorf("--max-running-jobs default shows %q", f.DefValue)
	}
}

// TestWorkerLoadRefuses: each refusal happens in Load, before anything is
// opened, and says what to fix.
func TestWorkerLoadRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"no redis", map[string]string{"REDIS_URL": ""}, nil, "needs a shared Redis: set REDIS_URL"},
		{"example password", map[string]string{"REDIS_URL": "redis://:change-me-worker@127.0.0.1:1/0", config.AllowExampleEnv: "false"}, nil, "shipped example password"},
		{"bad env value", map[string]string{"REDIS_URL": "redis://x:1", "CLAIMCHECK_CONCURRENCY": "many"}, nil, "CLAIMCHECK_CONCURRENCY"},
		{"bad log format", map[string]string{"REDIS_URL": "redis://x:1", "CLAIMCHECK_LOG_FORMAT": "yaml"}, nil, "--log-format"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			c, fs := parse(t, tc.args...)
			if _, err := c.Load(fs, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load: %v, want an error containing %q", err, tc.want)
			}
		})
	}
	// Allowed by the variable, the example password is not refused.
	t.Setenv("REDIS_URL", "redis://:change-me-worker@127.0.0.1:1/0")
	t.Setenv(config.AllowExampleEnv, "1")
	c, fs := parse(t)
	if _, err := c.Load(fs, &bytes.Buffer{}); err != nil {
		t.Fatalf("allowed example password refused: %v", err)
	}
}

func TestOpenRedis(t *testing.T) {
	ctx := context.Background()
	r, err := config.OpenRedis(ctx, redistest.URL())
	if err != nil {
		t.Fatal(err)
	}
	if r.Embedded != nil || r.Client.Set(ctx, "k", "v", 0).Err() != nil {
		t.Fatalf("real redis: embedded=%v", r.Embedded != nil)
	}
	r.Close()

	// Embedded: reachable only with its own password.
	e, err := config.OpenRedis(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if e.Embedded == nil || e.Client.Ping(ctx).Err() != nil {
		t.Fatal("embedded redis not running")
	}
	if _, err := config.OpenRedis(ctx, "redis://"+e.Embedded.Addr()); err == nil {
		t.Error("embedded redis answered without its password")
	}

	// A bad URL is refused without echoing it (it may hold a password).
	if _, err := config.OpenRedis(ctx, "redis://:s3cret@host:notaport"); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("bad URL: %v", err)
	}
}

// TestResultsMinFree: --results-min-free reads sizes and percentages into
// worker.Config's terms (negative bytes: no byte floor) and defaults to
// DefaultResultsMinFree, shown as 1GiB in the help.
func TestResultsMinFree(t *testing.T) {
	c, fs := parse(t)
	if c.ResultsMinFree != config.DefaultResultsMinFree || c.ResultsMinFreePercent != 0 || fs.Lookup("results-min-free").DefValue != "1GiB" {
		t.Errorf("default %d bytes, %g%%, shown %q", c.ResultsMinFree, c.ResultsMinFreePercent, fs.Lookup("results-min-free").DefValue)
	}
	for _, tc := range []struct {
		in      string
		bytes   int64
		percent float64
	}{
		{"2GiB", 2 << 30, 0},
		{"500MiB", 500 << 20, 0},
		{"1234", 1234, 0},
		{"7KiB", 7 << 10, 0},
		{"5%", -1, 5},
		{"0.5%", -1, 0.5},
		{"0", -1, 0},
	} {
		c, _ := parse(t, "--results-min-free", tc.in)
		if c.ResultsMinFree != tc.bytes || c.ResultsMinFreePercent != tc.percent {
			t.Errorf("%s: %d bytes, %g%%; want %d, %g%%", tc.in, c.ResultsMinFree, c.ResultsMinFreePercent, tc.bytes, tc.percent)
		}
	}
	for _, bad := range []string{"lots", "-1GiB", "100%", "-3%", "1PiB", "9999999999TiB"} {
		var w config.Worker
		fs := pflag.NewFlagSet("w", pflag.ContinueOnError)
		fs.SetOutput(io.Discard)
		w.Bind(fs)
		if err := fs.Parse([]string{"--results-min-free", bad}); err == nil {
			t.Errorf("%s accepted: %d bytes, %g%%", bad, w.ResultsMinFree, w.ResultsMinFreePercent)
		}
	}
}

// TestRedisURLForms: every REDIS_URL form reaches its server kind, and a
// bad one is refused without echoing the password.
func TestRedisURLForms(t *testing.T) {
	ctx := context.Background()
	nodes := redistest.Cluster(t)
	r, err := config.OpenRedis(ctx, redistest.ClusterURL(nodes))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, ok := r.Client.(*redis.ClusterClient); !ok {
		t.Fatalf("redis+cluster:// gave a %T", r.Client)
	}
	// Keys in many slots, all reachable: the client follows the cluster.
	for i := range 20 {
		k := fmt.Sprintf("k%d", i)
		if err := r.Client.Set(ctx, k, i, 0).Err(); err != nil {
			t.Fatalf("set %s on the cluster: %v", k, err)
		}
	}
	if n, err := r.Client.ClusterKeySlot(ctx, "k1").Result(); err != nil || n == 0 {
		t.Fatalf("cluster keyslot: %d %v", n, err)
	}

	for _, tc := range []struct{ url, want string }{
		{"redis://:s3cret@h:1/3", "database number"},
		{"redis://:s3cret@h1:1,h2:2", "several hosts"},
		{"redis+sentinel://:s3cret@s1:26379", "master"},
		{"redis+cluster://:s3cret@h1:1?pool=9", "unknown parameter"},
		{"mysql://:s3cret@h:1", "unknown scheme"},
		{"redis+cluster://:s3cret@h1:1,,h2:2", "empty host"},
	} {
		_, err := config.OpenRedis(ctx, tc.url)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: %v, want an error naming %q and no password", tc.url, err, tc.want)
		}
	}
	// The example-password check reads every form.
	if err := config.CheckRedisPassword("redis+cluster://api:change-me-api@h1:1,h2:2", false); err == nil {
		t.Error("example password in a cluster URL was not refused")
	}
}

// TestSentinelFailover: a redis+sentinel:// client follows its master
// through a failover. A write the replica acknowledged (WAIT) survives
// it; docs/SCALING.md says what an unacknowledged one may not.
func TestSentinelFailover(t *testing.T) {
	ctx := context.Background()
	g := redistest.Sentinel(t)
	r, err := config.OpenRedis(ctx, g.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// The write and its WAIT go on one connection (a pipeline): WAIT
	// counts the replicas that have this connection's writes. Under load
	// the replica may still be syncing, so the pair is sent again (WAIT
	// itself blocks, so this is no busy loop) until one acknowledges.
	ackDeadline := time.Now().Add(20 * time.Second)
	for {
		var wait *redis.Cmd
		_, err := r.Client.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, "before", "1", 0)
			wait = p.Do(ctx, "WAIT", 1, 1000)
			return nil
		})
		n, _ := wait.Int()
		if err == nil && n == 1 {
			break
		}
		if time.Now().After(ackDeadline) {
			t.Fatalf("no replica acknowledged the write within 20 s: %d (%v)", n, err)
		}
	}
	g.Master.Kill()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := r.Client.Set(ctx, "after", "1", 0).Err()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no write accepted 30 s after the master died: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // waiting for the Sentinel to promote the replica
	}
	if v, err := r.Client.Get(ctx, "before").Result(); err != nil || v != "1" {
		t.Fatalf("acknowledged write lost in the failover: %q %v", v, err)
	}
	promoted := redis.NewClient(&redis.Options{Addr: g.Replica.Addr()})
	defer promoted.Close()
	role, err := promoted.Do(ctx, "ROLE").Slice()
	if err != nil || role[0] != "master" {
		t.Fatalf("replica's role after failover: %v %v", role, err)
	}
}

// TestResultsURL: CLAIMCHECK_RESULTS_URL names the results store and wins
// over the data directory's default; --results-dir with it is refused.
func TestResultsURL(t *testing.T) {
	t.Setenv("REDIS_URL", "redis://x:1/0")
	t.Setenv("CLAIMCHECK_RESULTS_URL", "s3://results?endpoint=http://127.0.0.1:9000")
	c, fs := parse(t)
	if _, err := c.Load(fs, io.Discard); err != nil {
		t.Fatal(err)
	}
	if c.Results() != "s3://results?endpoint=http://127.0.0.1:9000" {
		t.Errorf("results %q", c.Results())
	}
	c, fs = parse(t, "--results-dir", "/r")
	if _, err := c.Load(fs, io.Discard); err == nil || !strings.Contains(err.Error(), "both set") {
		t.Errorf("--results-dir with CLAIMCHECK_RESULTS_URL: %v", err)
	}
}

// TestRedisURLErrorsHidePasswords: a password with an unencoded '?' or a
// sentinel_password with an unencoded '&' turns the password's tail into a
// query parameter's name; the error for it must not echo that name.
func TestRedisURLErrorsHidePasswords(t *testing.T) {
	for _, u := range []string{
		"redis://user:pa?s3cret@h:1",
		"redis+cluster://:pa?s3cret@h1:1,h2:2",
		"redis+sentinel://s1:26379?master=m&sentinel_password=pa&s3cret",
	} {
		_, err := config.OpenRedis(context.Background(), u)
		if err == nil || !strings.Contains(err.Error(), "unknown parameter") || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: %v, want an unknown-parameter error without the password", u, err)
		}
		if err := config.CheckRedisPassword(u, false); err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: the password check echoes the password: %v", u, err)
		}
	}
}
