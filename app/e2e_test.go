package app_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/api/progress"
	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/s3test"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/tokens"
	"github.com/claimcheck/claimcheck/tokens/tokenstest"
	"github.com/claimcheck/claimcheck/worker"
	"github.com/claimcheck/claimcheck/worker/builtin"
)

func TestMain(m *testing.M) {
	code := contractMain(m)
	s3test.StopWeed() // started by the first test that asked for SeaweedFS
	os.Exit(code)
}

// cheapArgon2 keeps password hashing fast in tests.
var cheapArgon2 = &identity.Argon2Params{Memory: 64, Time: 1, Threads: 1}

// stack is the three processes of a real deployment, each on its own port:
// the progress service knows the api only through its JWKS URL.
type stack struct {
	api, progress *httptest.Server
	apiKey        string
	keys          *tokens.KeySet
	// test job types report what they saw here
	blockSawDone atomic.Bool
	blockRuns    atomic.Int32
	rdb          redis.UniversalClient
	dir          *identity.Directory
	countRuns    atomic.Int32
	// step releases one step of a "stepper" job
	step chan struct{}
	prog *progress.Service
	cfg  app.Config
}

func newStack(t testing.TB, opts ...func(*app.Config)) *stack {
	t.Helper()
	ctx := context.Background()
	rdb := redistest.Client(t)
	s := &stack{rdb: rdb, step: make(chan struct{}, 10000)}
	dir := t.TempDir()
	cfg := app.Config{
		DataDir: dir,
		Argon2:  cheapArgon2,
		Logger:  slog.New(slog.DiscardHandler),
		Worker: worker.Config{
			Concurrency:              4,
			DelayedTaskCheckInterval: 50 * time.Millisecond,
			RetryDelay:               func(int, error) time.Duration { return 10 * time.Millisecond },
		},
		Types: append(builtin.Types(), s.testTypes()...),
	}
	for _, o := range opts {
		o(&cfg)
	}
	cfg = cfg.WithDefaults()
	s.cfg = cfg
	var err error
	s.keys, _, err = tokens.EnsureDir(cfg.JobKeyDir)
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := identity.NewAPIKeys(rdb, nil).Create(ctx, "ann", "test", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := identity.NewUsers(rdb, cheapArgon2, nil).Add(ctx, "ann", "correct horse"); err != nil {
		t.Fatal(err)
	}
	s.apiKey = key.Reveal()

	s.dir = app.Identity(cfg, rdb)
	apiHandler, err := app.APIHandler(cfg, rdb, s.keys)
	if err != nil {
		t.Fatal(err)
	}
	s.api = httptest.NewServer(apiHandler)
	t.Cleanup(s.api.Close)

	pcfg := cfg
	pcfg.JWKSURL = s.api.URL + "/.well-known/jwks.json"
	pkeys, err := app.ProgressKeys(ctx, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	prog, err := app.Progress(pcfg, rdb, pkeys)
	if err != nil {
		t.Fatal(err)
	}
	s.prog = prog
	s.progress = httptest.NewServer(app.Handler(cfg, prog))
	t.Cleanup(s.progress.Close)

	startWorker(t, cfg, rdb)
	return s
}

// startWorker builds a worker from cfg on rdb and starts it; it is shut
// down when tb ends.
func startWorker(tb testing.TB, cfg app.Config, rdb redis.UniversalClient) {
	tb.Helper()
	w, err := app.Worker(cfg, rdb)
	if err != nil {
		tb.Fatal(err)
	}
	if err := w.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(w.Shutdown)
}

func (s *stack) testTypes() []worker.Type {
	obj := json.RawMessage(`{"type":"object"}`)
	return []worker.Type{
		{
			Name: "block", Description: "waits to be cancelled", Timeout: time.Minute, InputSchema: obj,
			Handle: func(ctx context.Context, t *worker.Task) error {
				s.blockRuns.Add(1)
				t.Progress(10, "blocking")
				<-ctx.Done()
				s.blockSawDone.Store(true)
				return ctx.Err()
			},
		},
		{
			Name: "flaky", Description: "always fails", Timeout: time.Minute, MaxRetry: 2, InputSchema: obj,
			Handle: func(ctx context.Context, t *worker.Task) error {
				return fmt.Errorf("disk on fire (attempt %d)", t.Attempt())
			},
		},
		{
			Name: "stepper", Description: "reports progress one step at a time, as the test releases them",
			Timeout: time.Minute, InputSchema: json.RawMessage(`{"type":"object","properties":{"steps":{"type":"integer"},"pad":{"type":"integer"}}}`),
			Handle: func(ctx context.Context, t *worker.Task) error {
				var in struct{ Steps, Pad int }
				if err := t.Decode(&in); err != nil {
					return err
				}
				for i := 1; i <= in.Steps; i++ {
					select {
					case <-s.step:
					case <-ctx.Done():
						return ctx.Err()
					}
					t.Progress(float64(i*100)/float64(in.Steps), fmt.Sprintf("step %d %s", i, strings.Repeat("x", in.Pad)))
				}
				return nil
			},
		},
		{
			Name: "logger", Description: "writes lines to its log: lines, then (after one step is released, when then > 0) then more",
			Timeout: time.Minute, InputSchema: json.RawMessage(`{"type":"object","properties":{"lines":{"type":"integer"},"then":{"type":"integer"},"pad":{"type":"integer"}}}`),
			Handle: func(ctx context.Context, t *worker.Task) error {
				var in struct{ Lines, Then, Pad int }
				if err := t.Decode(&in); err != nil {
					return err
				}
				pad := strings.Repeat("x", in.Pad)
				for i := 1; i <= in.Lines; i++ {
					t.Logf("line %d%s", i, pad)
				}
				if in.Then > 0 {
					select {
					case <-s.step:
					case <-ctx.Done():
						return ctx.Err()
					}
					for i := in.Lines + 1; i <= in.Lines+in.Then; i++ {
						t.Logf("line %d%s", i, pad)
					}
				}
				return nil
			},
		},
		{
			Name: "count", Description: "counts its runs", Timeout: time.Minute, InputSchema: obj,
			Handle: func(ctx context.Context, t *worker.Task) error {
				s.countRuns.Add(1)
				return nil
			},
		},
	}
}

type submitted struct {
	ID             string    `json:"id"`
	Type           string    `json:"type"`
	State          string    `json:"state"`
	Token          string    `json:"token"`
	TokenExpiresAt time.Time `json:"token_expires_at"`
	Links          struct {
		Self, Events, Result, Cancel string
	} `json:"links"`
}

type problemBody struct {
	Type       string   `json:"type"`
	Title      string   `json:"title"`
	Status     int      `json:"status"`
	Detail     string   `json:"detail"`
	KnownTypes []string `json:"known_types"`
}

func do(t testing.TB, method, url, bearer string, body io.Reader, hdr ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json") // hdr may say otherwise
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func decode[T any](t testing.TB, resp *http.Response) T {
	t.Helper()
	var v T
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("decode %s: %v", resp.Request.URL.Path, err)
	}
	return v
}

func (s *stack) submit(t testing.TB, body string, hdr ...string) submitted {
	t.Helper()
	resp := do(t, "POST", s.api.URL+"/v1/jobs", s.apiKey, strings.NewReader(body), hdr...)
	if resp.StatusCode != http.StatusAccepted {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("submit %s: %d %s", body, resp.StatusCode, b)
	}
	sub := decode[submitted](t, resp)
	if loc := resp.Header.Get("Location"); loc != sub.Links.Self || !strings.HasSuffix(loc, "/v1/jobs/"+sub.ID) {
		t.Fatalf("Location %q, self %q", loc, sub.Links.Self)
	}
	if resp.Header.Get("Retry-After") == "" || sub.Token == "" || sub.State != "queued" {
		t.Fatalf("202 lacks Retry-After, token or queued state: %+v", sub)
	}
	return sub
}

func (s *stack) get(t testing.TB, sub submitted) jobs.Job {
	t.Helper()
	resp := do(t, "GET", s.progress.URL+"/v1/jobs/"+sub.ID, sub.Token, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("get job: %d", resp.StatusCode)
	}
	return decode[jobs.Job](t, resp)
}

func (s *stack) waitState(t testing.TB, sub submitted, want jobs.State) jobs.Job {
	t.Helper()
	var j jobs.Job
	waitfor.True(t, 20*time.Second, func() bool {
		j = s.get(t, sub)
		return j.State == want || (j.State.Final() && j.State != want)
	})
	if j.State != want {
		t.Fatalf("job %s ended %s (error %v), want %s", sub.ID, j.State, j.Error, want)
	}
	return j
}

func TestMandelbrotEndToEnd(t *testing.T) {
	s := newStack(t)
	// Seahorse valley: most points iterate long, so the job runs for about
	// half a second and its progress can be watched.
	sub := s.submit(t, `{"type":"mandelbrot","input":{"width":480,"height":360,"max_iter":5000,"x_min":-0.75,"x_max":-0.74,"y_min":0.1,"y_max":0.11}}`)
	if !strings.HasPrefix(sub.Links.Self, s.api.URL) && !strings.HasPrefix(sub.Links.Self, "/") {
		t.Fatalf("links = %+v", sub.Links)
	}

	// Poll until done; the states seen must follow the lifecycle and
	// progress must never go backwards.
	last := -1.0
	var partial int
	var j jobs.Job
	waitfor.True(t, 30*time.Second, func() bool {
		j = s.get(t, sub)
		if j.Progress.Percent < last {
			t.Fatalf("progress went back from %v to %v", last, j.Progress.Percent)
		}
		if j.State == jobs.StateRunning && j.Progress.Percent > 0 && j.Progress.Percent < 100 && j.Progress.Percent != last {
			partial++
		}
		last = j.Progress.Percent
		return j.State.Final()
	})
	if partial < 2 {
		t.Fatalf("saw %d distinct partial progress values while running; want the bar to move", partial)
	}
	if j.State != jobs.StateSucceeded || j.Result == nil || j.Result.ContentType != "image/png" || j.Progress.Percent != 100 {
		t.Fatalf("final job = %+v", j)
	}
	if j.StartedAt == nil || j.FinishedAt == nil || j.Attempts != 1 || j.FinishedAt.Before(*j.StartedAt) {
		t.Fatalf("timestamps/attempts = %+v", j)
	}

	resp := do(t, "GET", s.progress.URL+"/v1/jobs/"+sub.ID+"/result", sub.Token, nil)
	body, _ := io.ReadAll(resp.Body)
	sum := sha256.Sum256(body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/png" ||
		int64(len(body)) != j.Result.Size || hex.EncodeToString(sum[:]) != j.Result.SHA256 {
		t.Fatalf("result: %d %s, %d bytes (record says %d, %s)", resp.StatusCode, resp.Header.Get("Content-Type"), len(body), j.Result.Size, j.Result.SHA256)
	}
	img, err := png.Decode(bytes.NewReader(body))
	if err != nil || img.Bounds().Dx() != 480 || img.Bounds().Dy() != 360 {
		t.Fatalf("png: %v, %v", err, img.Bounds())
	}

	// Range and conditional requests on the result.
	resp = do(t, "GET", s.progress.URL+"/v1/jobs/"+sub.ID+"/result", sub.Token, nil, "Range", "bytes=8-15")
	part, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(part, body[8:16]) {
		t.Fatalf("range: %d %x", resp.StatusCode, part)
	}
	resp = do(t, "GET", s.progress.URL+"/v1/jobs/"+sub.ID+"/result", sub.Token, nil, "If-None-Match", resp.Header.Get("ETag"))
	if resp.StatusCode != http.StatusNotModified {
		t.Fatalf("conditional result: %d", resp.StatusCode)
	}

	// The status ETag answers 304 until something changes.
	resp = do(t, "GET", s.progress.URL+"/v1/jobs/"+sub.ID, sub.Token, nil)
	etag := resp.Header.Get("ETag")
	resp = do(t, "GET", s.progress.URL+"/v1/jobs/"+sub.ID, sub.Token, nil, "If-None-Match", etag)
	if etag == "" || resp.StatusCode != http.StatusNotModified {
		t.Fatalf("status ETag %q → %d", etag, resp.StatusCode)
	}
}

func TestPrimesResultJSON(t *testing.T) {
	s := newStack(t)
	sub := s.submit(t, `{"type":"primes","input":{"n":1000000}}`)
	s.waitState(t, sub, jobs.StateSucceeded)
	resp := do(t, "GET", s.progress.URL+"/v1/jobs/"+sub.ID+"/result", sub.Token, nil)
	res := decode[struct{ N, Count int64 }](t, resp)
	if res.N != 1000000 || res.Count != 78498 {
		t.Fatalf("primes result = %+v", res)
	}
}

func TestResultBeforeFinishIsConflict(t *testing.T) {
	s := newStack(t)
	sub := s.submit(t, `{"type":"block"}`)
	resp := do(t, "GET", s.progress.URL+"/v1/jobs/"+sub.ID+"/result", sub.Token, nil)
	p := decode[problemBody](t, resp)
	if resp.StatusCode != http.StatusConflict || resp.Header.Get("Content-Type") != "application/problem+json" || p.Status != 409 {
		t.Fatalf("result of unfinished job: %d %+v", resp.StatusCode, p)
	}
	do(t, "POST", s.progress.URL+"/v1/jobs/"+sub.ID+"/cancel", sub.Token, nil)
}

func TestCancelRunningJob(t *testing.T) {
	s := newStack(t)
	sub := s.submit(t, `{"type":"block"}`)
	s.waitState(t, sub, jobs.StateRunning)
	resp := do(t, "POST", s.progress.URL+"/v1/jobs/"+sub.ID+"/cancel", sub.Token, nil)
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusOK {
		t.Fatalf("cancel: %d", resp.StatusCode)
	}
	// How fast this happens is measured in BenchmarkCancelLatency; here,
	// that it happens and that the handler saw its context end.
	j := s.waitState(t, sub, jobs.StateCanceled)
	if !s.blockSawDone.Load() || j.FinishedAt == nil {
		t.Fatalf("handler saw ctx done: %v; %+v", s.blockSawDone.Load(), j)
	}
	// A second cancel is a conflict, not a state change.
	resp = do(t, "POST", s.progress.URL+"/v1/jobs/"+sub.ID+"/cancel", sub.Token, nil)
	if resp.StatusCode != http.StatusConflict {
		t.Fatalf("second cancel: %d", resp.StatusCode)
	}
	// The cancelled task is not run again: once Asynq is done with it,
	// the handler ran once and the job is still canceled.
	insp := asynq.NewInspectorFromRedisClient(s.rdb)
	waitfor.True(t, 10*time.Second, func() bool {
		info, err := insp.GetTaskInfo("default", sub.ID)
		return errors.Is(err, asynq.ErrTaskNotFound) || (err == nil && (info.State == asynq.TaskStateCompleted || info.State == asynq.TaskStateArchived))
	})
	if got := s.get(t, sub); got.State != jobs.StateCanceled || got.Attempts != 1 || s.blockRuns.Load() != 1 {
		t.Fatalf("after cancel: %+v, handler runs %d", got, s.blockRuns.Load())
	}
}

func TestCancelQueuedJob(t *testing.T) {
	s := newStack(t)
	// Fill all four worker slots so the next job stays queued.
	var blockers []submitted
	for range 4 {
		b := s.submit(t, `{"type":"block"}`)
		blockers = append(blockers, b)
	}
	for _, b := range blockers {
		s.waitState(t, b, jobs.StateRunning)
	}
	sub := s.submit(t, `{"type":"count"}`)
	resp := do(t, "POST", s.progress.URL+"/v1/jobs/"+sub.ID+"/cancel", sub.Token, nil)
	j := decode[jobs.Job](t, resp)
	if resp.StatusCode != http.StatusOK || j.State != jobs.StateCanceled {
		t.Fatalf("cancel queued: %d %+v", resp.StatusCode, j)
	}
	for _, b := range blockers {
		do(t, "POST", s.progress.URL+"/v1/jobs/"+b.ID+"/cancel", b.Token, nil)
		s.waitState(t, b, jobs.StateCanceled)
	}
	if s.countRuns.Load() != 0 {
		t.Fatal("the canceled queued job ran")
	}
}

func TestFailingJobRetriesThenFails(t *testing.T) {
	s := newStack(t)
	sub := s.submit(t, `{"type":"flaky"}`)
	j := s.waitState(t, sub, jobs.StateFailed)
	if j.Attempts != 3 || j.Error == nil || *j.Error != "disk on fire (attempt 3)" {
		t.Fatalf("failed job = %+v (error %v)", j, j.Error)
	}
}

func TestIdempotencyKey(t *testing.T) {
	s := newStack(t)
	body := `{"type":"count","input":{}}`
	first := s.submit(t, body, "Idempotency-Key", "order-42")
	s.waitState(t, first, jobs.StateSucceeded)
	resp := do(t, "POST", s.api.URL+"/v1/jobs", s.apiKey, strings.NewReader(body), "Idempotency-Key", "order-42")
	again := decode[submitted](t, resp)
	if resp.StatusCode != http.StatusAccepted || again.ID != first.ID || resp.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay: %d %+v", resp.StatusCode, again)
	}
	if again.State != "succeeded" {
		t.Fatalf("replay shows state %s, want the job's current state", again.State)
	}
	resp = do(t, "POST", s.api.URL+"/v1/jobs", s.apiKey, strings.NewReader(`{"type":"count","input":{"x":1}}`), "Idempotency-Key", "order-42")
	if p := decode[problemBody](t, resp); resp.StatusCode != 422 || !strings.HasSuffix(p.Type, "idempotency-key-reused") {
		t.Fatalf("reuse with other body: %d %+v", resp.StatusCode, p)
	}
	if n := s.countRuns.Load(); n != 1 {
		t.Fatalf("job ran %d times, want once", n)
	}
}

func TestTokenForAnotherJobIsForbidden(t *testing.T) {
	s := newStack(t)
	a := s.submit(t, `{"type":"count"}`)
	b := s.submit(t, `{"type":"count"}`)
	for _, path := range []string{"", "/result", "/cancel"} {
		method := "GET"
		if path == "/cancel" {
			method = "POST"
		}
		resp := do(t, method, s.progress.URL+"/v1/jobs/"+b.ID+path, a.Token, nil)
		p := decode[problemBody](t, resp)
		if resp.StatusCode != http.StatusForbidden || p.Status != 403 {
			t.Fatalf("%s %s with job A's token: %d %+v", method, path, resp.StatusCode, p)
		}
	}
	// Nothing changed on B.
	if j := s.waitState(t, b, jobs.StateSucceeded); j.State != jobs.StateSucceeded {
		t.Fatal("B was affected")
	}
}

func TestBadTokensAre401(t *testing.T) {
	s := newStack(t)
	sub := s.submit(t, `{"type":"count"}`)
	for _, f := range tokenstest.JobTokens(t, s.keys, sub.ID, sub.Token, time.Now()) {
		tok := f.Token
		t.Run(f.Name, func(t *testing.T) {
			resp := do(t, "GET", s.progress.URL+"/v1/jobs/"+sub.ID, tok, nil)
			p := decode[problemBody](t, resp)
			if resp.StatusCode != http.StatusUnauthorized || p.Status != 401 ||
				!strings.Contains(resp.Header.Get("WWW-Authenticate"), "Bearer") ||
				resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Fatalf("%d %q %+v", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), p)
			}
			if tok != "" && strings.Contains(p.Detail, tok) {
				t.Fatal("problem detail echoes the token")
			}
		})
	}
	// An API key is not a job token either.
	resp := do(t, "GET", s.progress.URL+"/v1/jobs/"+sub.ID, s.apiKey, nil)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("api key at progress: %d", resp.StatusCode)
	}
	// And a job token is not an API key.
	resp = do(t, "POST", s.api.URL+"/v1/jobs", sub.Token, strings.NewReader(`{"type":"count"}`))
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("job token at api: %d", resp.StatusCode)
	}
}

