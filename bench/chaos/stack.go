package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// registry holds every child process the harness started, so that exit,
// Ctrl-C and a panic all end them (each runs in its own process group).
var registry = struct {
	sync.Mutex
	procs  map[*Proc]struct{}
	mounts map[string]struct{}
}{procs: map[*Proc]struct{}{}, mounts: map[string]struct{}{}}

// killAll sends SIGKILL to the process group of every child still running
// and detaches every mount the harness made.
func killAll() {
	registry.Lock()
	defer registry.Unlock()
	for p := range registry.procs {
		p.signal(syscall.SIGKILL)
	}
	for m := range registry.mounts {
		_ = exec.Command("umount", "-l", m).Run()
	}
}

// mounted records (on) or forgets (off) a mount point for killAll.
func mounted(dir string, on bool) {
	registry.Lock()
	defer registry.Unlock()
	if on {
		registry.mounts[dir] = struct{}{}
	} else {
		delete(registry.mounts, dir)
	}
}

// Proc is one child OS process: a claimcheck service or redis-server.
type Proc struct {
	Name string
	Path string
	Args []string
	Env  []string
	// Log receives the process's stdout and stderr (appended across
	// restarts).
	Log string
	// URL is the base URL of its public listener ("" for none).
	URL string
	// Metrics is the base URL of its operations server ("" for none).
	Metrics string
	// Ready is the URL that answers 200 once it can work ("" for none).
	Ready string
	// MetricsArg, when > 0, is the index in Args of its --metrics-addr
	// value: each start takes a fresh free port, since a port picked when
	// the stack was made may meanwhile be another stack's (-short runs
	// them at once) — a standby worker starts seconds later.
	MetricsArg int

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	// Restarts counts the starts after the first.
	Restarts int
}

// Start starts the process (again) in a process group of its own.
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.MetricsArg > 0 {
		port, err := freePort()
		if err != nil {
			return err
		}
		p.Args[p.MetricsArg] = addr(port)
		p.Metrics = "http://" + addr(port)
		p.Ready = p.Metrics + "/readyz"
	}
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own group, so a signal reaches it and anything it started; and
	// SIGKILL should the harness itself die.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	if p.cmd != nil {
		p.Restarts++
	}
	p.cmd = cmd
	done := make(chan struct{})
	p.done = done
	registry.Lock()
	registry.procs[p] = struct{}{}
	registry.Unlock()
	go func() {
		_ = cmd.Wait()
		f.Close()
		registry.Lock()
		delete(registry.procs, p)
		registry.Unlock()
		close(done)
	}()
	return nil
}

// PID is the running process's id (0 when it is not running).
func (p *Proc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	select {
	case <-p.done:
		return 0
	default:
	}
	return p.cmd.Process.Pid
}

func (p *Proc) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
}

// Signal sends sig to the process's group.
func (p *Proc) Signal(sig syscall.Signal) { p.signal(sig) }

// Kill SIGKILLs the process and waits until it is gone.
func (p *Proc) Kill() {
	p.signal(syscall.SIGKILL)
	p.Wait(10 * time.Second)
}

// Wait waits up to d for the process to exit; it reports whether it did.
func (p *Proc) Wait(d time.Duration) bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return true
	}
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// Running reports whether the process has been started and not exited.
func (p *Proc) Running() bool { return p.PID() != 0 }

// freePort asks the kernel for an unused loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// StackConfig shapes one stack.
type StackConfig struct {
	Workers     int
	Concurrency int
	// Users is how many users (each with an API key) submit: the api
	// limits submissions per user.
	Users int
	// Standby is how many of the workers are made but not started (the
	// scenario starts them).
	Standby int
	// WorkerArgs are more flags for every worker.
	WorkerArgs []string
	// Webhooks lets jobs have webhooks to loopback (the harness's
	// receiver): api and workers get --webhook-allow-private, workers
	// --progress-url, and the webhook keys are made before any starts so
	// that every worker signs with the same ones.
	Webhooks bool
	// ResultsMount, when set, is run on the results directory before any
	// service starts (a tmpfs for the full-store scenario).
	ResultsMount func(dir string) error
}

