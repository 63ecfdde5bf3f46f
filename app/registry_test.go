package app_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/registry"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/tokens"
	"github.com/claimcheck/claimcheck/worker"
)

// testClock is the api's registry clock, moved by the tests.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// jobTypeEntry is one entry of GET /v1/job-types.
type jobTypeEntry struct {
	Name        string          `json:"name"`
	Pool        string          `json:"pool"`
	Workers     *int            `json:"workers"`
	InputSchema json.RawMessage `json:"input_schema"`
}

func jobTypes(t *testing.T, url string) map[string]jobTypeEntry {
	t.Helper()
	resp := do(t, "GET", url+"/v1/job-types", "", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("job types: %d", resp.StatusCode)
	}
	body := decode[struct{ Types []jobTypeEntry }](t, resp)
	out := map[string]jobTypeEntry{}
	for _, e := range body.Types {
		if e.Workers == nil {
			t.Fatalf("%s has no workers count", e.Name)
		}
		out[e.Name] = e
	}
	return out
}

type registryProblem struct {
	Type       string   `json:"type"`
	KnownTypes []string `json:"known_types"`
	Errors     []struct {
		Pointer string `json:"pointer"`
	} `json:"errors"`
}

func post(t *testing.T, url, key, body string) (int, []byte) {
	t.Helper()
	resp := do(t, "POST", url+"/v1/jobs", key, strings.NewReader(body))
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

const renderSchema = `{"type":"object","properties":{"scene":{"type":"string"},"samples":{"type":"integer","maximum":64}},"required":["scene"],"additionalProperties":false}`

var renderSpec = jobs.TypeSpec{Name: "render", Description: "renders a scene", Schema: json.RawMessage(renderSchema),
	Timeout: time.Minute, MaxRetry: 1, ResultType: "image/png", Pool: "gpu"}

// TestAPIWithNoCompiledTypesLearnsThemFromAnnouncements runs an api that
// has no job type linked in, and walks a type through its outcomes: unknown
// (422 with the known types), announced by a worker elsewhere (validated
// against the announced schema, queued in its pool's queue), its last
// worker gone (still accepted, workers 0), forgotten a day later (unknown
// again).
func TestAPIWithNoCompiledTypesLearnsThemFromAnnouncements(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Client(t)
	clock := &testClock{t: time.Now()}
	cfg := app.Config{DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler), Types: []worker.Type{},
		Registry: registry.Config{Now: clock.Now}}.WithDefaults()
	keys, _, err := tokens.EnsureDir(cfg.JobKeyDir)
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := identity.NewAPIKeys(rdb, nil).Create(ctx, "ann", "", "")
	if err != nil {
		t.Fatal(err)
	}
	h, err := app.APIHandler(cfg, rdb, keys)
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(h)
	defer api.Close()

	if types := jobTypes(t, api.URL); len(types) != 0 {
		t.Fatalf("an api with no workers lists %v", types)
	}
	code, body := post(t, api.URL, key.Reveal(), `{"type":"render","input":{"scene":"teapot"}}`)
	var p registryProblem
	_ = json.Unmarshal(body, &p)
	if code != 422 || !strings.HasSuffix(p.Type, "unknown-job-type") || p.KnownTypes == nil || len(p.KnownTypes) != 0 {
		t.Fatalf("before any announcement: %d %s", code, body)
	}

	// A worker somewhere announces render. The api's view, read a moment
	// ago, lacks it; the next lookup of a name it does not know, allowed
	// once UnknownInterval (100ms) has passed since the last one, checks
	// whether anything was announced since, and accepts it at once.
	ann, err := registry.NewAnnouncer(rdb, registry.Config{WorkerID: "gpu-box-1-abcd"}, renderSpec)
	if err != nil {
		t.Fatal(err)
	}
	if err := ann.Start(ctx); err != nil {
		t.Fatal(err)
	}
	clock.Add(100 * time.Millisecond)
	code, body = post(t, api.URL, key.Reveal(), `{"type":"render","input":{"scene":"teapot"}}`)
	if code != 202 {
		t.Fatalf("valid input for the announced schema: %d %s", code, body)
	}
	var sub submitted
	_ = json.Unmarshal(body, &sub)
	j, err := jobs.NewStore(rdb, nil).Get(ctx, sub.ID)
	if err != nil || j.Queue != "gpu-default" {
		t.Fatalf("record %+v %v: want queue gpu-default", j, err)
	}
	if info, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo("gpu-default", sub.ID); err != nil || info.State != asynq.TaskStatePending {
		t.Fatalf("task in gpu-default: %+v %v", info, err)
	}
	// Invalid by the announced schema: every pointer is into /input.
	code, body = post(t, api.URL, key.Reveal(), `{"type":"render","input":{"samples":65}}`)
	p = registryProblem{}
	_ = json.Unmarshal(body, &p)
	var ptrs []string
	for _, e := range p.Errors {
		ptrs = append(ptrs, e.Pointer)
	}
	if code != 422 || !strings.HasSuffix(p.Type, "invalid-input") || !slices.Contains(ptrs, "/input/samples") || !slices.Contains(ptrs, "/input") {
		t.Fatalf("invalid input: %d %s", code, body)
	}
	// High priority in a pool is its critical queue, and needs the scope.
	code, body = post(t, api.URL, key.Reveal(), `{"type":"render","input":{"scene":"x"},"priority":"high"}`)
	if code != 403 || !strings.Contains(string(body), identity.ScopeJobsPriority) {
		t.Fatalf("high priority without the scope: %d %s", code, body)
	}
	op, _, err := identity.NewAPIKeys(rdb, nil).CreateKey(ctx, identity.KeySpec{User: "ann", Operator: true,
		Scopes: []string{identity.ScopeJobsSubmit, identity.ScopeJobsPriority}})
	if err != nil {
		t.Fatal(err)
	}
	code, body = post(t, api.URL, op.Reveal(), `{"type":"render","input":{"scene":"x"},"queue":"critical"}`)
	_ = json.Unmarshal(body, &sub)
	if j, err := jobs.NewStore(rdb, nil).Get(ctx, sub.ID); code != 202 || err != nil || j.Queue != "gpu-critical" {
		t.Fatalf("critical with the scope: %d %s %+v", code, body, j)
	}
	if e := jobTypes(t, api.URL)["render"]; e.Pool != "gpu" || *e.Workers != 1 || !strings.Contains(string(e.InputSchema), "samples") {
		t.Fatalf("render listed as %+v", e)
	}

	// Its last worker leaves: still known, submissions still queued.
	if err := ann.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Minute)
	if e, ok := jobTypes(t, api.URL)["render"]; !ok || *e.Workers != 0 {
		t.Fatalf("a minute after its last worker left: %+v %v", e, ok)
	}
	if code, body := post(t, api.URL, key.Reveal(), `{"type":"render","input":{"scene":"teapot"}}`); code != 202 {
		t.Fatalf("submit with no worker now: %d %s", code, body)
	}
	// A day after the last heartbeat it is forgotten.
	clock.Add(24 * time.Hour)
	if types := jobTypes(t, api.URL); len(types) != 0 {
		t.Fatalf("a day later: %v", types)
	}
	code, body = post(t, api.URL, key.Reveal(), `{"type":"render","input":{"scene":"teapot"}}`)
	if code != 422 || !strings.Contains(string(body), "unknown-job-type") {
		t.Fatalf("a forgotten type: %d %s", code, body)
	}
}

