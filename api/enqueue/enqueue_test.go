package enqueue_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
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
	"github.com/claimcheck/claimcheck/tokens"
)

type fixture struct {
	rdb     redis.UniversalClient
	handler http.Handler
	apiKey  string
	keys    *tokens.KeySet
	creds   credentials
}

func newFixture(tb testing.TB, enq enqueue.Enqueuer) *fixture {
	tb.Helper()
	return newFixtureOn(tb, enq, false)
}

// newFixtureOn builds the service; autopipeline sends its own Redis calls
// (key lookup, job record) through go-redis' auto-pipeliner.
func newFixtureOn(tb testing.TB, enq enqueue.Enqueuer, autopipeline bool) *fixture {
	tb.Helper()
	return newFixtureWith(tb, redistest.Client(tb), enq, autopipeline)
}

// newFixtureFor builds the service as newFixture does, on rdb.
func newFixtureFor(tb testing.TB, rdb redis.UniversalClient) *fixture {
	tb.Helper()
	return newFixtureWith(tb, rdb, nil, false)
}

// newFixtureWith builds the service on rdb; each of opts may change its
// Config before it is made.
func newFixtureWith(tb testing.TB, rdb redis.UniversalClient, enq enqueue.Enqueuer, autopipeline bool, opts ...func(*enqueue.Config)) *fixture {
	tb.Helper()
	var cmds redis.Cmdable = rdb
	if autopipeline {
		ap, err := rdb.AutoPipeline()
		if err != nil {
			tb.Fatal(err)
		}
		cmds = ap
	}
	catalog, err := jobs.NewCatalog(jobs.TypeSpec{
		Name: "echo", Timeout: time.Minute, MaxRetry: 3,
		Schema: json.RawMessage(`{"type":"object","additionalProperties":false,"properties":{"n":{"type":"integer","minimum":0}}}`),
	}, jobs.TypeSpec{
		// A number field with bounds, as the built-in sleep has: the
		// schema library compares it exactly (big.Rat).
		Name: "sleep", Timeout: time.Minute, MaxRetry: 3,
		Schema: json.RawMessage(`{"type":"object","additionalProperties":false,"properties":{"seconds":{"type":"number","minimum":0,"maximum":3600},"tags":{"type":"array"},"note":{"type":"string"}}}`),
	})
	if err != nil {
		tb.Fatal(err)
	}
	key, err := tokens.GenerateKey()
	if err != nil {
		tb.Fatal(err)
	}
	keys, err := tokens.NewKeySet(key)
	if err != nil {
		tb.Fatal(err)
	}
	if enq == nil {
		enq = asynq.NewClientFromRedisClient(rdb)
	}
	apiKeys := newCredentials(cmds)
	apiKey := apiKeys.issue(tb, identity.KeySpec{User: "ann"})
	cfg := enqueue.Config{
		Catalog: enqueue.FixedCatalog(catalog), Store: jobs.NewStore(cmds, nil), Enqueuer: enq, Auth: apiKeys,
		Minter: &tokens.Minter{Keys: keys}, JWKS: keys.JWKS, Logger: slog.New(slog.DiscardHandler),
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	svc, err := enqueue.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	r := router.New(slog.New(slog.DiscardHandler))
	svc.Register(r)
	return &fixture{rdb: rdb, handler: r, apiKey: apiKey, keys: keys, creds: apiKeys}
}

func (f *fixture) post(body string, hdr ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest("POST", "/v1/jobs", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+f.apiKey)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	f.handler.ServeHTTP(rec, req)
	return rec
}

// useOperatorKey switches f to a key for ann that an operator made with
// scopes.
func (f *fixture) useOperatorKey(tb testing.TB, scopes ...string) {
	tb.Helper()
	f.apiKey = f.creds.issue(tb, identity.KeySpec{User: "ann", Scopes: scopes, Operator: true})
}

// failingEnqueuer stands in for Asynq while Redis is unreachable for it.
type failingEnqueuer struct{ calls int }

func (f *failingEnqueuer) EnqueueContext(context.Context, *asynq.Task, ...asynq.Option) (*asynq.TaskInfo, error) {
	f.calls++
	return nil, errors.New("dial tcp: connection refused")
}

func TestEnqueueFailureLeavesNothingBehind(t *testing.T) {
	enq := &failingEnqueuer{}
	f := newFixture(t, enq)
	rec := f.post(`{"type":"echo","input":{"n":1}}`, "Idempotency-Key", "k1")
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" ||
		rec.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("enqueue failure: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	if strings.Contains(rec.Body.String(), "connection refused") {
		t.Fatal("problem leaks the internal error")
	}
	// No job record and no idempotency claim survive, so the client's retry
	// with the same key is a fresh submission, not a replay of nothing.
	left := redistest.Keys(t, f.rdb, "cc:job:*")
	claims := redistest.Keys(t, f.rdb, "cc:idem:*")
	if len(left) != 0 || len(claims) != 0 || enq.calls != 1 {
		t.Fatalf("left behind: jobs %v, claims %v, enqueue calls %d", left, claims, enq.calls)
	}
}

func TestAcceptedJobIsQueuedWithItsOptions(t *testing.T) {
	f := newFixture(t, nil)
	f.useOperatorKey(t, identity.ScopeJobsSubmit, identity.ScopeJobsPriority)
	rec := f.post(`{"type":"echo","input":{"n":1},"timeout":"30s","priority":"high","max_retry":1}`)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	var sub enqueue.SubmitResponse
	json.Unmarshal(rec.Body.Bytes(), &sub)
	info, err := asynq.NewInspectorFromRedisClient(f.rdb).GetTaskInfo("critical", sub.ID)
	if err != nil {
		t.Fatalf("task not in the critical queue: %v", err)
	}
	// Asynq's retry budget has one spare for hand-backs (jobs.DeliveryRetries).
	if info.ID != sub.ID || info.MaxRetry != 2 || info.Timeout != 30*time.Second || info.Deadline.IsZero() || info.Retention != 24*time.Hour {
		t.Fatalf("task = %+v", info)
	}
	claims, err := (&tokens.Verifier{Keys: f.keys}).VerifyJob(sub.Token)
	if err != nil || claims.Job != sub.ID || claims.Subject != "ann" || !claims.Expires().Equal(sub.TokenExpiresAt) {
		t.Fatalf("token claims = %+v, %v", claims, err)
	}
	// The token outlives the job's deadline by the retention, so a result
	// can be fetched until it is deleted.
	if sub.TokenExpiresAt.Before(info.Deadline.Add(23 * time.Hour)) {
		t.Fatalf("token expires %v, deadline %v", sub.TokenExpiresAt, info.Deadline)
	}
}

// TestFinding5HighPriorityNeedsScope: "priority": "high" (or its queue,
// "critical") is refused with 403 insufficient-scope naming jobs:priority
// for a credential without that scope (a default API key, like a session,
// lacks it), and nothing is recorded or enqueued; a key an operator made
// with the scope gets its job on the critical queue.
func TestFinding5HighPriorityNeedsScope(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	insp := asynq.NewInspectorFromRedisClient(f.rdb)
	for _, body := range []string{
		`{"type":"echo","input":{"n":1},"priority":"high"}`,
		`{"type":"echo","input":{"n":1},"queue":"critical"}`,
	} {
		rec := f.post(body)
		if rec.Code != http.StatusForbidden || rec.Header().Get("Content-Type") != "application/problem+json" ||
			!strings.Contains(rec.Body.String(), `"type":"`+problem.TypePrefix+`insufficient-scope"`) ||
			!strings.Contains(rec.Body.String(), "jobs:priority") ||
			!strings.Contains(rec.Header().Get("WWW-Authenticate"), `scope="jobs:priority"`) {
			t.Fatalf("%s: %d %v %s", body, rec.Code, rec.Header(), rec.Body)
		}
	}
	left := redistest.Keys(t, f.rdb, "cc:job:*")
	queued, _ := insp.ListPendingTasks("critical")
	if len(left) != 0 || len(queued) != 0 {
		t.Fatalf("a refused submission left records %v, tasks %v", left, queued)
	}
	// Normal and low priority need nothing more than jobs:submit.
	if rec := f.post(`{"type":"echo","input":{"n":1},"priority":"low"}`); rec.Code != http.StatusAccepted {
		t.Fatalf("low priority: %d %s", rec.Code, rec.Body)
	}

	// A user cannot give their own key the scope; an operator can.
	if keys, ok := f.creds.(realKeys); ok {
		if _, _, err := keys.CreateKey(ctx, identity.KeySpec{
			User: "ann", Scopes: []string{identity.ScopeJobsSubmit, identity.ScopeJobsPriority},
		}); !errors.Is(err, identity.ErrBadScope) {
			t.Fatalf("self-service key with jobs:priority: %v", err)
		}
	}
	f.useOperatorKey(t, identity.ScopeJobsSubmit, identity.ScopeJobsPriority)
	rec := f.post(`{"type":"echo","input":{"n":1},"priority":"high"}`)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("with jobs:priority: %d %s", rec.Code, rec.Body)
	}
	var sub enqueue.SubmitResponse
	json.Unmarshal(rec.Body.Bytes(), &sub)
	if _, err := insp.GetTaskInfo("critical", sub.ID); err != nil {
		t.Fatalf("task not in the critical queue: %v", err)
	}
}