func TestSubmitRefusals(t *testing.T) {
	s := newStack(t)
	for _, tc := range []struct {
		name, key, body string
		status          int
		problemType     string
	}{
		{"no credential", "", `{"type":"count"}`, 401, "unauthorized"},
		{"unknown key", "cck_nope-nope-nope-nope-nope", `{"type":"count"}`, 401, "unauthorized"},
		{"unknown type", "ok", `{"type":"teleport"}`, 422, "unknown-job-type"},
		{"missing type", "ok", `{"input":{}}`, 422, "unknown-job-type"},
		{"bad input", "ok", `{"type":"primes","input":{"n":-5}}`, 422, "invalid-input"},
		{"unknown input field", "ok", `{"type":"primes","input":{"n":5,"m":1}}`, 422, "invalid-input"},
		{"unknown request field", "ok", `{"type":"count","color":"red"}`, 400, "bad-request"},
		{"not json", "ok", `{"type":`, 400, "bad-request"},
		{"trailing data", "ok", `{"type":"count"} {}`, 400, "bad-request"},
		{"bad timeout", "ok", `{"type":"count","timeout":"soon"}`, 422, "invalid-request"},
		{"timeout over cap", "ok", `{"type":"count","timeout":"100h"}`, 422, "invalid-request"},
		{"bad priority", "ok", `{"type":"count","priority":"urgent"}`, 422, "invalid-request"},
		{"too many retries", "ok", `{"type":"count","max_retry":99}`, 422, "invalid-request"},
		{"loopback webhook", "ok", `{"type":"count","webhook":{"url":"http://127.0.0.1:1/hook"}}`, 422, "invalid-request"},
		{"metadata webhook", "ok", `{"type":"count","webhook":{"url":"http://169.254.169.254/latest/meta-data/"}}`, 422, "invalid-request"},
		{"bad webhook event", "ok", `{"type":"count","webhook":{"url":"https://8.8.8.8/","events":["done"]}}`, 422, "invalid-request"},
		{"unknown webhook field", "ok", `{"type":"count","webhook":{"url":"https://8.8.8.8/","secret":"x"}}`, 400, "bad-request"},
		{"oversize body", "ok", `{"type":"count","input":{"pad":"` + strings.Repeat("x", 2<<20) + `"}}`, 413, "body-too-large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := tc.key
			if key == "ok" {
				key = s.apiKey
			}
			resp := do(t, "POST", s.api.URL+"/v1/jobs", key, strings.NewReader(tc.body))
			p := decode[problemBody](t, resp)
			if resp.StatusCode != tc.status || p.Status != tc.status || p.Type != "urn:claimcheck:problem:"+tc.problemType ||
				resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Fatalf("%d %+v", resp.StatusCode, p)
			}
			if tc.status == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
			if tc.problemType == "unknown-job-type" && !strings.Contains(strings.Join(p.KnownTypes, ","), "mandelbrot") {
				t.Fatalf("known types not listed: %v", p.KnownTypes)
			}
		})
	}
	// None of the refused requests created or queued anything.
	if s.countRuns.Load() != 0 {
		t.Fatal("a refused request ran a job")
	}
}