// TestQueuedPoolJobRunsWhenAWorkerReturns: a job submitted while its
// type's workers are all gone waits in its pool's queue and runs when one
// starts; a queued job there is cancelled (its task deleted) through the
// progress service and by CancelUserJobs like any other.
func TestQueuedPoolJobRunsWhenAWorkerReturns(t *testing.T) {
	s := newStack(t)
	ctx := context.Background()
	var ran atomic.Int32
	gpuWorker := func() *worker.Server {
		w, err := worker.New(worker.Config{ResultsDir: s.cfg.ResultsDir, Concurrency: 1, Logger: s.cfg.Logger}, s.rdb, worker.Type{
			Name: "render", Pool: "gpu", InputSchema: json.RawMessage(renderSchema), Timeout: time.Minute,
			Handle: func(ctx context.Context, t *worker.Task) error { ran.Add(1); return nil },
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		return w
	}
	w := gpuWorker()
	first := s.submit(t, `{"type":"render","input":{"scene":"a"}}`)
	s.waitState(t, first, jobs.StateSucceeded)
	w.Shutdown()

	waiting := s.submit(t, `{"type":"render","input":{"scene":"b"}}`)
	toCancel := s.submit(t, `{"type":"render","input":{"scene":"c"}}`)
	byOperator := s.submit(t, `{"type":"render","input":{"scene":"d"}}`)
	insp := asynq.NewInspectorFromRedisClient(s.rdb)
	if info, err := insp.GetQueueInfo("gpu-default"); err != nil || info.Pending != 3 {
		t.Fatalf("gpu-default: %+v %v", info, err)
	}
	resp := do(t, "POST", s.progress.URL+"/v1/jobs/"+toCancel.ID+"/cancel", toCancel.Token, nil)
	if j := decode[jobs.Job](t, resp); resp.StatusCode != 200 || j.State != jobs.StateCanceled {
		t.Fatalf("cancel a queued pool job: %d %+v", resp.StatusCode, j)
	}
	if _, err := insp.GetTaskInfo("gpu-default", toCancel.ID); err == nil {
		t.Fatal("the cancelled job's task is still queued")
	}
	// CancelUserJobs cancels every active job of ann: here the two queued.
	if n, err := app.CancelUserJobs(ctx, s.cfg, s.rdb, "ann"); err != nil || n != 2 {
		t.Fatalf("CancelUserJobs = %d %v", n, err)
	}
	s.waitState(t, byOperator, jobs.StateCanceled)
	s.waitState(t, waiting, jobs.StateCanceled)
	if info, _ := insp.GetQueueInfo("gpu-default"); info.Pending != 0 {
		t.Fatalf("cancelled tasks left in gpu-default: %+v", info)
	}

	again := s.submit(t, `{"type":"render","input":{"scene":"e"}}`)
	if j := s.get(t, again); j.State != jobs.StateQueued || ran.Load() != 1 {
		t.Fatalf("with no gpu worker: %+v, ran %d", j, ran.Load())
	}
	w = gpuWorker()
	defer w.Shutdown()
	s.waitState(t, again, jobs.StateSucceeded)
	if ran.Load() != 2 {
		t.Fatalf("render ran %d times, want 2", ran.Load())
	}
}

// TestDevAcceptsItsWorkersTypesAtOnce: dev's api may read the registry
// before its in-process worker announces; the first submit after the
// worker started is still accepted, and the built-in types are listed
// with one worker each.
func TestDevAcceptsItsWorkersTypesAtOnce(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Client(t)
	cfg := app.Config{DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler), Worker: worker.Config{Concurrency: 2}}.WithDefaults()
	keys, _, err := tokens.EnsureDir(cfg.JobKeyDir)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := app.DevHandler(cfg, rdb, keys)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Progress.Close()
	srv := httptest.NewServer(dev.Handler)
	defer srv.Close()
	key, _, err := identity.NewAPIKeys(rdb, nil).Create(ctx, "ann", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if types := jobTypes(t, srv.URL); len(types) != 0 { // the api has read: nothing yet
		t.Fatalf("before the worker: %v", types)
	}
	w, err := app.Worker(cfg, rdb)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Shutdown()
	code, body := post(t, srv.URL, key.Reveal(), `{"type":"primes","input":{"n":1000}}`)
	if code != 202 {
		t.Fatalf("submit right after the worker started: %d %s", code, body)
	}
	types := jobTypes(t, srv.URL)
	for _, name := range []string{"sleep", "primes", "mandelbrot"} {
		if e, ok := types[name]; !ok || *e.Workers != 1 || e.Pool != "default" {
			t.Errorf("%s listed as %+v (%v)", name, e, ok)
		}
	}
	var sub submitted
	_ = json.Unmarshal(body, &sub)
	waitfor.True(t, 20*time.Second, func() bool {
		j, err := jobs.NewStore(rdb, nil).Get(ctx, sub.ID)
		return err == nil && j.State == jobs.StateSucceeded
	})
}
