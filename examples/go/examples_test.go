package goexamples_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/app/devstack"
	"github.com/claimcheck/claimcheck/client"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/syncbuf"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/worker"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// syncBuffer is a running process's output, read while it runs.
type syncBuffer = syncbuf.Buffer

// buildExample copies the example module name to a temporary directory,
// points its replace at this repository's root (an absolute path, as a
// user's checkout would) and builds it there with the committed go.mod and
// go.sum, read-only. It returns the binary.
func buildExample(t *testing.T, name string) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	statSources(t, root)
	src := filepath.Join(root, "examples", "go", name)
	dir := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() || !(strings.HasSuffix(e.Name(), ".go") || e.Name() == "go.mod" || e.Name() == "go.sum") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if e.Name() == "go.mod" {
			const rel = "replace github.com/claimcheck/claimcheck => ../../.."
			if !bytes.Contains(b, []byte(rel)) {
				t.Fatalf("%s/go.mod lacks %q", src, rel)
			}
			b = bytes.ReplaceAll(b, []byte(rel), []byte("replace github.com/claimcheck/claimcheck => "+root))
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(dir, name)
	cmd := exec.Command(goTool, "build", "-mod=readonly", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build of examples/go/%s as a module of its own: %v\n%s\n(if go.mod or go.sum are out of date: cd examples/go/%s && go mod tidy)", name, err, out, name)
	}
	return bin
}

