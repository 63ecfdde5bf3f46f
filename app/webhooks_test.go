package app_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/internal/delivery"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/syncbuf"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/internal/webhook"
	"github.com/claimcheck/claimcheck/tokens"
	"github.com/claimcheck/claimcheck/worker"
)

// nodeVerifier is testdata/webhook-verify.mjs run by node: an independent
// Standard Webhooks v1a verifier, fed every request a receiver gets.
type nodeVerifier struct {
	mu  sync.Mutex
	in  io.Writer
	out *bufio.Scanner
}

func startNodeVerifier(t *testing.T, jwksURL string) *nodeVerifier {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		if redistest.Strict() {
			t.Fatal("node is required (CLAIMCHECK_TEST_STRICT=1): " + err.Error())
		}
		t.Skip("node not found: the independent webhook signature verifier needs it")
	}
	// The api reads published keys anew within a second of a reading
	// that found none (the deliverer started after the api).
	waitfor.True(t, 10*time.Second, func() bool {
		resp, err := http.Get(jwksURL)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), `"kind":"webhook"`)
	})
	cmd := exec.Command(node, "testdata/webhook-verify.mjs", jwksURL)
	in, _ := cmd.StdinPipe()
	outPipe, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.Close(); _ = cmd.Wait() })
	v := &nodeVerifier{in: in, out: bufio.NewScanner(outPipe)}
	if !v.out.Scan() || v.out.Text() != "ready" {
		t.Fatalf("node verifier did not start: %q", v.out.Text())
	}
	return v
}

func (v *nodeVerifier) verify(r *hookRequest) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	line, _ := json.Marshal(map[string]string{"id": r.ID, "timestamp": r.Timestamp, "signature": r.Signature,
		"body": base64.StdEncoding.EncodeToString(r.Body)})
	if _, err := fmt.Fprintf(v.in, "%s\n", line); err != nil {
		return "bad verifier gone: " + err.Error()
	}
	if !v.out.Scan() {
		return "bad verifier gave no answer"
	}
	return v.out.Text()
}

// hookPayload is a webhook body as a receiver reads it.
type hookPayload struct {
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	Data      struct {
		Job          jobs.Job           `json:"job"`
		Seq          int64              `json:"seq"`
		Lines        []delivery.LogLine `json:"lines"`
		DroppedLines int                `json:"dropped_lines"`
		Result       *delivery.Result   `json:"result"`
	} `json:"data"`
}

type hookRequest struct {
	ID, Timestamp, Signature, UserAgent string
	Body                                []byte
	Verdict                             string
	Payload                             hookPayload
	Status                              int
}

// receiver is a webhook receiver on loopback that has node verify every
// request, and answers as answer says (200 when nil).
type receiver struct {
	srv    *httptest.Server
	v      *nodeVerifier
	mu     sync.Mutex
	reqs   []*hookRequest
	answer func(n int, r *hookRequest, req *http.Request) int
}

func newReceiver(t testing.TB, v *nodeVerifier, answer func(n int, r *hookRequest, req *http.Request) int) *receiver {
	rc := &receiver{v: v, answer: answer}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r := &hookRequest{ID: req.Header.Get("webhook-id"), Timestamp: req.Header.Get("webhook-timestamp"),
			Signature: req.Header.Get("webhook-signature"), UserAgent: req.Header.Get("User-Agent"), Body: body}
		if req.Method != http.MethodPost {
			r.Verdict = "bad method " + req.Method
		} else if v != nil {
			r.Verdict = v.verify(r)
		}
		_ = json.Unmarshal(body, &r.Payload)
		rc.mu.Lock()
		n := len(rc.reqs)
		rc.reqs = append(rc.reqs, r)
		rc.mu.Unlock()
		r.Status = http.StatusOK
		if rc.answer != nil {
			r.Status = rc.answer(n, r, req)
		}
		w.WriteHeader(r.Status)
		_, _ = io.WriteString(w, "a response body the deliverer never quotes")
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) requests() []*hookRequest {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]*hookRequest(nil), rc.reqs...)
}

func (rc *receiver) find(typ string) []*hookRequest {
	var out []*hookRequest
	for _, r := range rc.requests() {
		if r.Payload.Type == typ {
			out = append(out, r)
		}
	}
	return out
}

