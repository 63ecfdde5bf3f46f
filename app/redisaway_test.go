package app_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/internal/config"
	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/redisconn"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/syncbuf"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/tokens"
	"github.com/claimcheck/claimcheck/worker/builtin"
)

// redisBound is the README's bound on how long a request waits for a
// Redis that does not answer (config.RedisCallTimeout). The tests give
// each request that bound plus 3 s before calling it hung.
const redisBound = 2 * time.Second

// awayStack is an api and a progress service on a Redis of their own,
// with a worker, on a Redis of their own which the test freezes and kills.
type awayStack struct {
	redis         *redistest.Process
	api, progress *httptest.Server
	apiKey        string
	logs          *syncbuf.Buffer
	client        *http.Client
}

func newAwayStack(t *testing.T) *awayStack {
	t.Helper()
	ctx := context.Background()
	s := &awayStack{redis: redistest.Start(t), logs: &syncbuf.Buffer{},
		client: &http.Client{Timeout: redisBound + 3*time.Second}}
	logger := slog.New(slog.NewJSONHandler(s.logs, nil))
	r, err := config.DialRedis(ctx, config.RedisConfig{URL: s.redis.URL(), Logger: logger, DownLogQuiet: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	cfg := app.Config{DataDir: t.TempDir(), Argon2: cheapArgon2, Logger: logger, Types: builtin.Types()}.WithDefaults()
	keys, _, err := tokens.EnsureDir(cfg.JobKeyDir)
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := identity.NewAPIKeys(r.Client, nil).Create(ctx, "ann", "test", "")
	if err != nil {
		t.Fatal(err)
	}
	s.apiKey = key.Reveal()
	h, err := app.APIHandler(cfg, r.Client, keys)
	if err != nil {
		t.Fatal(err)
	}
	s.api = httptest.NewServer(h)
	t.Cleanup(s.api.Close)
	pcfg := cfg
	pcfg.JWKSURL = s.api.URL + "/.well-known/jwks.json"
	pkeys, err := app.ProgressKeys(ctx, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	prog, err := app.Progress(pcfg, r.Client, pkeys)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prog.Close)
	s.progress = httptest.NewServer(app.Handler(pcfg, prog))
	t.Cleanup(s.progress.Close)
	// A worker announces the job types the api accepts.
	w, err := app.Worker(cfg, r.Client)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Shutdown)
	return s
}

// answer is what one request got; err is set when it got nothing in time.
type answer struct {
	status int
	header http.Header
	body   map[string]any
	err    error
}

func (s *awayStack) do(method, url, bearer, body string) answer {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return answer{err: err}
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header}
	_ = json.Unmarshal(b, &a.body)
	return a
}

const awayJob = `{"type":"sleep","input":{"seconds":1}}`

// submit posts a job and returns its id and token, failing unless it is
// accepted.
func (s *awayStack) submit(t *testing.T) (id, token string) {
	t.Helper()
	a := s.do("POST", s.api.URL+"/v1/jobs", s.apiKey, awayJob)
	if a.err != nil || a.status != http.StatusAccepted {
		t.Fatalf("submit: %d %v %v", a.status, a.body, a.err)
	}
	id, _ = a.body["id"].(string)
	token, _ = a.body["token"].(string)
	return id, token
}

// wantUnavailable fails unless a is a 503 problem saying Redis is away,
// with Retry-After.
func wantUnavailable(t *testing.T, what string, a answer) {
	t.Helper()
	if a.err != nil {
		t.Fatalf("%s: no answer within %v: %v", what, redisBound+3*time.Second, a.err)
	}
	if a.status != http.StatusServiceUnavailable || a.header.Get("Content-Type") != "application/problem+json" ||
		a.header.Get("Retry-After") == "" || a.body["type"] != "urn:claimcheck:problem:redis-unavailable" {
		t.Fatalf("%s: want 503 redis-unavailable with Retry-After, got %d %v %v", what, a.status, a.header, a.body)
	}
}

// TestRedisAwayIs503 freezes Redis (SIGSTOP) and then kills it: every
// request that needs it — submitting with an API key, reading a status
// with a job token — answers 503 redis-unavailable with Retry-After within
// the bound, /readyz says not ready, and once Redis is back the same
// requests succeed with nothing restarted. The log says once that Redis is
// down and once that it is back per outage, however many requests failed
// (issue 12, C and F: they were 500 internal after 5–10 s, one ERROR line
// each).
func TestRedisAwayIs503(t *testing.T) {
	s := newAwayStack(t)

	var recovered time.Time // when the last fault's Redis answered again
	for _, fault := range []struct {
		name       string
		stop, back func()
	}{
		{"SIGSTOP", s.redis.Pause, s.redis.Resume},
		{"SIGKILL", s.redis.Kill, s.redis.Restart},
	} {
		t.Run(fault.name, func(t *testing.T) {
			// A job whose record this progress service has not read yet:
			// a status read from its cache needs no Redis.
			id, token := s.submit(t)
			// Failures within one call bound of a recovery are logged as
			// that outage's tail (redisconn.Monitor), so a new outage
			// starts past it to be logged as one of its own.
			waitfor.True(t, 10*time.Second, func() bool { return time.Since(recovered) > redisconn.CallTimeout })
			downBefore := strings.Count(s.logs.String(), `"msg":"redis unavailable"`)
			upBefore := strings.Count(s.logs.String(), `"msg":"redis available again"`)
			fault.stop()
			for range 3 {
				wantUnavailable(t, "POST /v1/jobs", s.do("POST", s.api.URL+"/v1/jobs", s.apiKey, awayJob))
				wantUnavailable(t, "GET /v1/jobs/{id}", s.do("GET", s.progress.URL+"/v1/jobs/"+id, token, ""))
			}
			for _, srv := range []*httptest.Server{s.api, s.progress} {
				a := s.do("GET", srv.URL+"/readyz", "", "")
				if a.err != nil || a.status != http.StatusServiceUnavailable {
					t.Fatalf("/readyz with Redis away: %d %v %v", a.status, a.body, a.err)
				}
			}
			fault.back()
			waitfor.True(t, 10*time.Second, func() bool {
				return s.do("POST", s.api.URL+"/v1/jobs", s.apiKey, awayJob).status == http.StatusAccepted
			})
			recovered = time.Now()
			if a := s.do("GET", s.progress.URL+"/v1/jobs/"+id, token, ""); a.status != http.StatusOK {
				t.Fatalf("status after Redis came back: %d %v %v", a.status, a.body, a.err)
			}
			logs := s.logs.String()
			if d, u := strings.Count(logs, `"msg":"redis unavailable"`)-downBefore,
				strings.Count(logs, `"msg":"redis available again"`)-upBefore; d < 1 || u < 1 || d > 2 || u > 2 {
				// Each Redis client says it once (this stack's services and
				// its background loops may hold two), never once per
				// failing request: there were seven here.
				t.Fatalf("want one down and one up line per client for this outage, got %d and %d:\n%s", d, u, logs)
			}
			if strings.Contains(logs, `"msg":"request failed"`) || strings.Contains(logs, "pool.go") {
				t.Fatalf("a request failed for want of Redis was logged as an error:\n%s", logs)
			}
		})
	}
}
