package deploy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/internal/webhook"
	"github.com/claimcheck/claimcheck/tokens"
	"github.com/claimcheck/claimcheck/worker"
	"github.com/claimcheck/claimcheck/worker/builtin"
)

const aclFile = "redis/users.acl"

// aclUsers reads users.acl: user name → password.
func aclUsers(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open(aclFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	users := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "user" {
			continue
		}
		users[fields[1]] = ""
		for _, f := range fields[2:] {
			if pw, ok := strings.CutPrefix(f, ">"); ok {
				users[fields[1]] = pw
			}
		}
	}
	return users
}

func TestComposeFile(t *testing.T) {
	project := loadCompose(t)
	users := aclUsers(t)
	for _, name := range []string{"redis", "gateway", "api", "worker", "progress"} {
		svc, ok := project.Services[name]
		if !ok {
			t.Errorf("service %s missing", name)
			continue
		}
		if svc.HealthCheck == nil || len(svc.HealthCheck.Test) == 0 {
			t.Errorf("%s has no healthcheck", name)
		}
		for _, v := range svc.Volumes {
			if v.Type == "bind" {
				if _, err := os.Stat(v.Source); err != nil {
					t.Errorf("%s mounts %s, which does not exist: %v", name, v.Source, err)
				}
			}
		}
		if name == "redis" {
			continue
		}
		if svc.Build == nil {
			t.Errorf("%s is not built from the Dockerfile", name)
		} else if _, err := os.Stat(filepath.Join(svc.Build.Context, "Dockerfile")); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		raw := svc.Environment["REDIS_URL"]
		if raw == nil {
			t.Errorf("%s has no REDIS_URL", name)
			continue
		}
		u, err := url.Parse(*raw)
		if err != nil || u.User == nil {
			t.Errorf("%s REDIS_URL names no user (%v)", name, err)
			continue
		}
		pw, _ := u.User.Password()
		if _, ok := users[u.User.Username()]; !ok || pw != testPasswords[u.User.Username()] {
			t.Errorf("%s signs in as %q, which users.acl does not define, or not with its CLAIMCHECK_REDIS_PASSWORD_…", name, u.User.Username())
		}
		// Metrics are on their own address, which is not published.
		if m := serviceFlag(svc, "metrics-addr"); m != "" {
			_, port, _ := strings.Cut(m, ":")
			for _, p := range svc.Ports {
				if strconv.Itoa(int(p.Target)) == port || p.Published == port {
					t.Errorf("%s publishes its metrics address %s", name, m)
				}
			}
		}
		if v := svc.Environment["CLAIMCHECK_ALLOW_EXAMPLE_PASSWORDS"]; v == nil || *v != "false" {
			t.Errorf("%s allows the example passwords by default", name)
		}
	}
	if w := project.Services["worker"]; w.Deploy == nil || w.Deploy.Replicas == nil || *w.Deploy.Replicas != 2 {
		t.Error("worker should run 2 replicas")
	}
	if redisCmd := strings.Join(project.Services["redis"].Command, " "); !strings.Contains(redisCmd, "--appendonly yes") || !strings.Contains(redisCmd, "--aclfile") {
		t.Errorf("redis command %q: want AOF and the ACL file", redisCmd)
	}
	// An evicted asynq lease or job record is a stuck or lost job: when
	// Redis is full it must refuse writes (the services answer 503), never
	// drop keys (issue 12, part 8).
	if got := redisOption(project.Services["redis"].Command, "maxmemory-policy"); got != "noeviction" {
		t.Errorf("redis runs with maxmemory-policy %q, want noeviction", got)
	}
	// Without the passwords compose refuses to start, naming what to set.
	opts, err := cli.NewProjectOptions([]string{"../compose.yaml"}, cli.WithName("claimcheck"), cli.WithWorkingDirectory(".."), cli.WithEnv([]string{}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.ProjectFromOptions(context.Background(), opts); err == nil || !strings.Contains(err.Error(), "CLAIMCHECK_REDIS_PASSWORD_API") {
		t.Errorf("compose loads without Redis passwords: %v", err)
	}
}

// redisOption is the value of --name in a redis-server command line ("" if
// absent; the last one wins, as in redis-server).
func redisOption(cmd []string, name string) string {
	v := ""
	for i, arg := range cmd {
		if arg == "--"+name && i+1 < len(cmd) {
			v = cmd[i+1]
		}
	}
	return v
}

// TestComposeRedisPasswordsFromEnvironment runs the redis container's
// entrypoint script as compose would (bash, with the passwords in its
// environment, redis-server replaced by a stub that records its
// arguments), then loads the ACL it wrote into a real redis-server: every
// user signs in with its password from the environment, and not with the
// shipped example.
func TestComposeRedisPasswordsFromEnvironment(t *testing.T) {
	ctx := context.Background()
	project := loadCompose(t)
	svc := project.Services["redis"]
	if len(svc.Entrypoint) < 3 || svc.Entrypoint[0] != "bash" || svc.Entrypoint[1] != "-c" {
		t.Fatalf("redis entrypoint %q: want bash -c SCRIPT", svc.Entrypoint)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	stub := "#!/bin/sh\nprintf '%s\\n' \"$@\" > " + filepath.Join(dir, "args") + "\n"
	if err := os.WriteFile(filepath.Join(bin, "redis-server"), []byte(stub), 0o755); err != nil {
		t.Fatal(err)
	}
	// The command's two paths (template, output) point into dir instead.
	args := slices.Clone([]string(svc.Command))
	rendered := filepath.Join(dir, "users.acl")
	args[0], _ = filepath.Abs(aclFile)
	args[1] = rendered
	cmd := exec.Command(svc.Entrypoint[0], append(slices.Clone([]string(svc.Entrypoint[1:])), args...)...)
	cmd.Env = []string{"PATH=" + bin + ":/usr/bin:/bin"}
	for k, v := range svc.Environment {
		cmd.Env = append(cmd.Env, k+"="+*v)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("entrypoint: %v\n%s", err, out)
	}
	if fi, err := os.Stat(rendered); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("rendered ACL: %v %v, want mode 0600", err, fi)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "args"))
	if want := strings.Join(args[2:], "\n") + "\n"; string(got) != want {
		t.Errorf("redis-server ran with %q, want %q", got, want)
	}
	// The rendered file is users.acl with only the passwords changed.
	orig, _ := os.ReadFile(aclFile)
	text, _ := os.ReadFile(rendered)
	for user, pw := range testPasswords {
		if !strings.Contains(string(text), ">"+pw+" ") {
			t.Errorf("rendered ACL lacks %s's password", user)
		}
	}
	if n, m := strings.Count(string(orig), "\n"), strings.Count(string(text), "\n"); n != m {
		t.Errorf("rendered ACL has %d lines, users.acl %d", m, n)
	}
	addr := redistest.Server(t, "--aclfile", rendered)
	for user, pw := range testPasswords {
		c := redis.NewClient(&redis.Options{Addr: addr, Username: user, Password: pw})
		if err := c.Ping(ctx).Err(); err != nil {
			t.Errorf("%s with its password: %v", user, err)
		}
		c.Close()
		c = redis.NewClient(&redis.Options{Addr: addr, Username: user, Password: "change-me-" + user})
		if err := c.Ping(ctx).Err(); err == nil {
			t.Errorf("%s still signs in with the example password", user)
		}
		c.Close()
	}
}

// aclRedis is a real redis-server loaded with users.acl, plus a test-only
// administrator ("acl-test-admin") that reads the ACL log.
type aclRedis struct {
	addr  string
	dir   string
	users map[string]string
	admin redis.UniversalClient
	// nodes are a cluster's primaries (none: one server at addr).
	nodes []string
}

func startACLRedis(t *testing.T) *aclRedis {
	t.Helper()
	r := &aclRedis{dir: t.TempDir(), users: aclUsers(t)}
	r.addr = redistest.Server(t, "--aclfile", r.aclWithAdmin(t))
	r.admin = redis.NewClient(&redis.Options{Addr: r.addr, Username: "acl-test-admin", Password: "acl-test-admin"})
	t.Cleanup(func() { r.admin.Close() })
	return r
}

// startACLCluster is startACLRedis on a Redis Cluster of three primaries,
// every node loading the same users.acl.
func startACLCluster(t *testing.T) *aclRedis {
	t.Helper()
	r := &aclRedis{dir: t.TempDir(), users: aclUsers(t)}
	r.nodes = redistest.ClusterWith(t, []string{"--user", "acl-test-admin", "-a", "acl-test-admin"}, "--aclfile", r.aclWithAdmin(t))
	r.addr = r.nodes[0]
	r.admin = redis.NewClusterClient(&redis.ClusterOptions{Addrs: r.nodes, Username: "acl-test-admin", Password: "acl-test-admin"})
	t.Cleanup(func() { r.admin.Close() })
	return r
}

// aclWithAdmin writes users.acl plus a test-only administrator into the
// test's directory and returns its path.
func (r *aclRedis) aclWithAdmin(t *testing.T) string {
	t.Helper()
	acl, err := os.ReadFile(aclFile)
	if err != nil {
		t.Fatal(err)
	}
	acl = append(acl, "user acl-test-admin on >acl-test-admin ~* &* +@all\n"...)
	aclCopy := filepath.Join(r.dir, "users.acl")
	if err := os.WriteFile(aclCopy, acl, 0o600); err != nil {
		t.Fatal(err)
	}
	return aclCopy
}

// resetLog empties the ACL log (of every node).
func (r *aclRedis) resetLog(t *testing.T) {
	t.Helper()
	reset := func(ctx context.Context, c redis.UniversalClient) error {
		return c.Do(ctx, "ACL", "LOG", "RESET").Err()
	}
	var err error
	if cc, ok := r.admin.(*redis.ClusterClient); ok {
		err = cc.ForEachShard(context.Background(), func(ctx context.Context, n *redis.Client) error { return reset(ctx, n) })
	} else {
		err = reset(context.Background(), r.admin)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// as signs in as user with its users.acl password.
func (r *aclRedis) as(t *testing.T, user string) redis.UniversalClient {
	t.Helper()
	var c redis.UniversalClient
	if r.nodes != nil {
		c = redis.NewClusterClient(&redis.ClusterOptions{Addrs: r.nodes, Username: user, Password: r.users[user]})
	} else {
		c = redis.NewClient(&redis.Options{Addr: r.addr, Username: user, Password: r.users[user]})
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("sign in as %s: %v", user, err)
	}
	return c
}

// denials is what the ACL log holds: one line per refused command, with
// the user, the command (and whether it ran inside a script) and what it
// touched.
func (r *aclRedis) denials(t *testing.T) []string {
	t.Helper()
	var entries []any
	if cc, ok := r.admin.(*redis.ClusterClient); ok {
		var mu sync.Mutex // ForEachShard calls its nodes at once
		err := cc.ForEachShard(context.Background(), func(ctx context.Context, n *redis.Client) error {
			es, err := n.Do(ctx, "ACL", "LOG").Slice()
			mu.Lock()
			entries = append(entries, es...)
			mu.Unlock()
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	} else {
		es, err := r.admin.Do(context.Background(), "ACL", "LOG").Slice()
		if err != nil {
			t.Fatal(err)
		}
		entries = es
	}
	var out []string
	for _, e := range entries {
		fields := map[any]any{}
		switch e := e.(type) {
		case []any:
			for i := 0; i+1 < len(e); i += 2 {
				fields[e[i]] = e[i+1]
			}
		case map[any]any:
			fields = e
		}
		out = append(out, fmt.Sprintf("%v: %v %v %v (%v)", fields["username"], fields["reason"], fields["context"], fields["object"], fields["count"]))
	}
	return out
}

// TestRedisACL loads users.acl into a real redis-server and runs the
// product with each process signed in as its own user: any rule too tight
// fails here, either as an error the product reports or as an entry in
// Redis's ACL log (a background loop's refused command is in no response).
func TestRedisACL(t *testing.T) { testRedisACL(t, startACLRedis(t)) }

// TestRedisACLOnACluster is TestRedisACL on a Redis Cluster whose every
// node loads users.acl: the same file works there, and no script or
// transaction of the product crosses a slot.
func TestRedisACLOnACluster(t *testing.T) { testRedisACL(t, startACLCluster(t)) }

func testRedisACL(t *testing.T, r *aclRedis) {
	ctx := context.Background()
	addr, dir, users := r.addr, r.dir, r.users
	as := func(user string) redis.UniversalClient { return r.as(t, user) }
	denied := func(who string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), "NOPERM") {
			t.Errorf("%s: want NOPERM, got %v", who, err)
		}
	}
	_ = users
	progress, gateway := as("progress"), as("gateway")
	if err := progress.HGetAll(ctx, "cc:job:{x}").Err(); err != nil {
		t.Errorf("progress reads a job: %v", err)
	}
	if err := progress.XRange(ctx, "cc:job:{x}:events", "-", "+").Err(); err != nil {
		t.Errorf("progress reads a job's events: %v", err)
	}
	if err := redis.NewClient(&redis.Options{Addr: addr}).Ping(ctx).Err(); err == nil {
		t.Error("the default user is on")
	}
	denied("gateway reads a job", gateway.HGetAll(ctx, "cc:job:{x}").Err())
	r.resetLog(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("ACL log:\n%s", strings.Join(r.denials(t), "\n"))
		}
	})

	// The product, each process as its own user.
	api, workerRDB := as("api"), as("worker")
	// A type that writes past the log's byte cap, so its trimming runs too.
	chatty := worker.Type{Name: "chatty", Timeout: time.Minute, Handle: func(ctx context.Context, t *worker.Task) error {
		for i := range 300 {
			t.Logf("line %d %s", i, strings.Repeat("x", 4000))
		}
		return nil
	}}
	cfg := app.Config{DataDir: dir, Logger: slog.New(slog.DiscardHandler), Argon2: &identity.Argon2Params{Memory: 64, Time: 1, Threads: 1},
		Types: append(builtin.Types(), chatty)}.WithDefaults()
	keys, _, err := tokens.EnsureDir(cfg.JobKeyDir)
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := identity.NewAPIKeys(api, nil).Create(ctx, "ann", "", "")
	if err != nil {
		t.Fatal(err)
	}
	apiHandler, err := app.APIHandler(cfg, api, keys)
	if err != nil {
		t.Fatal(err)
	}
	apiSrv := httptest.NewServer(apiHandler)
	defer apiSrv.Close()
	prog, err := app.Progress(cfg, progress, keys)
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	progSrv := httptest.NewServer(app.Handler(cfg, prog))
	defer progSrv.Close()
	w, err := app.Worker(cfg, workerRDB)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Shutdown()
	gw, err := app.Gateway(cfg, gateway, app.Identity(cfg, gateway), keys)
	if err != nil {
		t.Fatal(err)
	}
	gwSrv := httptest.NewServer(app.GatewayHandler(cfg, gw, nil, nil))
	defer gwSrv.Close()

	call := func(method, url, bearer, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	token := func(body string) (id, tok string) {
		t.Helper()
		i := strings.Index(body, `"id":"`) + 6
		j := strings.Index(body, `"token":"`) + 9
		return body[i : i+36], body[j : j+strings.IndexByte(body[j:], '"')]
	}

	code, body := call("POST", apiSrv.URL+"/v1/jobs", key.Reveal(), `{"type":"primes","input":{"n":1000}}`)
	if code != 202 {
		t.Fatalf("submit as the api user: %d %s", code, body)
	}
	id, tok := token(body)
	waitfor.True(t, 20*time.Second, func() bool {
		_, b := call("GET", progSrv.URL+"/v1/jobs/"+id, tok, "")
		return strings.Contains(b, `"state":"succeeded"`)
	})
	if code, body := call("GET", progSrv.URL+"/v1/jobs/"+id+"/result", tok, ""); code != 200 || !strings.Contains(body, `"count":168`) {
		t.Fatalf("result through progress: %d %s", code, body)
	}
	if code, body := call("POST", progSrv.URL+"/v1/jobs/"+id+"/links", tok, ""); code != 201 {
		t.Fatalf("link through progress: %d %s", code, body)
	}
	// A one-time link's scripts (claim, release) run as the progress user.
	code, body = call("POST", progSrv.URL+"/v1/jobs/"+id+"/links", tok, `{"once":true}`)
	if code != 201 {
		t.Fatalf("one-time link through progress: %d %s", code, body)
	}
	i := strings.Index(body, `"url":"`) + 7
	once := progSrv.URL + body[i:i+strings.IndexByte(body[i:], '"')]
	if code, body := call("GET", once, "", ""); code != 200 || !strings.Contains(body, `"count":168`) {
		t.Fatalf("one-time download as the progress user: %d %s", code, body)
	}
	waitfor.True(t, 10*time.Second, func() bool { code, _ := call("GET", once, "", ""); return code == http.StatusGone })
	testWebhooksACL(t, cfg, api, workerRDB, keys, progSrv.URL)
	// The event stream's first event.
	req, _ := http.NewRequest("GET", progSrv.URL+"/v1/jobs/"+id+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("events: %v", err)
	}
	first, _ := bufio.NewReader(resp.Body).ReadString('\n')
	resp.Body.Close()
	if !strings.HasPrefix(first, "retry:") {
		t.Fatalf("events began %q", first)
	}
	// Job logs: written by the worker, read by progress (text and stream).
	code, body = call("POST", apiSrv.URL+"/v1/jobs", key.Reveal(), `{"type":"chatty","input":{}}`)
	if code != 202 {
		t.Fatalf("submit chatty: %d %s", code, body)
	}
	idl, tokl := token(body)
	waitfor.True(t, 20*time.Second, func() bool {
		_, b := call("GET", progSrv.URL+"/v1/jobs/"+idl, tokl, "")
		return strings.Contains(b, `"state":"succeeded"`)
	})
	if code, body := call("GET", progSrv.URL+"/v1/jobs/"+idl+"/logs?after=100", tokl, ""); code != 200 || !strings.Contains(body, "line 299 ") {
		t.Fatalf("logs through progress: %d %.200s", code, body)
	}
	req, _ = http.NewRequest("GET", progSrv.URL+"/v1/jobs/"+idl+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+tokl)
	if resp, err = http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("events with logs: %v", err)
	}
	if b, _ := io.ReadAll(resp.Body); !strings.Contains(string(b), "event: log") || !strings.Contains(string(b), "event: done") {
		t.Fatalf("stream of a logging job lacks log or done events: %.300s", b)
	}
	resp.Body.Close()
	// Cancelling through progress: a queued job's task is deleted, a
	// running one is cancelled through Asynq.
	code, body = call("POST", apiSrv.URL+"/v1/jobs", key.Reveal(), `{"type":"sleep","input":{"seconds":60,"steps":60}}`)
	if code != 202 {
		t.Fatalf("second submit: %d %s", code, body)
	}
	id2, tok2 := token(body)
	if code, body := call("POST", progSrv.URL+"/v1/jobs/"+id2+"/cancel", tok2, ""); code != 200 && code != 202 {
		t.Fatalf("cancel through progress: %d %s", code, body)
	}
	waitfor.True(t, 20*time.Second, func() bool {
		_, b := call("GET", progSrv.URL+"/v1/jobs/"+id2, tok2, "")
		return strings.Contains(b, `"state":"canceled"`)
	})
	// A running job: progress publishes Asynq's cancellation, the worker
	// hears it as its own user.
	code, body = call("POST", apiSrv.URL+"/v1/jobs", key.Reveal(), `{"type":"sleep","input":{"seconds":60,"steps":60}}`)
	if code != 202 {
		t.Fatalf("third submit: %d %s", code, body)
	}
	id3, tok3 := token(body)
	waitfor.True(t, 20*time.Second, func() bool {
		_, b := call("GET", progSrv.URL+"/v1/jobs/"+id3, tok3, "")
		return strings.Contains(b, `"state":"running"`)
	})
	if code, body := call("POST", progSrv.URL+"/v1/jobs/"+id3+"/cancel", tok3, ""); code != 200 && code != 202 {
		t.Fatalf("cancel a running job through progress: %d %s", code, body)
	}
	waitfor.True(t, 20*time.Second, func() bool {
		_, b := call("GET", progSrv.URL+"/v1/jobs/"+id3, tok3, "")
		return strings.Contains(b, `"state":"canceled"`)
	})
	// `users block --cancel-jobs` runs as the api user.
	code, body = call("POST", apiSrv.URL+"/v1/jobs", key.Reveal(), `{"type":"sleep","input":{"seconds":60,"steps":60}}`)
	if code != 202 {
		t.Fatalf("fourth submit: %d %s", code, body)
	}
	id4, tok4 := token(body)
	waitfor.True(t, 20*time.Second, func() bool {
		_, b := call("GET", progSrv.URL+"/v1/jobs/"+id4, tok4, "")
		return strings.Contains(b, `"state":"running"`)
	})
	if n, err := app.CancelUserJobs(ctx, cfg, api, "ann"); err != nil || n != 1 {
		t.Fatalf("cancel a user's jobs as the api user: %d %v", n, err)
	}
	waitfor.True(t, 20*time.Second, func() bool {
		_, b := call("GET", progSrv.URL+"/v1/jobs/"+id4, tok4, "")
		return strings.Contains(b, `"state":"canceled"`)
	})
	// The job-type registry: a worker of another pool announces (and
	// heartbeats) as the worker user, the api reads the announcement (the
	// schema, the live count) as the api user and routes a job to that
	// pool, and the worker withdraws as it shuts down.
	gpuCfg := cfg
	gpuCfg.Types = []worker.Type{{Name: "render", Pool: "gpu", Timeout: time.Minute,
		InputSchema: []byte(`{"type":"object","required":["scene"]}`),
		Handle:      func(context.Context, *worker.Task) error { return nil }}}
	gpu, err := app.Worker(gpuCfg, workerRDB)
	if err != nil {
		t.Fatal(err)
	}
	if err := gpu.Start(); err != nil {
		t.Fatal(err)
	}
	if code, body := call("POST", apiSrv.URL+"/v1/jobs", key.Reveal(), `{"type":"render","input":{}}`); code != 422 || !strings.Contains(body, "/input") {
		t.Fatalf("input the announced schema refuses: %d %s", code, body)
	}
	code, body = call("POST", apiSrv.URL+"/v1/jobs", key.Reveal(), `{"type":"render","input":{"scene":"teapot"}}`)
	if code != 202 {
		t.Fatalf("submit to another pool: %d %s", code, body)
	}
	id5, tok5 := token(body)
	waitfor.True(t, 20*time.Second, func() bool {
		_, b := call("GET", progSrv.URL+"/v1/jobs/"+id5, tok5, "")
		return strings.Contains(b, `"state":"succeeded"`) && strings.Contains(b, `"queue":"gpu-default"`)
	})
	if _, body := call("GET", apiSrv.URL+"/v1/job-types", "", ""); !strings.Contains(body, `"pool":"gpu"`) || !strings.Contains(body, `"workers":1`) {
		t.Fatalf("job types as the api user: %s", body)
	}
	gpu.Shutdown()
	waitfor.True(t, 10*time.Second, func() bool {
		_, body := call("GET", apiSrv.URL+"/v1/job-types", "", "")
		return strings.Contains(body, `"pool":"gpu","workers":0`) || strings.Contains(body, `"workers":0`) && strings.Contains(body, `"render"`)
	})

	// Operators' commands and the queue metrics work as the api user too.
	if _, err := identity.NewUsers(api, nil, nil).List(ctx); err != nil {
		t.Fatalf("users list as the api user: %v", err)
	}
	for _, user := range []redis.UniversalClient{api, workerRDB} {
		if _, err := asynq.NewInspectorFromRedisClient(user).GetQueueInfo("default"); err != nil {
			t.Fatalf("queue statistics: %v", err)
		}
	}
	// The gateway, as its own user, exchanges an API key.
	if code, body := call("GET", gwSrv.URL+"/v1/auth/exchange", key.Reveal(), ""); code != 200 {
		t.Fatalf("exchange as the gateway user: %d %s", code, body)
	}
	// And a session: sign-in through the api, checked (and slid) by the
	// gateway.
	if err := identity.NewUsers(api, cfg.Argon2, nil).Add(ctx, "bob", "correct horse"); err != nil {
		t.Fatal(err)
	}
	login, err := http.Post(apiSrv.URL+"/v1/sessions", "application/json", strings.NewReader(`{"username":"bob","password":"correct horse"}`))
	if err != nil {
		t.Fatal(err)
	}
	login.Body.Close()
	if login.StatusCode != http.StatusCreated || len(login.Cookies()) == 0 {
		t.Fatalf("sign in as the api user: %d", login.StatusCode)
	}
	req, _ = http.NewRequest("GET", gwSrv.URL+"/v1/auth/exchange", nil)
	req.AddCookie(login.Cookies()[0])
	// No trusted proxy names the method, so the exchange takes the cookie
	// request as state-changing: it needs a same-site Origin.
	req.Header.Set("Origin", gwSrv.URL)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("session exchange as the gateway user: %v %v", resp.StatusCode, err)
	} else {
		resp.Body.Close()
	}
	// Revocations: the api publishes, the gateway (and the api's key
	// reloader) hear it as their own users. The gateway cached the key's
	// exchange; only the announcement makes it forget before the cache
	// entry expires.
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	gwReady, apiReady := make(chan struct{}), make(chan struct{})
	go app.WatchRevocations(wctx, cfg, gateway, gw, nil, gwReady)
	go app.WatchRevocations(wctx, cfg, api, nil, func() {}, apiReady)
	<-gwReady
	<-apiReady
	if code, _ := call("GET", gwSrv.URL+"/v1/auth/exchange", key.Reveal(), ""); code != 200 {
		t.Fatalf("exchange before revocation: %d", code)
	}
	keyInfo, err := identity.NewAPIKeys(api, nil).ListUser(ctx, "ann")
	if err != nil || len(keyInfo) == 0 {
		t.Fatalf("list keys as the api user: %v", err)
	}
	// Revoked in another process (not the gateway's directory), so only
	// pub/sub can tell the gateway.
	if err := identity.NewAPIKeys(api, nil).Revoke(ctx, keyInfo[0].ID); err != nil {
		t.Fatalf("revoke as the api user: %v", err)
	}
	waitfor.True(t, 10*time.Second, func() bool {
		code, _ := call("GET", gwSrv.URL+"/v1/auth/exchange", key.Reveal(), "")
		return code == http.StatusUnauthorized
	})
	// The reconciler's calls as the worker user, on a record left running
	// (the loop itself finds nothing stale in this run).
	if _, err := jobs.NewStore(api, nil).Create(ctx, jobs.NewJob{ID: "acl-lost", Type: "primes", Owner: "ann", Queue: "default", TTL: time.Hour}); err != nil {
		t.Fatalf("create as the api user: %v", err)
	}
	ws := jobs.NewStore(workerRDB, nil)
	if _, err := ws.StartAttempt(ctx, jobs.Attempt{ID: "acl-lost", Owner: "ann", Queue: "default", Number: 1, MaxRunning: 4, Lease: time.Minute}); err != nil {
		t.Fatalf("start as the worker user: %v", err)
	}
	if err := ws.Heartbeat(ctx, []string{"acl-lost"}); err != nil {
		t.Fatalf("heartbeat as the worker user: %v", err)
	}
	if beats, clock, err := ws.Heartbeats(ctx); err != nil || len(beats) != 1 || clock.IsZero() {
		t.Fatalf("heartbeats and Redis's clock as the worker user: %v, %v, %v", beats, clock, err)
	}
	future := time.Now().Add(time.Hour)
	stale, err := ws.Stale(ctx, future, 10)
	if err != nil || len(stale) != 1 || stale[0].State != jobs.StateRunning {
		t.Fatalf("stale as the worker user: %+v, %v", stale, err)
	}
	if _, err := asynq.NewInspectorFromRedisClient(workerRDB).GetTaskInfo("default", "acl-lost"); !errors.Is(err, asynq.ErrTaskNotFound) {
		t.Fatalf("task info as the worker user: %v", err)
	}
	if _, err := ws.RestoreLease(ctx, "default", "acl-lost"); err != nil {
		t.Fatalf("restore lease as the worker user: %v", err)
	}
	if st, err := ws.Reconcile(ctx, stale[0], future, jobs.StateFailed, "worker lost", time.Hour); err != nil || st != jobs.StateFailed {
		t.Fatalf("reconcile as the worker user: %v, %v", st, err)
	}
	// Nothing any process did, in a request or in a background loop
	// (Asynq's heartbeat, forwarder, janitor; the hubs), was refused.
	if d := r.denials(t); len(d) > 0 {
		t.Errorf("the product was refused by the ACL:\n%s", strings.Join(d, "\n"))
	}
}

