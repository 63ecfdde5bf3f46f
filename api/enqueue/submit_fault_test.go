package enqueue_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/api/enqueue"
	"github.com/claimcheck/claimcheck/api/problem"
	"github.com/claimcheck/claimcheck/api/router"
	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/scripts"
	"github.com/claimcheck/claimcheck/tokens"
)

// outage is a go-redis hook that makes Redis fail for its client at the
// at-th command it sends (counting from 0): with applied, that command
// reaches Redis and only its reply is lost; without, it never leaves. With
// blip only that command fails; otherwise Redis is dead from then on, every
// later command failing too, until heal. Pipelines count as one command.
type outage struct {
	mu      sync.Mutex
	at      int // -1: never
	applied bool
	blip    bool
	n       int
	dead    bool
	sent    []string
}

var errOutage = errors.New("read tcp: connection reset by peer (test outage)")

func (o *outage) arm(at int, applied, blip bool) {
	o.mu.Lock()
	o.at, o.applied, o.blip, o.n, o.dead, o.sent = at, applied, blip, 0, false, nil
	o.mu.Unlock()
}

func (o *outage) heal() { o.arm(-1, false, false) }

func (o *outage) commands() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.sent...)
}

// step decides the fate of the next command: send it?, then fail it?
func (o *outage) step(name string) (send, fail bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.sent = append(o.sent, name)
	i := o.n
	o.n++
	switch {
	case o.dead:
		return false, true
	case i == o.at:
		o.dead = !o.blip
		return o.applied, true
	}
	return true, false
}

func (o *outage) DialHook(next redis.DialHook) redis.DialHook { return next }

func (o *outage) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		send, fail := o.step(cmd.Name())
		var err error
		if send {
			err = next(ctx, cmd)
		}
		if fail {
			return errOutage
		}
		return err
	}
}

func (o *outage) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		send, fail := o.step("pipeline")
		var err error
		if send {
			err = next(ctx, cmds)
		}
		if fail {
			for _, c := range cmds {
				c.SetErr(errOutage)
			}
			return errOutage
		}
		return err
	}
}

// faultFixture is an api whose job store and Asynq client share one Redis
// client that an outage can kill; authentication and the test's own
// checks use a healthy client.
type faultFixture struct {
	rdb     redis.UniversalClient
	out     *outage
	store   *jobs.Store // healthy
	handler http.Handler
	apiKey  string
}