func TestJobTypesAndJWKS(t *testing.T) {
	s := newStack(t)
	resp := do(t, "GET", s.api.URL+"/v1/job-types", "", nil)
	types := decode[struct {
		Types []struct {
			Name        string          `json:"name"`
			InputSchema json.RawMessage `json:"input_schema"`
			Timeout     string          `json:"default_timeout"`
		}
	}](t, resp)
	names := map[string]bool{}
	for _, ty := range types.Types {
		names[ty.Name] = len(ty.InputSchema) > 0 && ty.Timeout != ""
	}
	if !names["sleep"] || !names["primes"] || !names["mandelbrot"] {
		t.Fatalf("job types = %+v", types)
	}
	resp = do(t, "GET", s.api.URL+"/.well-known/jwks.json", "", nil)
	raw, _ := io.ReadAll(resp.Body)
	set, err := tokens.ParseJWKS(raw)
	if err != nil || strings.Contains(string(raw), `"d"`) {
		t.Fatalf("jwks: %v %s", err, raw)
	}
	signer, _ := s.keys.Signer()
	if _, err := set.PublicKey(signer.ID); err != nil {
		t.Fatalf("jwks lacks the signing key: %v", err)
	}
}

func TestUnknownRoutesAreProblems(t *testing.T) {
	s := newStack(t)
	for _, tc := range []struct {
		method, url string
		status      int
	}{
		{"GET", s.api.URL + "/nope", 404},
		{"DELETE", s.api.URL + "/v1/jobs", 405},
		{"GET", s.progress.URL + "/v1/jobs", 404},
	} {
		resp := do(t, tc.method, tc.url, "", nil)
		if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s %s: %d %s", tc.method, tc.url, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
}