// webhookTypes are the job types of the webhook tests.
func webhookTypes() []worker.Type {
	return []worker.Type{{
		Name: "wh-report", Description: "reports progress n times as fast as it can, logs, and writes a result",
		Timeout: time.Minute, InputSchema: json.RawMessage(`{"type":"object","properties":{"n":{"type":"integer"},"every_ms":{"type":"integer"},"result":{"type":"string"}}}`),
		Handle: func(ctx context.Context, t *worker.Task) error {
			var in struct {
				N       int
				EveryMS int `json:"every_ms"`
				Result  string
			}
			if err := t.Decode(&in); err != nil {
				return err
			}
			for i := 1; i <= in.N; i++ {
				t.Progress(float64(i)*100/float64(in.N), fmt.Sprintf("step %d", i))
				t.Logf("line %d", i)
				if in.EveryMS > 0 { // the job's own pace: work, not a wait for a condition
					time.Sleep(time.Duration(in.EveryMS) * time.Millisecond)
				}
			}
			w, err := t.Result("text/plain")
			if err != nil {
				return err
			}
			_, err = io.WriteString(w, in.Result)
			return err
		},
	}}
}

// webhookStack is the e2e stack with a webhook deliverer started beside
// its worker, fast retries and, unless strict, private addresses allowed.
func webhookStack(t testing.TB, strict bool, tune func(*app.Config)) (*stack, *worker.Webhooks) {
	t.Helper()
	s := newStack(t, webhookOpts(strict, tune))
	return s, s.startDeliverer(t)
}

// webhookOpts configures a webhook stack: the webhook job types, fast
// retries and polls, private addresses allowed unless strict.
func webhookOpts(strict bool, tune func(*app.Config)) func(*app.Config) {
	return func(c *app.Config) {
		c.Types = append(c.Types, webhookTypes()...)
		c.WebhookAllowPrivate = !strict
		c.Webhooks = worker.WebhookConfig{
			Concurrency:              4,
			RetryDelay:               func(int) time.Duration { return 20 * time.Millisecond },
			TaskCheckInterval:        10 * time.Millisecond,
			DelayedTaskCheckInterval: 20 * time.Millisecond,
			SettleDelay:              func(int) time.Duration { return 20 * time.Millisecond },
		}
		if tune != nil {
			tune(c)
		}
	}
}

// startDeliverer starts a webhook deliverer on the stack, shut down when
// t ends.
func (s *stack) startDeliverer(t testing.TB) *worker.Webhooks {
	t.Helper()
	d, err := app.Webhooks(s.cfg, s.rdb, s.progress.URL)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Shutdown)
	return d
}

// submitWebhook creates a job with a webhook the way the api does (record,
// task, confirm) and mints its token: the subscription is planted as is,
// with no check at submit (the connect-time check is what is under test).
func (s *stack) submitWebhook(t testing.TB, typ, input string, spec webhook.Spec) submitted {
	t.Helper()
	return s.submitJob(t, typ, input, &spec)
}

// submitJob is submitWebhook with any subscription, or none (nil).
func (s *stack) submitJob(t testing.TB, typ, input string, spec *webhook.Spec) submitted {
	t.Helper()
	return s.submitJobOn(t, "default", 0, typ, input, spec)
}

