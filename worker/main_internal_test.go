package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/claimcheck/claimcheck/internal/blob"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
)

// lockedBuffer is a buffer a running worker writes while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var echoType = Type{
	Name: "echo", Timeout: time.Minute,
	Handle: func(ctx context.Context, t *Task) error {
		t.Progress(50, "half")
		w, err := t.Result("text/plain")
		if err != nil {
			return err
		}
		_, err = io.WriteString(w, "echo of "+t.ID())
		return err
	},
}

// TestMainServesUntilCancelled runs Main's process on flags and the
// environment: it takes a job from Redis and stores its result in
// --results-dir, serves the ops server on --metrics-addr, and returns 0
// once its context (SIGINT/SIGTERM in Main) ends.
func TestMainServesUntilCancelled(t *testing.T) {
	rdb := redistest.Client(t)
	t.Setenv("REDIS_URL", redistest.URL())
	dir := t.TempDir()
	var stdout, stderr lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- mainArgs(ctx, []string{"/usr/bin/echoer", "--results-dir", dir, "--data-dir", dir, "--metrics-addr", "127.0.0.1:0", "--concurrency", "1"}, &stdout, &stderr, []Type{echoType})
	}()
	addrRE := regexp.MustCompile(`"msg":"worker metrics listening","addr":"([^"]+)"`)
	waitfor.True(t, 10*time.Second, func() bool { return addrRE.MatchString(stderr.String()) })
	ops := "http://" + addrRE.FindStringSubmatch(stderr.String())[1]
	for path, want := range map[string]string{"/readyz": `"ready"`, "/healthz": `"ok"`, "/metrics": "claimcheck_"} {
		resp, err := http.Get(ops + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), want) {
			t.Errorf("GET %s: %d %.200s", path, resp.StatusCode, b)
		}
	}

	store := jobs.NewStore(rdb, nil)
	if _, err := store.Create(ctx, jobs.NewJob{ID: "j1", Type: "echo", Owner: "ann", Queue: "default", Timeout: time.Minute, TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(jobs.TaskPayload{Job: "j1", Owner: "ann", Input: json.RawMessage(`{}`)})
	if _, err := asynq.NewClientFromRedisClient(rdb).EnqueueContext(ctx, asynq.NewTask("echo", payload), asynq.TaskID("j1"), asynq.Timeout(time.Minute)); err != nil {
		t.Fatal(err)
	}
	var j *jobs.Job
	waitfor.True(t, 10*time.Second, func() bool {
		var err error
		j, err = store.Get(ctx, "j1")
		return err == nil && j.State.Final()
	})
	if j.State != jobs.StateSucceeded {
		t.Fatalf("job ended: %+v", j)
	}
	blobs, _ := blob.NewDir(dir)
	f, err := blobs.Open("j1")
	if err != nil {
		t.Fatalf("result not in --results-dir: %v", err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != "echo of j1" {
		t.Errorf("result %q", b)
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d after cancel; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("worker did not shut down")
	}
	if !strings.Contains(stderr.String(), "worker shutting down") {
		t.Errorf("no shutdown log:\n%s", stderr.String())
	}
	if resp, err := http.Get(ops + "/healthz"); err == nil {
		resp.Body.Close()
		t.Error("ops server still serving after shutdown")
	}
}

// TestMainRefuses: what cannot start exits 1 with one line on stderr that
// says why, and touches no Redis.
func TestMainRefuses(t *testing.T) {
	rdb := redistest.Client(t)
	for _, tc := range []struct {
		name  string
		env   string // REDIS_URL
		args  []string
		types []Type
		want  string
	}{
		{"no redis", "", nil, []Type{echoType}, "needs a shared Redis: set REDIS_URL or --redis-url"},
		{"unknown flag", redistest.URL(), []string{"--colour"}, []Type{echoType}, "unknown flag: --colour"},
		{"argument", redistest.URL(), []string{"serve"}, []Type{echoType}, `unexpected argument "serve"`},
		{"bad value", redistest.URL(), []string{"--concurrency", "lots"}, []Type{echoType}, "--concurrency"},
		{"no types", redistest.URL(), nil, nil, "no job types to serve"},
		{"types file", redistest.URL(), []string{"--types", "/nonexistent/types.yaml"}, []Type{echoType}, "--types /nonexistent/types.yaml: "},
		{"example password", "redis://:change-me-worker@" + redistest.Addr() + "/0", nil, []Type{echoType}, "shipped example password"},
		{"bad type", redistest.URL(), nil, []Type{{Name: "nohandler", Timeout: time.Second}}, `job type "nohandler" has no handler`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("REDIS_URL", tc.env)
			t.Setenv("CLAIMCHECK_ALLOW_EXAMPLE_PASSWORDS", "false")
			// An ended context: a refusal must come before Redis is
			// reached, and a worker that wrongly starts returns at once
			// (0, not the refusal). Only a bad type needs Redis to be asked.
			ctx, cancel := context.WithCancel(context.Background())
			if tc.name != "bad type" {
				cancel()
			}
			defer cancel()
			var stdout, stderr lockedBuffer
			code := mainArgs(ctx, append([]string{"/bin/echoer", "--results-dir", t.TempDir(), "--data-dir", t.TempDir()}, tc.args...), &stdout, &stderr, tc.types)
			msg := stderr.String()
			if code != 1 || !strings.HasPrefix(msg, "echoer: ") || !strings.Contains(msg, tc.want) || strings.Count(msg, "\n") != 1 {
				t.Fatalf("exit %d, stderr %q; want 1 and one line with %q", code, msg, tc.want)
			}
			if n, err := rdb.DBSize(context.Background()).Result(); err != nil || n != 0 {
				t.Errorf("refused start wrote %d keys (%v)", n, err)
			}
		})
	}
}

// TestMainHelp: -h lists every flag with its environment variable and
// exits 0.
func TestMainHelp(t *testing.T) {
	var stdout, stderr lockedBuffer
	if code := mainArgs(context.Background(), []string{"echoer", "-h"}, &stdout, &stderr, []Type{echoType}); code != 0 {
		t.Fatalf("-h: exit %d, %s", code, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"Usage: echoer [flags]", "job types echo", "--redis-url", "[$REDIS_URL]", "--pools", "[$CLAIMCHECK_POOLS]",
		"--types", "[$CLAIMCHECK_TYPES]", "--metrics-addr", "--concurrency", "--results-dir", "--data-dir", "--log-format", "--max-running-jobs"} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q:\n%s", want, out)
		}
	}
}

// TestWithTypesFile: a --types file's error names the flag and file; no
// file leaves the Go types as they are.
func TestWithTypesFile(t *testing.T) {
	got, err := withTypesFile([]Type{echoType}, "")
	if err != nil || len(got) != 1 || got[0].Name != "echo" {
		t.Fatalf("no file: %v %v", got, err)
	}
	if _, err := withTypesFile([]Type{echoType}, "/nonexistent/t.yaml"); err == nil || !strings.HasPrefix(err.Error(), "--types /nonexistent/t.yaml: ") {
		t.Errorf("missing file: %v", err)
	}
}