// Stack is one private claimcheck: redis-server, api, progress and N
// workers, each a separate OS process, sharing a temporary data dir.
type Stack struct {
	Dir        string
	ResultsDir string
	Redis      *Proc
	RedisURL   string
	RDB        *redis.Client
	API        *Proc
	Progress   *Proc
	Workers    []*Proc
	APIURL     string
	ProgURL    string
	APIKeys    []string
	bin        string
	unmount    []string
	// apiFronts and progFronts, when set, are several instances behind
	// APIURL and ProgURL: the client sends each request to the next one
	// that is running, as a load balancer would (scale.go).
	apiFronts, progFronts []*Proc
	rr                    atomic.Uint64
}

// apiURL is where the next submission goes.
func (s *Stack) apiURL() string { return s.front(s.apiFronts, s.APIURL) }

// progURL is where the next progress request goes.
func (s *Stack) progURL() string { return s.front(s.progFronts, s.ProgURL) }

func (s *Stack) front(ps []*Proc, single string) string {
	if len(ps) == 0 {
		return single
	}
	n := int(s.rr.Add(1))
	for i := range ps {
		if p := ps[(n+i)%len(ps)]; p.Running() {
			return p.URL
		}
	}
	return ps[n%len(ps)].URL
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// NewStack starts a stack and waits until every process is ready.
func NewStack(ctx context.Context, bin, root, name string, cfg StackConfig) (*Stack, error) {
	dir, err := os.MkdirTemp(root, name+"-")
	if err != nil {
		return nil, err
	}
	s := &Stack{Dir: dir, bin: bin, ResultsDir: filepath.Join(dir, "data", "results")}
	if err := os.MkdirAll(s.ResultsDir, 0o755); err != nil {
		return nil, err
	}
	if cfg.ResultsMount != nil {
		if err := cfg.ResultsMount(s.ResultsDir); err != nil {
			return nil, fmt.Errorf("results mount: %w", err)
		}
		s.unmount = append(s.unmount, s.ResultsDir)
		mounted(s.ResultsDir, true)
	}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	if err := s.startRedis(ctx); err != nil {
		return nil, err
	}
	env := []string{"REDIS_URL=" + s.RedisURL, "CLAIMCHECK_DATA_DIR=" + filepath.Join(dir, "data")}
	if _, err := s.admin(ctx, env, "", "keys", "generate", "--out", filepath.Join(dir, "data", "keys", "jobs")); err != nil {
		return nil, err
	}
	if cfg.Webhooks {
		for _, k := range []string{"webhooks", "webhook-links"} {
			if _, err := s.admin(ctx, env, "", "keys", "generate", "--out", filepath.Join(dir, "data", "keys", k)); err != nil {
				return nil, err
			}
		}
	}
	for i := range max(1, cfg.Users) {
		user := fmt.Sprintf("chaos%d", i)
		if _, err := s.admin(ctx, env, randHex(12)+"\n", "users", "add", user, "--password-stdin"); err != nil {
			return nil, err
		}
		out, err := s.admin(ctx, env, "", "apikeys", "create", "--user", user, "--name", "chaos")
		if err != nil {
			return nil, err
		}
		key := findKey(out)
		if key == "" {
			return nil, fmt.Errorf("apikeys create printed no key")
		}
		s.APIKeys = append(s.APIKeys, key)
	}
	ports := make([]int, 4)
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return nil, err
		}
	}
	s.APIURL = "http://" + addr(ports[0])
	s.ProgURL = "http://" + addr(ports[2])
	logs := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return nil, err
	}
	s.API = &Proc{Name: "api", Path: bin, Env: env, Log: filepath.Join(logs, "api.log"),
		Args: []string{"api", "--addr", addr(ports[0]), "--metrics-addr", addr(ports[1]),
			"--max-active-jobs", "-1", "--progress-url", s.ProgURL},
		Metrics: "http://" + addr(ports[1]), Ready: s.APIURL + "/readyz"}
	workerArgs := cfg.WorkerArgs
	if cfg.Webhooks {
		s.API.Args = append(s.API.Args, "--webhook-allow-private")
		workerArgs = append([]string{"--progress-url", s.ProgURL, "--webhook-allow-private"}, workerArgs...)
	}
	s.Progress = &Proc{Name: "progress", Path: bin, Env: env, Log: filepath.Join(logs, "progress.log"),
		Args: []string{"progress", "--addr", addr(ports[2]), "--metrics-addr", addr(ports[3]),
			"--jwks-url", s.APIURL + "/.well-known/jwks.json",
			"--max-streams-per-address", "-1", "--max-streams-per-token", "-1", "--max-streams-per-job", "-1"},
		Metrics: "http://" + addr(ports[3]), Ready: s.ProgURL + "/readyz"}
	for i := range cfg.Workers {
		args := append([]string{"worker", "--concurrency", strconv.Itoa(cfg.Concurrency),
			"--metrics-addr", "", "--max-running-jobs", "0"}, workerArgs...)
		s.Workers = append(s.Workers, &Proc{Name: fmt.Sprintf("worker%d", i+1), Path: bin, Env: env,
			Log: filepath.Join(logs, fmt.Sprintf("worker%d.log", i+1)), Args: args, MetricsArg: 4})
	}
	all := append([]*Proc{s.API, s.Progress}, s.Workers[:cfg.Workers-cfg.Standby]...)
	for _, p := range all {
		if err := p.Start(); err != nil {
			return nil, err
		}
	}
	for _, p := range all {
		if err := WaitReady(ctx, p, 60*time.Second); err != nil {
			return nil, err
		}
	}
	ok = true
	return s, nil
}