// submitJobOn is submitJob on queue, the job retried up to maxRetry times.
func (s *stack) submitJobOn(t testing.TB, queue string, maxRetry int, typ, input string, spec *webhook.Spec) submitted {
	t.Helper()
	ctx := context.Background()
	id := uuid.Must(uuid.NewV7()).String()
	store := jobs.NewStore(s.rdb, nil)
	if _, err := store.Create(ctx, jobs.NewJob{ID: id, Type: typ, Owner: "ann", Queue: queue, Timeout: time.Minute, MaxRetry: maxRetry,
		TTL: time.Hour, Webhook: spec, PendingTTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(jobs.TaskPayload{Job: id, Owner: "ann", Input: json.RawMessage(input)})
	client := asynq.NewClientFromRedisClient(s.rdb)
	if _, err := client.Enqueue(asynq.NewTask(typ, payload), asynq.TaskID(id), asynq.Queue(queue),
		asynq.MaxRetry(jobs.DeliveryRetries(maxRetry)), asynq.Timeout(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := store.ConfirmJob(ctx, jobs.Confirmation{ID: id, Owner: "ann", TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	tok, _, err := (&tokens.Minter{Keys: s.keys}).MintJob(id, "ann", tokens.JobScopes, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return submitted{ID: id, Token: tok}
}

func (s *stack) deliveries(t *testing.T, sub submitted) []jobs.Delivery {
	t.Helper()
	resp := do(t, "GET", s.progress.URL+"/v1/jobs/"+sub.ID+"/deliveries", sub.Token, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET deliveries: %d", resp.StatusCode)
	}
	return decode[struct {
		Deliveries []jobs.Delivery `json:"deliveries"`
	}](t, resp).Deliveries
}

func allVerified(t *testing.T, reqs []*hookRequest) {
	t.Helper()
	for _, r := range reqs {
		if !strings.HasPrefix(r.Verdict, "ok ") {
			t.Errorf("request %s (%s): node verifier says %q", r.ID, r.Payload.Type, r.Verdict)
		}
		if r.UserAgent != delivery.UserAgent {
			t.Errorf("User-Agent %q", r.UserAgent)
		}
	}
}

// TestWebhookEndToEnd runs a job with every event subscribed through a
// real worker and deliverer: every request verifies with node against the
// api's JWKS, progress is throttled and never goes backwards, the
// completed payload's link downloads the result with no other credential
// and dies with the job's tokens, and GET /deliveries shows the attempts.
func TestWebhookEndToEnd(t *testing.T) {
	s, _ := webhookStack(t, false, nil)
	v := startNodeVerifier(t, s.api.URL+"/.well-known/jwks.json")
	rc := newReceiver(t, v, nil)
	const result = "the exact result bytes\n"
	sub := s.submitWebhook(t, "wh-report", `{"n":100,"every_ms":15,"result":"`+strings.TrimSpace(result)+`\n"}`,
		webhook.Spec{URL: rc.srv.URL + "/hook?secret=receivers-own", Events: webhook.Events})
	j := s.waitState(t, sub, jobs.StateSucceeded)
	waitfor.True(t, 20*time.Second, func() bool { return len(rc.find("job.completed")) == 1 })

	reqs := rc.requests()
	allVerified(t, reqs)
	started := rc.find("job.started")
	if len(started) != 1 || started[0].ID != "msg_"+sub.ID+"_started_1" {
		t.Fatalf("started deliveries %d (%v)", len(started), ids(started))
	}
	completed := rc.find("job.completed")[0]
	if completed.ID != "msg_"+sub.ID+"_completed" || completed.Payload.Data.Job.State != jobs.StateSucceeded ||
		completed.Payload.Data.Job.Progress.Percent != 100 || completed.Payload.Data.Job.ID != sub.ID {
		t.Fatalf("completed %s: %+v", completed.ID, completed.Payload.Data.Job)
	}

	// Throttled: at most one progress event per 500 ms of the job's run,
	// plus the leading and the trailing edge; never out of order.
	progress := rc.find("job.progress")
	run := j.FinishedAt.Sub(*j.StartedAt)
	if max := int(run/delivery.Interval) + 2; len(progress) == 0 || len(progress) > max {
		t.Fatalf("%d progress deliveries for a %v run, want 1..%d", len(progress), run, max)
	}
	t.Logf("%d requests: %d progress, %d log for a %v run", len(reqs), len(progress), len(rc.find("job.log")), run)
	var lastSeq int64
	var lastPct float64
	for _, p := range progress {
		d := p.Payload.Data
		if d.Seq <= lastSeq || d.Job.Progress.Percent < lastPct || p.ID != fmt.Sprintf("msg_%s_progress_%d", sub.ID, d.Seq) {
			t.Fatalf("progress out of order: seq %d after %d, %v%% after %v%% (id %s)", d.Seq, lastSeq, d.Job.Progress.Percent, lastPct, p.ID)
		}
		lastSeq, lastPct = d.Seq, d.Job.Progress.Percent
	}
	// Log events carry the lines since the previous one, in order, bounded.
	var lines []string
	for _, l := range rc.find("job.log") {
		if len(l.Payload.Data.Lines) > delivery.MaxLogLines {
			t.Fatalf("a log event with %d lines", len(l.Payload.Data.Lines))
		}
		for _, ln := range l.Payload.Data.Lines {
			lines = append(lines, ln.Text)
		}
	}
	if len(lines) == 0 || lines[0] != "line 1" && len(rc.find("job.log")[0].Payload.Data.Lines) < 100 {
		t.Fatalf("log lines %v", lines)
	}

	// The link downloads the exact bytes with no other credential.
	r := completed.Payload.Data.Result
	if r == nil || r.URL == "" || r.Size != int64(len(result)) || r.ContentType != "text/plain" {
		t.Fatalf("completed result %+v", r)
	}
	sum := sha256.Sum256([]byte(result))
	if r.SHA256 != hex.EncodeToString(sum[:]) || !strings.HasPrefix(r.URL, s.progress.URL+"/v1/results/"+sub.ID+"?sig=") {
		t.Fatalf("completed result %+v", r)
	}
	if until := time.Until(r.URLExpiresAt); until <= 0 || until > delivery.DefaultLinkTTL {
		t.Fatalf("link expires in %v", until)
	}
	resp := do(t, "GET", r.URL, "", nil)
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(got) != result {
		t.Fatalf("download through the webhook link: %d %q", resp.StatusCode, got)
	}

	// GET /deliveries shows every attempt, delivered.
	ds := s.deliveries(t, sub)
	delivered := map[string]int{}
	for _, d := range ds {
		if d.Outcome == jobs.DeliveryDelivered {
			delivered[d.Event]++
			if d.StatusCode != 200 || d.Attempt != 1 {
				t.Fatalf("delivery %+v", d)
			}
		}
	}
	if delivered["started"] != 1 || delivered["completed"] != 1 || delivered["progress"] != len(progress) {
		t.Fatalf("deliveries %+v, receiver saw %d progress", delivered, len(progress))
	}

	// Revoking the job's tokens kills the link already sent.
	if _, err := jobs.NewStore(s.rdb, nil).RevokeTokens(context.Background(), sub.ID); err != nil {
		t.Fatal(err)
	}
	// (The progress service hears of the revocation through the job's
	// events; its cached record goes at once, or within its 5 s life.)
	waitfor.True(t, 10*time.Second, func() bool {
		resp = do(t, "GET", r.URL, "", nil)
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode != http.StatusOK
	})
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") {
		t.Fatalf("revoked webhook link: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

func ids(rs []*hookRequest) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.ID
	}
	return out
}

// TestWebhookRetries: a receiver that answers 500, then one that does not
// answer in time, get the event again with the same webhook-id, a fresh
// timestamp and a signature that still verifies; the attempts are recorded.
func TestWebhookRetries(t *testing.T) {
	s, _ := webhookStack(t, false, func(c *app.Config) {
		c.Webhooks.ResponseTimeout = 200 * time.Millisecond
		// Over a second, so the retry's timestamp (whole seconds) differs.
		c.Webhooks.RetryDelay = func(int) time.Duration { return 1100 * time.Millisecond }
	})
	v := startNodeVerifier(t, s.api.URL+"/.well-known/jwks.json")
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	rc := newReceiver(t, v, func(n int, r *hookRequest, req *http.Request) int {
		switch n {
		case 0:
			return http.StatusInternalServerError
		case 1:
			select { // longer than the response timeout
			case <-req.Context().Done():
			case <-release:
			}
			return http.StatusOK
		}
		return http.StatusNoContent
	})
	sub := s.submitWebhook(t, "wh-report", `{"n":1,"result":"x"}`, webhook.Spec{URL: rc.srv.URL, Events: []string{"completed"}})
	waitfor.True(t, 20*time.Second, func() bool { return len(rc.requests()) >= 3 })
	reqs := rc.requests()
	allVerified(t, reqs)
	for i, r := range reqs[:3] {
		if r.ID != "msg_"+sub.ID+"_completed" {
			t.Fatalf("attempt %d has webhook-id %q", i+1, r.ID)
		}
		if i > 0 && r.Timestamp <= reqs[i-1].Timestamp {
			t.Fatalf("attempt %d timestamp %s, previous %s: not fresh", i+1, r.Timestamp, reqs[i-1].Timestamp)
		}
		if i > 0 && r.Signature == reqs[i-1].Signature {
			t.Fatal("a retry reused the previous attempt's signature")
		}
	}
	var ds []jobs.Delivery
	waitfor.True(t, 10*time.Second, func() bool { ds = s.deliveries(t, sub); return len(ds) == 3 })
	if ds[0].Outcome != jobs.DeliveryRetrying || ds[0].StatusCode != 500 || ds[0].NextRetryAt == nil ||
		strings.Contains(ds[0].Error, "never quotes") || ds[0].Attempt != 1 {
		t.Fatalf("first attempt %+v", ds[0])
	}
	if ds[1].Outcome != jobs.DeliveryRetrying || ds[1].StatusCode != 0 || !strings.Contains(ds[1].Error, "timed out") ||
		strings.Contains(ds[1].Error, rc.srv.URL) || ds[1].Attempt != 2 {
		t.Fatalf("second attempt %+v", ds[1])
	}
	if ds[2].Outcome != jobs.DeliveryDelivered || ds[2].StatusCode != 204 || ds[2].Attempt != 3 || ds[2].NextRetryAt != nil {
		t.Fatalf("third attempt %+v", ds[2])
	}
}

// TestWebhookSlowReceiverDoesNotSlowTheJob: while the receiver does not
// answer, the job succeeds and its completed event keeps being retried.
func TestWebhookSlowReceiverDoesNotSlowTheJob(t *testing.T) {
	s, _ := webhookStack(t, false, func(c *app.Config) {
		c.Webhooks.ResponseTimeout = 300 * time.Millisecond
	})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	rc := newReceiver(t, nil, func(_ int, _ *hookRequest, req *http.Request) int {
		select {
		case <-req.Context().Done():
		case <-release:
		}
		return http.StatusOK
	})
	sub := s.submitWebhook(t, "wh-report", `{"n":50,"result":"x"}`, webhook.Spec{URL: rc.srv.URL, Events: webhook.Events})
	s.waitState(t, sub, jobs.StateSucceeded)
	waitfor.True(t, 10*time.Second, func() bool {
		for _, d := range s.deliveries(t, sub) {
			if d.Event == "completed" && d.Outcome == jobs.DeliveryRetrying && d.Attempt >= 2 {
				return true
			}
		}
		return false
	})
	for _, d := range s.deliveries(t, sub) {
		if d.Outcome == jobs.DeliveryDelivered {
			t.Fatalf("a delivery to a receiver that never answers: %+v", d)
		}
	}
}

// TestWebhookRefusedAtConnect: with the address checks on, a webhook URL
// to loopback planted in the record (as if it had passed the check at
// submit and then resolved elsewhere) is refused when the deliverer
// connects: the attempts say so and the receiver sees nothing.
func TestWebhookRefusedAtConnect(t *testing.T) {
	s, _ := webhookStack(t, true, nil)
	rc := newReceiver(t, nil, nil)
	sub := s.submitWebhook(t, "wh-report", `{"n":1,"result":"x"}`, webhook.Spec{URL: rc.srv.URL, Events: []string{"started", "completed"}})
	s.waitState(t, sub, jobs.StateSucceeded)
	var ds []jobs.Delivery
	waitfor.True(t, 10*time.Second, func() bool {
		ds = s.deliveries(t, sub)
		n := 0
		for _, d := range ds {
			if d.Event == "completed" {
				n++
			}
		}
		return n >= 2
	})
	for _, d := range ds {
		if d.Outcome != jobs.DeliveryRetrying || d.StatusCode != 0 || !strings.Contains(d.Error, "refused") || strings.Contains(d.Error, rc.srv.URL) {
			t.Fatalf("attempt to a refused address: %+v", d)
		}
	}
	if n := len(rc.requests()); n != 0 {
		t.Fatalf("the receiver behind a refused address got %d requests", n)
	}
}

// TestWebhookDeliveriesRefusals: GET /deliveries needs a token for the job.
func TestWebhookDeliveriesRefusals(t *testing.T) {
	s, _ := webhookStack(t, false, nil)
	rc := newReceiver(t, nil, nil)
	a := s.submitWebhook(t, "wh-report", `{"n":1,"result":"x"}`, webhook.Spec{URL: rc.srv.URL, Events: []string{"completed"}})
	b := s.submitWebhook(t, "wh-report", `{"n":1,"result":"x"}`, webhook.Spec{URL: rc.srv.URL, Events: []string{"completed"}})
	s.waitState(t, a, jobs.StateSucceeded)
	for _, tc := range []struct {
		name, token string
		status      int
		problem     string
	}{
		{"no token", "", 401, ""},
		{"another job's token", b.Token, 403, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := do(t, "GET", s.progress.URL+"/v1/jobs/"+a.ID+"/deliveries", tc.token, nil)
			if resp.StatusCode != tc.status || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") {
				t.Fatalf("%d %s, want %d problem", resp.StatusCode, resp.Header.Get("Content-Type"), tc.status)
			}
		})
	}
}

// TestWebhookReceiverExamples runs the README's receivers for real: the Go
// program in examples/webhook-receiver verifies and prints a job's
// completed event, and verify.sh (openssl) accepts a request as sent and
// refuses it with one byte of its body changed.
func TestWebhookReceiverExamples(t *testing.T) {
	s, _ := webhookStack(t, false, nil)
	jwks := s.api.URL + "/.well-known/jwks.json"
	waitfor.True(t, 10*time.Second, func() bool {
		resp, err := http.Get(jwks)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), `"kind":"webhook"`)
	})

	t.Run("go", func(t *testing.T) {
		bin := filepath.Join(t.TempDir(), "webhook-receiver")
		build := exec.Command("go", "build", "-o", bin, ".")
		build.Dir = "../examples/webhook-receiver"
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build the example receiver: %v\n%s", err, out)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		var out syncbuf.Buffer
		cmd := exec.Command(bin, "-jwks", jwks, "-addr", addr)
		cmd.Stdout = &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		sub := s.submitWebhook(t, "wh-report", `{"n":3,"result":"x"}`, webhook.Spec{URL: "http://" + addr + "/hook", Events: webhook.Events})
		waitfor.True(t, 20*time.Second, func() bool {
			return strings.Contains(out.String(), "verified job.completed "+sub.ID+" succeeded 100% result http")
		})
		if !strings.Contains(out.String(), "verified job.started "+sub.ID) {
			t.Fatalf("the example receiver printed:\n%s", out.String())
		}
	})

	t.Run("shell", func(t *testing.T) {
		for _, tool := range []string{"sh", "curl", "jq", "xxd", "openssl"} {
			if _, err := exec.LookPath(tool); err != nil {
				if redistest.Strict() {
					t.Fatalf("%s is required (CLAIMCHECK_TEST_STRICT=1)", tool)
				}
				t.Skipf("%s not found: the shell receiver recipe needs it", tool)
			}
		}
		rc := newReceiver(t, nil, nil)
		sub := s.submitWebhook(t, "wh-report", `{"n":1,"result":"x"}`, webhook.Spec{URL: rc.srv.URL, Events: []string{"completed"}})
		waitfor.True(t, 20*time.Second, func() bool { return len(rc.find("job.completed")) == 1 })
		r := rc.find("job.completed")[0]
		run := func(body []byte) (string, error) {
			f := filepath.Join(t.TempDir(), "body")
			if err := os.WriteFile(f, body, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command("sh", "../examples/webhook-receiver/verify.sh", jwks, r.ID, r.Timestamp, r.Signature, f).CombinedOutput()
			return string(out), err
		}
		if out, err := run(r.Body); err != nil || strings.TrimSpace(out) != "verified" {
			t.Fatalf("verify.sh on the job %s's completed request: %v %s", sub.ID, err, out)
		}
		tampered := append([]byte(nil), r.Body...)
		tampered[len(tampered)-2] ^= 1
		if out, err := run(tampered); err == nil || !strings.Contains(out, "no v1a signature verifies") {
			t.Fatalf("verify.sh accepted a changed body: %v %s", err, out)
		}
	})
}

// TestWebhookGoneUnsubscribes: a receiver answering 410 to the started
// event gets nothing more of that job: no retry, and no completed event.
func TestWebhookGoneUnsubscribes(t *testing.T) {
	s, _ := webhookStack(t, false, nil)
	rc := newReceiver(t, nil, func(int, *hookRequest, *http.Request) int { return http.StatusGone })
	sub := s.submitWebhook(t, "wh-report", `{"n":20,"every_ms":10,"result":"x"}`, webhook.Spec{URL: rc.srv.URL, Events: []string{"started", "completed"}})
	s.waitState(t, sub, jobs.StateSucceeded)
	insp := asynq.NewInspectorFromRedisClient(s.rdb)
	waitfor.True(t, 10*time.Second, func() bool { // every delivery task has run its course
		q, err := insp.GetQueueInfo(delivery.Queue)
		return err == nil && q.Pending+q.Active+q.Scheduled+q.Retry == 0
	})
	if reqs := rc.requests(); len(reqs) != 1 || reqs[0].Payload.Type != "job.started" {
		t.Fatalf("the receiver got %d requests after answering 410 (%v)", len(reqs), ids(reqs))
	}
	for _, d := range s.deliveries(t, sub) {
		switch {
		case d.Event == "started" && (d.Outcome != jobs.DeliveryFailed || d.StatusCode != 410 || d.NextRetryAt != nil):
			t.Fatalf("started after 410: %+v", d)
		case d.Event == "completed" && d.Outcome != jobs.DeliveryDropped:
			t.Fatalf("completed after 410: %+v", d)
		}
	}
}

// TestWebhookSubmittedThroughTheAPI: a webhook given at POST /v1/jobs (the
// api's check passes with private addresses allowed) reaches the receiver,
// signed, with the record and a live link.
func TestWebhookSubmittedThroughTheAPI(t *testing.T) {
	s, _ := webhookStack(t, false, nil)
	v := startNodeVerifier(t, s.api.URL+"/.well-known/jwks.json")
	rc := newReceiver(t, v, nil)
	sub := s.submit(t, `{"type":"wh-report","input":{"n":2,"result":"via the api"},"webhook":{"url":"`+rc.srv.URL+`/h","events":["started","completed"]}}`)
	s.waitState(t, sub, jobs.StateSucceeded)
	waitfor.True(t, 20*time.Second, func() bool { return len(rc.find("job.completed")) == 1 })
	allVerified(t, rc.requests())
	if n := len(rc.find("job.started")); n != 1 {
		t.Fatalf("%d started events", n)
	}
	c := rc.find("job.completed")[0]
	if c.Payload.Data.Job.ID != sub.ID || c.Payload.Data.Result == nil {
		t.Fatalf("completed %+v", c.Payload.Data)
	}
	resp := do(t, "GET", c.Payload.Data.Result.URL, "", nil)
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(b) != "via the api" {
		t.Fatalf("link: %d %q", resp.StatusCode, b)
	}
}

// TestWebhookLinkKeySignsNoLongLinks: the deliverer's links live 10 min,
// so the progress service refuses a link of its issuer and key that lives
// longer: a stolen webhook-link key (every worker holds it) cannot sign a
// link that outlives the ones it was made for. Within 10 min it works.
func TestWebhookLinkKeySignsNoLongLinks(t *testing.T) {
	s, _ := webhookStack(t, false, nil)
	rc := newReceiver(t, nil, nil)
	sub := s.submitWebhook(t, "wh-report", `{"n":1,"result":"x"}`, webhook.Spec{URL: rc.srv.URL, Events: []string{"completed"}})
	s.waitState(t, sub, jobs.StateSucceeded)
	keys, err := tokens.LoadDir(s.cfg.WebhookLinkKeyDir)
	if err != nil {
		t.Fatal(err)
	}
	m := &tokens.LinkMinter{Keys: keys, Issuer: delivery.LinkIssuer}
	get := func(ttl time.Duration) *http.Response {
		link, _, err := m.MintLink(sub.ID, 0, "", "attachment", ttl)
		if err != nil {
			t.Fatal(err)
		}
		return do(t, "GET", s.progress.URL+"/v1/results/"+sub.ID+"?sig="+link, "", nil)
	}
	resp := get(time.Hour)
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("an hour-long webhook link: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if p := decode[struct{ Type string }](t, resp); p.Type != "urn:claimcheck:problem:invalid-token" {
		t.Fatalf("an hour-long webhook link: problem %q", p.Type)
	}
	if resp := get(delivery.DefaultLinkTTL); resp.StatusCode != http.StatusOK {
		t.Fatalf("a 10 min webhook link: %d", resp.StatusCode)
	}
	// The deliverer never mints one-time links: one its key signed would
	// skip the per-job cap on them, so progress refuses it.
	once, _, err := m.Mint(sub.ID, 0, tokens.LinkOptions{Disposition: "attachment", TTL: delivery.DefaultLinkTTL, Once: true})
	if err != nil {
		t.Fatal(err)
	}
	if resp := do(t, "GET", s.progress.URL+"/v1/results/"+sub.ID+"?sig="+once, "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a one-time webhook link: %d, want 401", resp.StatusCode)
	}
}