func newFaultFixture(t *testing.T, maxActive int) *faultFixture {
	t.Helper()
	rdb := redistest.Client(t)
	// Every script on every node beforehand: a script's first EVALSHA on a
	// cluster node would fail NOSCRIPT and go again as EVAL, one command
	// more for whichever node a job's id hashes to.
	for _, s := range scripts.All() {
		if err := s.Load(context.Background(), rdb).Err(); err != nil {
			t.Fatal(err)
		}
	}
	faulty := redistest.NewClient(t)
	out := &outage{at: -1}
	faulty.AddHook(out)
	catalog, err := jobs.NewCatalog(jobs.TypeSpec{Name: "echo", Timeout: time.Minute, MaxRetry: 3,
		Schema: json.RawMessage(`{"type":"object"}`)})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := tokens.GenerateKey()
	keys, _ := tokens.NewKeySet(key)
	apiKeys := newCredentials(rdb)
	apiKey := apiKeys.issue(t, identity.KeySpec{User: "ann"})
	enq := asynq.NewClientFromRedisClient(faulty)
	svc, err := enqueue.New(enqueue.Config{
		Catalog: enqueue.FixedCatalog(catalog), Store: jobs.NewStore(faulty, nil), Enqueuer: enq, Auth: apiKeys,
		Minter: &tokens.Minter{Keys: keys}, JWKS: keys.JWKS, MaxActiveJobs: maxActive,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	r := router.New(slog.New(slog.DiscardHandler))
	svc.Register(r)
	return &faultFixture{rdb: rdb, out: out, store: jobs.NewStore(rdb, nil), handler: r, apiKey: apiKey}
}

func (f *faultFixture) do(method, path, body string, hdr ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+f.apiKey)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	f.handler.ServeHTTP(rec, req)
	return rec
}

// listed is the ids GET /v1/jobs shows.
func (f *faultFixture) listed(t *testing.T) []string {
	t.Helper()
	rec := f.do("GET", "/v1/jobs", "")
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /v1/jobs: %d %s", rec.Code, rec.Body)
	}
	var page struct {
		Jobs []struct{ ID string } `json:"jobs"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, j := range page.Jobs {
		ids = append(ids, j.ID)
	}
	return ids
}

// runs reports whether a worker picking up job id's task would run it:
// the task is in Asynq and the start script lets it run.
func (f *faultFixture) runs(t *testing.T, id string) bool {
	t.Helper()
	if _, err := asynq.NewInspectorFromRedisClient(f.rdb).GetTaskInfo("default", id); err != nil {
		return false
	}
	// The start script runs a job whose record reads queued (or running,
	// once an earlier look here started it): not pending, not ended, not a
	// refused tombstone (which reads as none).
	if j, err := f.store.Get(context.Background(), id); err != nil || j.State == jobs.StatePending || j.State.Final() {
		return false
	}
	st, err := f.store.StartAttempt(context.Background(), jobs.Attempt{ID: id, Owner: "ann", Queue: "default", Number: 1})
	return err == nil && st.State == jobs.StateRunning
}

// TestSubmitAllOrNothingUnderRedisDeath kills Redis (for the api's job
// store and Asynq client) at every command a submission sends, before it
// reaches Redis and after (its reply lost), with and without an
// Idempotency-Key, and checks what the client was told against what
// remains once Redis is back:
//   - 503 "nothing accepted" (enqueue-failed): the job is not listed, does
//     not count toward the quota (the owner's next job, at a quota of one,
//     is accepted), and its task, if any, would not run;
//   - 202: the job is listed, counts, and its task runs;
//   - 503 submission-unknown: one of the two, told honestly;
//   - every 503 carries Retry-After.
//
// Crowded, the owner's quota of one is taken by a tentative job (an
// earlier submission whose api died between its admission and its
// commit), so the submission also sends the steps that look at the owner's
// jobs and void that one; Redis dies at each of those too.
func TestSubmitAllOrNothingUnderRedisDeath(t *testing.T) {
	names := map[bool][]string{}
	for _, crowded := range []bool{false, true} {
		for _, idem := range []bool{false, true} {
			for at := 0; at == 0 || at < len(names[crowded]); at++ {
				for _, mode := range []struct {
					name          string
					applied, blip bool
				}{{"dies", false, false}, {"dies-after-applying", true, false}, {"blips", false, true}, {"blips-after-applying", true, true}} {
					leftover := -1
					if crowded {
						leftover = len(names[false]) - 1 // dies at the commit
					}
					f := newWarmFaultFixture(t, leftover)
					var hdr []string
					if idem {
						hdr = []string{"Idempotency-Key", fmt.Sprintf("k-%d-%s", at, mode.name)}
					}
					if names[crowded] == nil {
						// A clean submission shows the commands one sends.
						f.out.arm(-1, false, false)
						if rec := f.do("POST", "/v1/jobs", `{"type":"echo","input":{"n":0}}`); rec.Code != http.StatusAccepted {
							t.Fatalf("clean submission: %d %s", rec.Code, rec.Body)
						}
						if names[crowded] = f.out.commands(); len(names[crowded]) < 2 {
							t.Fatalf("a submission sent only %v", names[crowded])
						}
						t.Logf("a submission (crowded: %v) sends %v", crowded, names[crowded])
						f = newWarmFaultFixture(t, leftover)
					}
					last := len(names[crowded]) - 1
					t.Run(fmt.Sprintf("crowded=%v/idem=%v/%s at %d (%s)", crowded, idem, mode.name, at, names[crowded][at]), func(t *testing.T) {
						f.out.arm(at, mode.applied, mode.blip)
						rec := f.do("POST", "/v1/jobs", `{"type":"echo","input":{"n":1}}`, hdr...)
						f.out.heal()
						checkOutcome(t, f, rec, hdr)
						// Only the commit (the last command) can be accepted
						// or left in doubt; what came before is nothing.
						want := "503 enqueue-failed"
						if at == last && !mode.blip {
							want = "503 submission-unknown"
						} else if at == last && mode.applied {
							want = "202"
						}
						if got := outcome(rec); got != want {
							t.Fatalf("client got %s, want %s: %s", got, want, rec.Body)
						}
					})
				}
			}
		}
	}
}

// newWarmFaultFixture is newFaultFixture at a quota of one with its
// scripts and connection warmed, so every run sends the same commands (the
// warm job ends, so it does not count). With leftover >= 0 it then leaves
// a tentative job: a submission whose Redis died at its leftover-th
// command, the commit, after its admission.
func newWarmFaultFixture(t *testing.T, leftover int) *faultFixture {
	t.Helper()
	f := newFaultFixture(t, 1)
	warm := f.do("POST", "/v1/jobs", `{"type":"echo","input":{}}`)
	var w enqueue.SubmitResponse
	json.Unmarshal(warm.Body.Bytes(), &w)
	if _, err := f.store.Succeed(context.Background(), w.ID, 0, jobs.Result{}, time.Hour); warm.Code != http.StatusAccepted || err != nil {
		t.Fatalf("warm-up: %d %s %v", warm.Code, warm.Body, err)
	}
	if leftover < 0 {
		return f
	}
	f.out.arm(leftover, false, false)
	rec := f.do("POST", "/v1/jobs", `{"type":"echo","input":{"n":9}}`)
	f.out.heal()
	if got := outcome(rec); got != "503 submission-unknown" {
		t.Fatalf("leaving a tentative job: %s %s", got, rec.Body)
	}
	if ids := f.listed(t); len(ids) != 1 {
		t.Fatalf("the tentative job is listed: %v", ids)
	}
	return f
}

func outcome(rec *httptest.ResponseRecorder) string {
	if rec.Code == http.StatusAccepted {
		return "202"
	}
	var p struct{ Type string }
	json.Unmarshal(rec.Body.Bytes(), &p)
	return fmt.Sprintf("%d %s", rec.Code, strings.TrimPrefix(p.Type, problem.TypePrefix))
}

func checkOutcome(t *testing.T, f *faultFixture, rec *httptest.ResponseRecorder, hdr []string) {
	t.Helper()
	var body struct {
		Type  string `json:"type"`
		ID    string `json:"id"`
		JobID string `json:"job_id"`
	}
	json.Unmarshal(rec.Body.Bytes(), &body)
	listed := f.listed(t)
	// The warm-up job has ended; whatever else is listed came from the
	// faulted submission.
	var job string
	if len(listed) > 1 {
		job = listed[0]
	}
	switch {
	case rec.Code == http.StatusAccepted:
		if job != body.ID || !f.runs(t, body.ID) {
			t.Fatalf("202 for %s, but listed %v, runs %v", body.ID, listed, f.runs(t, body.ID))
		}
		return
	case rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "":
		t.Fatalf("status %d, Retry-After %q: %s", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	case body.Type == problem.TypePrefix+"submission-unknown":
		if job != "" && (job != body.JobID || !f.runs(t, job)) {
			t.Fatalf("submission-unknown: job %s listed but it is %s or does not run", job, body.JobID)
		}
		if job == "" && body.JobID != "" && f.runs(t, body.JobID) {
			t.Fatalf("submission-unknown: job %s not listed but runs", body.JobID)
		}
	case body.Type == problem.TypePrefix+"enqueue-failed":
		if job != "" {
			t.Fatalf("503 nothing accepted, yet job %s is listed (%v)", job, listed)
		}
		// Its record, if any, must never run: look at every record left.
		left := redistest.Keys(t, f.rdb, jobs.KeyPrefixJob+"*")
		for _, k := range left {
			id, isRecord := strings.CutSuffix(strings.TrimPrefix(k, jobs.KeyPrefixJob+"{"), "}")
			if isRecord && id != listed[0] && f.runs(t, id) {
				t.Fatalf("503 nothing accepted, yet job %s would run", id)
			}
		}
	default:
		t.Fatalf("503 of type %q: %s", body.Type, rec.Body)
	}
	// Nothing counts: at a quota of one, the owner's next job is accepted.
	if job == "" {
		next := f.do("POST", "/v1/jobs", `{"type":"echo","input":{"n":2}}`)
		if next.Code != http.StatusAccepted {
			t.Fatalf("the next job after a 503: %d %s", next.Code, next.Body)
		}
	}
	// A retry with the same key ends in one job that runs.
	if len(hdr) > 0 {
		retry := f.do("POST", "/v1/jobs", `{"type":"echo","input":{"n":1}}`, hdr...)
		var r enqueue.SubmitResponse
		json.Unmarshal(retry.Body.Bytes(), &r)
		if job != "" && (retry.Code != http.StatusAccepted || r.ID != job || !f.runs(t, r.ID)) {
			t.Fatalf("retry of accepted job %s: %d %s", job, retry.Code, retry.Body)
		}
	}
}
