package execjob_test

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/claimcheck/claimcheck/internal/execjob"
)

// The secret the helper worker holds in its environment.
const workerSecret = "redis://worker:hunter2-not-for-programs@127.0.0.1:6379"

// TestRedteamProgramCannotReadTheWorkersSecrets: a program's environment
// is cleared, but a process of the worker's own user could read the
// worker's /proc/<pid>/environ (REDIS_URL, password included) and open its
// file descriptors (its Redis connections) through /proc/<pid>/fd. A job
// whose input subverts its program must not get the worker's Redis
// credentials that way: the worker makes itself non-dumpable before it
// starts a program, which closes both to anything without CAP_SYS_PTRACE.
//
// The worker here is this test binary, re-run as an unprivileged user
// (root with CAP_SYS_PTRACE may read any process: that is not what a
// worker should run as), with the secret in its initial environment.
func TestRedteamProgramCannotReadTheWorkersSecrets(t *testing.T) {
	if os.Getenv("EXECJOB_SECRET_HELPER") == "1" {
		secretHelper()
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the worker as another user")
	}
	dir, err := os.MkdirTemp("", "execjob-secret-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "worker.test")
	self, err := os.Open("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err == nil {
		_, err = io.Copy(out, self)
		out.Close()
	}
	self.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestRedteamProgramCannotReadTheWorkersSecrets$")
	cmd.Dir = dir
	cmd.Env = []string{"EXECJOB_SECRET_HELPER=1", "REDIS_URL=" + workerSecret, "PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	got, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper worker: %v\n%s", err, got)
	}
	if !strings.Contains(string(got), "program ran: own env has no REDIS_URL") {
		t.Fatalf("the program did not run as expected:\n%s", got)
	}
	if strings.Contains(string(got), "hunter2") {
		t.Fatalf("a program read the worker's Redis password:\n%s", got)
	}
	if strings.Contains(string(got), "socket:") {
		t.Fatalf("a program listed the worker's open sockets:\n%s", got)
	}
}

// secretHelper is the worker: it holds a Redis connection's worth of
// secrets and runs a program that looks for them.
func secretHelper() {
	p := &execjob.Program{
		Path: "/bin/sh", Args: []string{"sh", "-c", `
env | grep -q REDIS_URL || echo "program ran: own env has no REDIS_URL"
tr '\0' '\n' < /proc/$PPID/environ
ls -l /proc/$PPID/fd/ 2>/dev/null | sed 's/.*-> //'
cat /proc/$PPID/cmdline >/dev/null
`},
		Dir: "/", Env: execjob.Environ(os.Environ(), nil), ContentType: "text/plain",
	}
	// An open socket, as a worker's Redis connection would be.
	if fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0); err == nil {
		defer syscall.Close(fds[0])
		defer syscall.Close(fds[1])
	}
	tk := newTask(`{}`)
	err := p.Run(context.Background(), tk)
	os.Stdout.WriteString(tk.resultString())
	if err != nil {
		os.Stdout.WriteString("run: " + err.Error() + "\n")
	}
}
