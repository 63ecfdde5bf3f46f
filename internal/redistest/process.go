package redistest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process is a private redis-server that a fault test can freeze, kill and
// bring back on the same address, as the fault runs of issue 12 did to the
// real one: Pause is a SIGSTOP (the port accepts, nothing answers), Kill a
// SIGKILL (the port refuses), Restart starts it again from its append-only
// file with the same arguments.
type Process struct {
	tb   testing.TB
	path string
	dir  string
	port int
	args []string

	mu  sync.Mutex
	cmd *exec.Cmd
}

// Start starts a Process for one test with extra arguments, stopped when
// the test ends. Its data survives Kill: it writes an append-only file with
// appendfsync always. It needs a real redis-server (skips without one, or
// fails in strict mode).
func Start(tb testing.TB, extra ...string) *Process {
	tb.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		if Strict() {
			tb.Fatal("redis-server not found; strict mode (CI) requires it")
		}
		tb.Skip("redis-server not found")
	}
	p := &Process{tb: tb, path: path, dir: tb.TempDir()}
	p.args = append([]string{"--appendonly", "yes", "--appendfsync", "always"}, extra...)
	var lastErr error
	for range 5 { // a free port can be taken between the probe and the bind
		if p.port, err = freePort(); err != nil {
			tb.Fatal(err)
		}
		if lastErr = p.start(); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		tb.Fatal(lastErr)
	}
	tb.Cleanup(func() {
		p.Resume()
		p.Kill()
	})
	return p
}

func (p *Process) start() error {
	args := append([]string{
		"--port", strconv.Itoa(p.port), "--bind", "127.0.0.1",
		"--dir", p.dir, "--save", "",
		"--logfile", filepath.Join(p.dir, "redis.log"), "--daemonize", "no"}, p.args...)
	cmd := exec.Command(p.path, args...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	if err := waitReady(p.Addr(), 5*time.Second); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		log, _ := os.ReadFile(filepath.Join(p.dir, "redis.log"))
		return fmt.Errorf("redis-server did not start: %w\n%s", err, tail(string(log)))
	}
	p.mu.Lock()
	p.cmd = cmd
	p.mu.Unlock()
	return nil
}

// Addr is the server's host:port; it stays the same across Restart.
func (p *Process) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)) }

// URL is Addr as a redis:// URL, for code that takes REDIS_URL.
func (p *Process) URL() string { return "redis://" + p.Addr() }

func (p *Process) signal(s os.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		_ = p.cmd.Process.Signal(s)
	}
}

// Pause freezes the server (SIGSTOP): connections open, no answer comes.
func (p *Process) Pause() { p.signal(syscall.SIGSTOP) }

// Resume lets a paused server run again (SIGCONT).
func (p *Process) Resume() { p.signal(syscall.SIGCONT) }

// Kill ends the server at once (SIGKILL) and waits for it to exit.
func (p *Process) Kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
	p.cmd = nil
}

// Restart starts a killed server again on the same address, from its
// append-only file.
func (p *Process) Restart() {
	p.tb.Helper()
	if err := p.start(); err != nil {
		p.tb.Fatal(err)
	}
}