// TestReplayOfSubmissionUnderWay: an Idempotency-Key whose claim is there
// but whose job record is not (yet: the claim and the record are written
// side by side, in different slots on a cluster) answers 409 with
// Retry-After, not a second job and not 404; a different body is still
// 422.
func TestReplayOfSubmissionUnderWay(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	body := `{"type":"echo","input":{"n":1}}`
	rec := f.post(body, "Idempotency-Key", "k")
	var sub enqueue.SubmitResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &sub); err != nil || rec.Code != http.StatusAccepted {
		t.Fatalf("first: %d %s", rec.Code, rec.Body)
	}
	if err := f.rdb.Del(ctx, jobs.JobKey(sub.ID)).Err(); err != nil {
		t.Fatal(err)
	}
	again := f.post(body, "Idempotency-Key", "k")
	if again.Code != http.StatusConflict || again.Header().Get("Retry-After") == "" ||
		!strings.Contains(again.Body.String(), problem.TypePrefix+"idempotency-key-in-use") ||
		!strings.Contains(again.Body.String(), sub.ID) {
		t.Fatalf("replay while the record is missing: %d %v %s", again.Code, again.Header(), again.Body)
	}
	if left := redistest.Keys(t, f.rdb, "cc:job:*"); len(left) != 0 {
		t.Fatalf("the replay wrote records %v", left)
	}
	if other := f.post(`{"type":"echo","input":{"n":2}}`, "Idempotency-Key", "k"); other.Code != http.StatusUnprocessableEntity {
		t.Fatalf("another body under the key: %d %s", other.Code, other.Body)
	}
}