// testWebhooksACL runs a job with a webhook through the deliverer as the
// worker user (keys published in cc:pubkeys, bookkeeping beside the
// record, its own Asynq queue) and reads its attempts and its link through
// progress as the progress user.
func testWebhooksACL(t *testing.T, cfg app.Config, api, workerRDB redis.UniversalClient, keys *tokens.KeySet, progURL string) {
	t.Helper()
	ctx := context.Background()
	cfg.WebhookAllowPrivate = true // the receiver is on loopback
	cfg.Webhooks = worker.WebhookConfig{TaskCheckInterval: 10 * time.Millisecond}
	d, err := app.Webhooks(cfg, workerRDB, progURL)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	defer d.Shutdown()
	var completed atomic.Pointer[string]
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if body := string(b); strings.Contains(body, `"type":"job.completed"`) {
			completed.Store(&body)
		}
	}))
	defer recv.Close()
	id := uuid.Must(uuid.NewV7()).String()
	store := jobs.NewStore(api, nil)
	if _, err := store.Create(ctx, jobs.NewJob{ID: id, Type: "primes", Owner: "ann", Queue: "default", Timeout: time.Minute,
		TTL: time.Hour, Webhook: &webhook.Spec{URL: recv.URL, Events: webhook.Events}, PendingTTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(jobs.TaskPayload{Job: id, Owner: "ann", Input: json.RawMessage(`{"n":100}`)})
	if _, err := asynq.NewClientFromRedisClient(api).Enqueue(asynq.NewTask("primes", payload), asynq.TaskID(id),
		asynq.Queue("default"), asynq.MaxRetry(jobs.DeliveryRetries(0))); err != nil {
		t.Fatal(err)
	}
	if _, err := store.ConfirmJob(ctx, jobs.Confirmation{ID: id, Owner: "ann", TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	tok, _, err := (&tokens.Minter{Keys: keys}).MintJob(id, "ann", tokens.JobScopes, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, 20*time.Second, func() bool { return completed.Load() != nil })
	var p struct {
		Data struct {
			Result struct{ URL string } `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(*completed.Load()), &p); err != nil || p.Data.Result.URL == "" {
		t.Fatalf("completed payload without a link: %v %.300s", err, *completed.Load())
	}
	get := func(url, bearer string) (int, string) {
		req, _ := http.NewRequest("GET", url, nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(p.Data.Result.URL, ""); code != 200 || !strings.Contains(body, `"count":25`) {
		t.Fatalf("webhook link through progress: %d %.200s", code, body)
	}
	waitfor.True(t, 10*time.Second, func() bool {
		code, body := get(progURL+"/v1/jobs/"+id+"/deliveries", tok)
		return code == 200 && strings.Contains(body, `"event":"completed"`) && strings.Contains(body, `"outcome":"delivered"`)
	})
}