// findKey picks the cck_… key out of apikeys create's output.
func findKey(out string) string {
	for _, f := range strings.Fields(out) {
		if strings.HasPrefix(f, "cck_") {
			return strings.Trim(f, ".,;:\"'")
		}
	}
	return ""
}

func (s *Stack) admin(ctx context.Context, env []string, stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("claimcheck %s: %w: %s", args[0], err, firstLine(string(out)))
	}
	return string(out), nil
}

func firstLine(s string) string {
	sc := bufio.NewScanner(strings.NewReader(s))
	if sc.Scan() {
		return sc.Text()
	}
	return ""
}

func (s *Stack) startRedis(ctx context.Context) error {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return errors.New("redis-server not found on PATH")
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	rdir := filepath.Join(s.Dir, "redis")
	if err := os.MkdirAll(rdir, 0o755); err != nil {
		return err
	}
	pw := randHex(16)
	s.Redis = &Proc{Name: "redis", Path: bin, Log: filepath.Join(s.Dir, "redis.log"),
		Args: []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", rdir,
			"--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
			"--maxmemory-policy", "noeviction", "--requirepass", pw, "--daemonize", "no"}}
	s.RedisURL = fmt.Sprintf("redis://:%s@%s/0", pw, addr(port))
	s.RDB = redis.NewClient(&redis.Options{Addr: addr(port), Password: pw,
		DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, MaxRetries: -1})
	return s.StartRedis(ctx)
}

// StartRedis (re)starts redis-server on its port and data dir (loading its
// AOF) and waits until it answers PING.
func (s *Stack) StartRedis(ctx context.Context) error {
	if err := s.Redis.Start(); err != nil {
		return err
	}
	return waitFor(ctx, 30*time.Second, "redis PING", func() bool {
		c, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return s.RDB.Ping(c).Err() == nil
	})
}

// Procs lists every claimcheck process and redis.
func (s *Stack) Procs() []*Proc {
	return append([]*Proc{s.Redis, s.API, s.Progress}, s.Workers...)
}

// Close ends every process of the stack and removes its mounts; its
// directory (data and logs) stays until the run's temp dir is removed.
func (s *Stack) Close() {
	for _, p := range []*Proc{s.API, s.Progress} {
		if p != nil {
			p.Kill()
		}
	}
	for _, w := range s.Workers {
		w.Kill()
	}
	if s.Redis != nil {
		s.Redis.Kill()
	}
	if s.RDB != nil {
		s.RDB.Close()
	}
	for _, m := range s.unmount {
		_ = exec.Command("umount", "-l", m).Run()
		mounted(m, false)
	}
}

// WaitReady waits until p's readiness URL answers 200.
func WaitReady(ctx context.Context, p *Proc, d time.Duration) error {
	if p.Ready == "" {
		return nil
	}
	c := &http.Client{Timeout: 3 * time.Second}
	return waitFor(ctx, d, p.Name+" ready", func() bool {
		if !p.Running() {
			return false
		}
		resp, err := c.Get(p.Ready)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// waitFor polls cond every 50 ms until it holds, ctx ends or d passes.
func waitFor(ctx context.Context, d time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", d, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
