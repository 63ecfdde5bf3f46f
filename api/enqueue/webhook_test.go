package enqueue_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/api/enqueue"
	"github.com/claimcheck/claimcheck/api/problem"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/webhook"
)

// stalledDNS is a resolver whose DNS server never answers: a name not in
// the hosts file waits until the lookup's deadline. (Literal addresses and
// "localhost", which /etc/hosts maps to 127.0.0.1 here, need no DNS.)
var stalledDNS = &net.Resolver{
	PreferGo: true,
	Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	},
}

func withWebhooks(g *webhook.Guard) func(*enqueue.Config) {
	return func(c *enqueue.Config) {
		c.Webhooks = g
		c.WebhookResolveTimeout = 200 * time.Millisecond
	}
}

// assertNothingCreated: no job record, no idempotency claim, no place in
// the owner's indexes, no task.
func assertNothingCreated(t *testing.T, f *fixture) {
	t.Helper()
	for _, pattern := range []string{jobs.KeyPrefixJob + "*", jobs.KeyPrefixIdempotency + "*", "cc:owner-*", "asynq:*"} {
		if left := redistest.Keys(t, f.rdb, pattern); len(left) != 0 {
			t.Fatalf("a refused submission left %v", left)
		}
	}
}

func TestWebhookRefusedAtSubmit(t *testing.T) {
	f := newFixtureWith(t, redistest.Client(t), nil, false, withWebhooks(&webhook.Guard{Resolver: stalledDNS}))
	for _, tc := range []struct {
		name    string
		webhook string // the "webhook" member
		pointer string
		detail  string
	}{
		{"loopback", `{"url":"http://127.0.0.1:9000/hook"}`, "/webhook/url", "webhook.url: is a loopback address; the operator can allow private webhook addresses with --webhook-allow-private"},
		{"loopback v6", `{"url":"http://[::1]/hook"}`, "/webhook/url", "is a loopback address"},
		{"private", `{"url":"https://10.0.0.1/hook"}`, "/webhook/url", "is a private address"},
		{"metadata", `{"url":"http://169.254.169.254/latest/meta-data/"}`, "/webhook/url", "is a cloud metadata address"},
		{"mapped loopback", `{"url":"http://[::ffff:127.0.0.1]/"}`, "/webhook/url", "is a loopback address"},
		{"localhost", `{"url":"http://localhost/"}`, "/webhook/url", "webhook.url: resolves to a loopback address (127.0.0.1); the operator can allow"},
		{"does not resolve (slow DNS)", `{"url":"https://hooks.example.test/x"}`, "/webhook/url", "webhook.url: does not resolve"},
		{"ftp", `{"url":"ftp://example.org/"}`, "/webhook/url", "webhook.url: must be http or https"},
		{"user info", `{"url":"https://user:secret@example.org/"}`, "/webhook/url", "webhook.url: must not carry user info"},
		{"no url", `{"events":["completed"]}`, "/webhook/url", "webhook.url: is required"},
		{"unknown event", `{"url":"https://example.org/","events":["finished"]}`, "/webhook/events", `webhook.events: unknown event "finished"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := f.post(`{"type":"echo","input":{"n":1},"webhook":`+tc.webhook+`}`, "Idempotency-Key", "wh-"+tc.name)
			var body struct {
				Type   string            `json:"type"`
				Detail string            `json:"detail"`
				Errors []jobs.FieldError `json:"errors"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != http.StatusUnprocessableEntity ||
				rec.Header().Get("Content-Type") != problem.ContentType || body.Type != problem.TypePrefix+"invalid-request" ||
				len(body.Errors) != 1 || body.Errors[0].Pointer != tc.pointer || !strings.Contains(body.Detail, tc.detail) {
				t.Fatalf("%d %s %s, want 422 invalid-request at %s saying %q", rec.Code, rec.Header().Get("Content-Type"), rec.Body, tc.pointer, tc.detail)
			}
			if strings.Contains(rec.Body.String(), "secret") || strings.Contains(rec.Body.String(), "/hook") {
				t.Fatalf("the problem echoes the URL: %s", rec.Body)
			}
			assertNothingCreated(t, f)
		})
	}
}

