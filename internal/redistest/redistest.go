// Package redistest gives each test package its own Redis: a private
// redis-server on a free loopback port in a temporary directory, started by
// TestMain and stopped after the last test. Asynq's keys are global, so two
// packages must never share one server; within a package, each test gets a
// flushed server (tests in a package run sequentially unless they opt in to
// t.Parallel, which Redis-backed tests here do not).
//
// When redis-server is not installed the helper falls back to the embedded
// miniredis, unless CLAIMCHECK_TEST_STRICT=1 (CI), where a missing
// redis-server fails the package instead of quietly testing less.
//
// The machine's own Redis on 127.0.0.1:6379 is never used.
package redistest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

var (
	mu     sync.Mutex
	addr   string
	nodes  []string // the cluster's nodes when OnCluster()
	kind   string
	mr     *miniredis.Miniredis
	stopFn func()
)

// Strict reports whether tests run in CI mode, where required tools must be
// present rather than skipped.
func Strict() bool { return os.Getenv("CLAIMCHECK_TEST_STRICT") == "1" }

// Main starts the package's Redis, runs the tests and stops it. Use it as the
// whole body of TestMain:
//
//	func TestMain(m *testing.M) { redistest.Main(m) }
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run is Main that returns the exit code instead of exiting, for a TestMain
// with more to do after the tests.
func Run(m *testing.M) int {
	if err := start(); err != nil {
		fmt.Fprintln(os.Stderr, "redistest:", err)
		return 2
	}
	code := m.Run()
	stopFn()
	return code
}

func start() error {
	path, err := exec.LookPath("redis-server")
	if err != nil {
		if Strict() {
			return fmt.Errorf("redis-server not found and CLAIMCHECK_TEST_STRICT=1: install it (apt-get install -y redis-server): %w", err)
		}
		fmt.Fprintln(os.Stderr, "redistest: redis-server not found; falling back to embedded miniredis")
		mr = miniredis.NewMiniRedis()
		if err := mr.Start(); err != nil {
			return fmt.Errorf("start miniredis: %w", err)
		}
		addr, kind, stopFn = mr.Addr(), "miniredis", mr.Close
		return nil
	}
	if OnCluster() {
		cli, err := exec.LookPath("redis-cli")
		if err != nil {
			return fmt.Errorf("%s=cluster needs redis-cli: %w", ClusterEnv, err)
		}
		ns, stop, err := launchCluster(path, cli, 3, nil)
		if err != nil {
			return err
		}
		addr, nodes, kind, stopFn = ns[0], ns, "redis-cluster", stop
		return nil
	}
	a, stop, err := launch(path, nil)
	if err != nil {
		return err
	}
	addr, kind, stopFn = a, "redis-server", stop
	return nil
}

// launch starts a private redis-server on a free port in a temp dir, with
// extra arguments, and returns its address and a stop function.
func launch(path string, extra []string) (string, func(), error) {
	dir, err := os.MkdirTemp("", "claimcheck-redistest-")
	if err != nil {
		return "", nil, fmt.Errorf("temp dir: %w", err)
	}
	// A free port can be taken between our probe and redis-server's bind;
	// retry a few times rather than flake.
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			return "", nil, err
		}
		a := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		args := append([]string{
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--dir", dir, "--save", "", "--appendonly", "no",
			"--logfile", filepath.Join(dir, "redis.log"), "--daemonize", "no"}, extra...)
		cmd := exec.Command(path, args...)
		if err := cmd.Start(); err != nil {
			return "", nil, fmt.Errorf("start redis-server: %w", err)
		}
		if lastErr = waitReady(a, 5*time.Second); lastErr != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			continue
		}
		stop := func() {
			_ = cmd.Process.Signal(os.Interrupt)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
			}
			_ = os.RemoveAll(dir)
		}
		return a, stop, nil
	}
	log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
	return "", nil, fmt.Errorf("redis-server did not start: %w\n%s", lastErr, tail(string(log)))
}

// Server starts another private redis-server for one test, with extra
// arguments (an --aclfile, say), stopped when the test ends. It needs a
// real redis-server: it skips without one, or fails in strict mode.
func Server(tb testing.TB, extra ...string) string {
	tb.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		if Strict() {
			tb.Fatal("redis-server not found; strict mode (CI) requires it")
		}
		tb.Skip("redis-server not found")
	}
	a, stop, err := launch(path, extra)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(stop)
	return a
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitReady(a string, within time.Duration) error {
	c := redis.NewClient(&redis.Options{Addr: a, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil || strings.Contains(err.Error(), "NOAUTH") || strings.Contains(err.Error(), "NOPERM") {
			return nil // it answers (with an ACL that turns the default user off)
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond) // polling a starting process, not waiting on a test condition
	}
}

func tail(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	return strings.Join(lines, "\n")
}

// Addr is the package server's host:port (on a cluster, its first node's).
func Addr() string { return addr }

// Kind says which server the package got: "redis-server", "redis-cluster"
// or "miniredis".
func Kind() string { return kind }

// URL is the package server's address as a REDIS_URL: redis://host:port, or
// redis+cluster://h1,h2,h3 on a cluster.
func URL() string {
	if nodes != nil {
		return ClusterURL(nodes)
	}
	return "redis://" + addr
}

// Client flushes the package server and returns a client for it, closed when
// the test ends. Every test that calls it starts from an empty Redis. On a
// cluster run (OnCluster) it is a *redis.ClusterClient.
func Client(t testing.TB) redis.UniversalClient {
	t.Helper()
	if addr == "" {
		t.Fatal("redistest: no server; call redistest.Main from TestMain")
	}
	mu.Lock()
	defer mu.Unlock()
	ctx := context.Background()
	if nodes != nil {
		c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: nodes})
		if err := flushCluster(ctx, c); err != nil {
			t.Fatalf("redistest: flush: %v", err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	if err := c.FlushAll(ctx).Err(); err != nil {
		t.Fatalf("redistest: flush: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// NewClient is another client of the package server (a cluster client on
// a cluster run), not flushed, closed when the test ends: for a test that
// hooks its own client (a command counter, a fault) beside Client's.
func NewClient(tb testing.TB) redis.UniversalClient {
	tb.Helper()
	c := Open()
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// Open is NewClient for code without a testing.TB (an Example): another
// client of the package server, a cluster client on a cluster run, not
// flushed; the caller closes it (or leaves it to the end of the tests).
func Open() redis.UniversalClient {
	if nodes != nil {
		return redis.NewClusterClient(&redis.ClusterOptions{Addrs: nodes, MaxRetries: -1})
	}
	return redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
}

// Info returns one field of INFO (e.g. "total_commands_processed"), for
// benchmarks that count Redis work. It answers "" on miniredis; on a
// cluster client, the field of whichever node answers.
func Info(c redis.UniversalClient, section, field string) string {
	s, err := c.Info(context.Background(), section).Result()
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// Miniredis returns the embedded server when the package fell back to it, so
// tests can fast-forward its clock; nil on a real redis-server.
func Miniredis() *miniredis.Miniredis { return mr }