// statSources looks at every Go file and go.mod of the repository, so that
// `go test`'s cache, which knows only the files a test itself touches and
// not those its go build reads, builds the example again after any change.
func statSources(t *testing.T, root string) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if !d.IsDir() && (strings.HasSuffix(path, ".go") || d.Name() == "go.mod" || d.Name() == "go.sum") {
			_, err = os.Stat(path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// workerEnv is the test's environment without claimcheck's variables, and
// then the given ones.
func workerEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CLAIMCHECK_") && !strings.HasPrefix(kv, "REDIS_URL=") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// hashchain is what the example computes, done here independently.
func hashchain(seed string, rounds, checkpoints int) string {
	every := max(rounds/checkpoints, 1)
	var b strings.Builder
	h := sha256.Sum256([]byte(seed))
	for r := 1; r <= rounds; r++ {
		if r > 1 {
			h = sha256.Sum256(h[:])
		}
		if r%every == 0 || r == rounds {
			fmt.Fprintf(&b, "%d %s\n", r, hex.EncodeToString(h[:]))
		}
	}
	return b.String()
}

// TestHashchainExample builds examples/go/hashchain as a module of its
// own, runs the binary as a real worker process (worker.Main) against an
// api and progress service that have no job types compiled in, completes a
// job through them and checks the result's bytes, then stops the process
// with SIGTERM.
func TestHashchainExample(t *testing.T) {
	bin := buildExample(t, "hashchain")

	t.Run("refuses to start without REDIS_URL", func(t *testing.T) {
		var stderr syncBuffer
		cmd := exec.Command(bin, "--results-dir", t.TempDir(), "--data-dir", t.TempDir())
		cmd.Env = workerEnv()
		cmd.Stderr = &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Fatalf("without REDIS_URL: %v, want exit status 1", err)
		}
		want := "hashchain: worker needs a shared Redis: set REDIS_URL or --redis-url (only `dev` embeds one)\n"
		if stderr.String() != want {
			t.Errorf("stderr %q, want %q", stderr.String(), want)
		}
	})

	rdb := redistest.Client(t)
	// No compiled-in types: the stack runs no worker, and its api knows
	// only what workers announce.
	stack := devstack.Start(t, rdb, devstack.Options{Config: app.Config{Types: []worker.Type{}}})
	var stderr syncBuffer
	proc := exec.Command(bin, "--results-dir", stack.Config.ResultsDir, "--data-dir", stack.Config.DataDir, "--concurrency", "2")
	proc.Env = workerEnv("REDIS_URL="+redistest.URL(), "CLAIMCHECK_LOG_LEVEL=info")
	proc.Stderr = &stderr
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- proc.Wait() }()
	t.Cleanup(func() {
		if proc.ProcessState == nil {
			_ = proc.Process.Kill()
			<-exited
		}
	})
	waitfor.True(t, 20*time.Second, func() bool { return strings.Contains(stderr.String(), `"msg":"worker running"`) })
	if !strings.Contains(stderr.String(), `"types":"hashchain"`) {
		t.Errorf("worker's start log does not name its type:\n%s", stderr.String())
	}

	t.Run("a job through the api and progress service", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		c := client.New(stack.URL, client.WithCredential(stack.APIKey))
		sub, err := c.Submit(ctx, client.SubmitRequest{Type: "hashchain", Input: []byte(`{"seed":"claimcheck","rounds":200000,"checkpoints":4}`)})
		if err != nil {
			t.Fatal(err)
		}
		var sawProgress float64
		job, err := c.Wait(ctx, sub.ID, sub.Token, func(j *client.Job) { sawProgress = max(sawProgress, j.Progress.Percent) })
		if err != nil {
			t.Fatal(err)
		}
		want := hashchain("claimcheck", 200000, 4)
		sum := sha256.Sum256([]byte(want))
		if job.State != "succeeded" || job.Result == nil || job.Result.Size != int64(len(want)) ||
			job.Result.SHA256 != hex.EncodeToString(sum[:]) || !strings.HasPrefix(job.Result.ContentType, "text/plain") {
			t.Fatalf("job %+v (error %v), result %+v", job, job.Error, job.Result)
		}
		if sawProgress != 100 {
			t.Errorf("progress seen up to %v%%, want 100", sawProgress)
		}
		var got bytes.Buffer
		if _, err := c.Download(ctx, sub.ID, sub.Token, &got); err != nil {
			t.Fatal(err)
		}
		if got.String() != want {
			t.Errorf("result\n%s\nwant\n%s", got.String(), want)
		}
		// It ran in the example's process: nothing else could run it.
		ran := false
		for _, line := range strings.Split(stderr.String(), "\n") {
			var l struct{ Msg, Job string }
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "job succeeded" && l.Job == sub.ID {
				ran = true
			}
		}
		if !ran {
			t.Errorf("the example's logs do not say it ran job %s:\n%s", sub.ID, stderr.String())
		}
	})

	t.Run("SIGTERM mid-job: the job goes on from its checkpoint on the next worker", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		c := client.New(stack.URL, client.WithCredential(stack.APIKey))
		const rounds, checkpoints = 40_000_000, 200
		sub, err := c.Submit(ctx, client.SubmitRequest{Type: "hashchain",
			Input: []byte(fmt.Sprintf(`{"seed":"resume","rounds":%d,"checkpoints":%d}`, rounds, checkpoints))})
		if err != nil {
			t.Fatal(err)
		}
		// Stop the worker once the job is some way in, and well before it ends.
		waitfor.True(t, 60*time.Second, func() bool {
			j, err := c.Get(ctx, sub.ID, sub.Token)
			return err == nil && j.Progress.Percent >= 2
		})
		if err := proc.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("after SIGTERM: %v\n%s", err, stderr.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no exit within 30s of SIGTERM")
		}
		if !strings.Contains(stderr.String(), `"msg":"worker shutting down"`) ||
			!strings.Contains(stderr.String(), `"msg":"worker shutting down: job handed back to its queue"`) {
			t.Errorf("no shutdown or hand-back log:\n%s", stderr.String())
		}
		j, err := c.Get(ctx, sub.ID, sub.Token)
		if err != nil {
			t.Fatal(err)
		}
		if j.State != "queued" || j.Progress.Percent >= 100 {
			t.Fatalf("after the hand-back the job is %s at %v%%, want queued part-way", j.State, j.Progress.Percent)
		}

		var stderr2 syncBuffer
		next := exec.Command(bin, "--results-dir", stack.Config.ResultsDir, "--data-dir", stack.Config.DataDir)
		next.Env = workerEnv("REDIS_URL="+redistest.URL(), "CLAIMCHECK_LOG_LEVEL=info")
		next.Stderr = &stderr2
		if err := next.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = next.Process.Signal(syscall.SIGTERM); _ = next.Wait() })
		job, err := c.Wait(ctx, sub.ID, sub.Token, nil)
		if err != nil {
			t.Fatal(err)
		}
		if job.State != "succeeded" || job.Attempts != 1 {
			t.Fatalf("job %s after %d attempts (error %v), want succeeded after 1: a hand-back spends no retry", job.State, job.Attempts, job.Error)
		}
		want := hashchain("resume", rounds, checkpoints)
		var got bytes.Buffer
		if _, err := c.Download(ctx, sub.ID, sub.Token, &got); err != nil {
			t.Fatal(err)
		}
		if got.String() != want {
			t.Fatalf("resumed result differs from the whole chain:\n%.300s\nwant\n%.300s", got.String(), want)
		}
		page, err := c.Logs(ctx, sub.ID, sub.Token, 0)
		if err != nil {
			t.Fatal(err)
		}
		resumedAt := 0
		for _, l := range page.Lines {
			fmt.Sscanf(l.Line, "resuming at round %d", &resumedAt)
		}
		if resumedAt <= 0 || resumedAt >= rounds {
			t.Fatalf("the second worker did not resume from a checkpoint (resumed at %d); job log:\n%v", resumedAt, page.Lines)
		}
	})
}