func TestWebhookAccepted(t *testing.T) {
	for _, tc := range []struct {
		name   string
		allow  bool
		url    string
		events string
		want   []string
	}{
		// A public literal needs no DNS, so the default guard passes it.
		{name: "public, default events", url: "https://93.184.215.14/hooks/s3cr3t-token?sig=abc", want: []string{"completed"}},
		{name: "loopback allowed", allow: true, url: "http://127.0.0.1:9000/hooks/s3cr3t-token", events: `,"events":["log","completed","started","log"]`, want: []string{"started", "log", "completed"}},
		{name: "localhost allowed", allow: true, url: "http://localhost:9000/hooks/s3cr3t-token", events: `,"events":["progress"]`, want: []string{"progress"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixtureWith(t, redistest.Client(t), nil, false, withWebhooks(&webhook.Guard{AllowPrivate: tc.allow, Resolver: stalledDNS}))
			rec := f.post(`{"type":"echo","input":{"n":1},"webhook":{"url":"`+tc.url+`"`+tc.events+`}}`, "Idempotency-Key", "k")
			if rec.Code != http.StatusAccepted {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
			var sub enqueue.SubmitResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &sub); err != nil {
				t.Fatal(err)
			}
			if sub.Webhook == nil || !slices.Equal(sub.Webhook.Events, tc.want) {
				t.Fatalf("response webhook %+v, want events %v", sub.Webhook, tc.want)
			}
			if strings.Contains(rec.Body.String(), "s3cr3t") {
				t.Fatalf("the 202 echoes the webhook URL: %s", rec.Body)
			}
			job, err := jobs.NewStore(f.rdb, nil).Get(t.Context(), sub.ID)
			if err != nil {
				t.Fatal(err)
			}
			if job.Webhook == nil || job.Webhook.URL != tc.url || !slices.Equal(job.Webhook.Events, tc.want) {
				t.Fatalf("record's webhook %+v, want %s %v", job.Webhook, tc.url, tc.want)
			}
			// The job as JSON (what the progress service shows) and the
			// owner's listing do not carry the URL either.
			shown, _ := json.Marshal(job)
			list := httptest.NewRecorder()
			req := httptest.NewRequest("GET", "/v1/jobs", nil)
			req.Header.Set("Authorization", "Bearer "+f.apiKey)
			f.handler.ServeHTTP(list, req)
			if list.Code != http.StatusOK || !strings.Contains(list.Body.String(), sub.ID) {
				t.Fatalf("list: %d %s", list.Code, list.Body)
			}
			if strings.Contains(string(shown), "s3cr3t") || strings.Contains(list.Body.String(), "s3cr3t") {
				t.Fatalf("the job shows its webhook URL: %s / %s", shown, list.Body)
			}

			// The webhook is part of the body the Idempotency-Key is held
			// to: the same body replays the job (with its events), another
			// URL is a different request.
			again := f.post(`{"type":"echo","input":{"n":1},"webhook":{"url":"`+tc.url+`"`+tc.events+`}}`, "Idempotency-Key", "k")
			var replayed enqueue.SubmitResponse
			json.Unmarshal(again.Body.Bytes(), &replayed)
			if again.Code != http.StatusAccepted || again.Header().Get("Idempotent-Replayed") != "true" || replayed.ID != sub.ID ||
				replayed.Webhook == nil || !slices.Equal(replayed.Webhook.Events, tc.want) {
				t.Fatalf("replay: %d %v %s", again.Code, again.Header(), again.Body)
			}
			other := f.post(`{"type":"echo","input":{"n":1},"webhook":{"url":"https://93.184.215.14/other"}}`, "Idempotency-Key", "k")
			if other.Code != http.StatusUnprocessableEntity || !strings.Contains(other.Body.String(), "idempotency-key-reused") {
				t.Fatalf("another webhook under the key: %d %s", other.Code, other.Body)
			}
		})
	}
}

// TestNoWebhookNoSummary: a job without a webhook has none in its 202, and
// none in its record.
func TestNoWebhookNoSummary(t *testing.T) {
	f := newFixture(t, nil)
	rec := f.post(`{"type":"echo","input":{"n":1}}`)
	var sub map[string]json.RawMessage
	if err := json.Unmarshal(rec.Body.Bytes(), &sub); err != nil || rec.Code != http.StatusAccepted {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if _, ok := sub["webhook"]; ok {
		t.Fatalf("webhook in a 202 of a job without one: %s", rec.Body)
	}
	var id string
	json.Unmarshal(sub["id"], &id)
	job, err := jobs.NewStore(f.rdb, nil).Get(t.Context(), id)
	if err != nil || job.Webhook != nil {
		t.Fatalf("record: %+v %v", job, err)
	}
}

// TestWebhookReplayNotRechecked: a retry of an accepted submission (same
// Idempotency-Key, same body) gets its job even when its webhook URL would
// be refused now (the operator's setting changed, or its DNS did), rather
// than a 422 saying nothing was accepted while the job runs. A new key or
// another body is checked as any submission.
func TestWebhookReplayNotRechecked(t *testing.T) {
	g := &webhook.Guard{AllowPrivate: true, Resolver: stalledDNS}
	f := newFixtureWith(t, redistest.Client(t), nil, false, withWebhooks(g))
	body := `{"type":"echo","input":{"n":1},"webhook":{"url":"http://127.0.0.1:9000/hook"}}`
	first := f.post(body, "Idempotency-Key", "k")
	var sub enqueue.SubmitResponse
	if err := json.Unmarshal(first.Body.Bytes(), &sub); err != nil || first.Code != http.StatusAccepted {
		t.Fatalf("first: %d %s", first.Code, first.Body)
	}
	g.AllowPrivate = false // requests are served one at a time here

	again := f.post(body, "Idempotency-Key", "k")
	var replayed enqueue.SubmitResponse
	json.Unmarshal(again.Body.Bytes(), &replayed)
	if again.Code != http.StatusAccepted || again.Header().Get("Idempotent-Replayed") != "true" || replayed.ID != sub.ID {
		t.Fatalf("retry: %d %v %s", again.Code, again.Header(), again.Body)
	}
	for _, tc := range []struct{ name, body, key string }{
		{"same body, new key", body, "k2"},
		{"other body, same key", `{"type":"echo","input":{"n":2},"webhook":{"url":"http://127.0.0.1:9000/hook"}}`, "k"},
		{"same body, no key", body, ""},
	} {
		rec := f.post(tc.body, "Idempotency-Key", tc.key)
		if rec.Code != http.StatusUnprocessableEntity || !strings.Contains(rec.Body.String(), "webhook.url: is a loopback address") {
			t.Fatalf("%s: %d %s", tc.name, rec.Code, rec.Body)
		}
	}
	if left := redistest.Keys(t, f.rdb, jobs.KeyPrefixJob+"*"); len(left) != 1 || !strings.Contains(left[0], sub.ID) {
		t.Fatalf("records %v, want only %s", left, sub.ID)
	}
	if claims := redistest.Keys(t, f.rdb, jobs.KeyPrefixIdempotency+"*"); len(claims) != 1 {
		t.Fatalf("claims %v, want only the first submission's", claims)
	}
}
