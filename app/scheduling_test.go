package app_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
)

// TestFinding5HeldJobsThroughTheServices: with a cap of one running job,
// ann's second and third jobs wait queued, and the progress service shows
// why (hold_reason, checked against the OpenAPI document like every
// response here). A held job can be cancelled like any queued one; when
// the running job ends, the next held one starts without waiting out its
// hold delay.
func TestFinding5HeldJobsThroughTheServices(t *testing.T) {
	s := newStack(t, func(c *app.Config) {
		c.Worker.MaxRunningJobs = 1
		c.Worker.HoldDelay = func(time.Duration) time.Duration { return time.Hour }
	})
	first := s.submit(t, `{"type":"block"}`)
	s.waitState(t, first, jobs.StateRunning)
	second, third := s.submit(t, `{"type":"block"}`), s.submit(t, `{"type":"block"}`)
	for _, sub := range []submitted{second, third} {
		var j jobs.Job
		waitfor.True(t, 10*time.Second, func() bool {
			j = s.get(t, sub)
			return j.HoldReason != nil
		})
		if j.State != jobs.StateQueued || j.Attempts != 0 || !strings.Contains(*j.HoldReason, "at most 1 run at once") {
			t.Fatalf("held job = %+v (%q)", j, *j.HoldReason)
		}
	}
	cancel := func(sub submitted) {
		t.Helper()
		if r := do(t, "POST", s.progress.URL+"/v1/jobs/"+sub.ID+"/cancel", sub.Token, nil); r.StatusCode != http.StatusOK && r.StatusCode != http.StatusAccepted {
			t.Fatalf("cancel: %d", r.StatusCode)
		}
	}
	cancel(second)
	if j := s.waitState(t, second, jobs.StateCanceled); j.HoldReason != nil || j.Attempts != 0 {
		t.Fatalf("cancelled held job = %+v", j)
	}
	cancel(first)
	s.waitState(t, first, jobs.StateCanceled)
	if j := s.waitState(t, third, jobs.StateRunning); j.HoldReason != nil || j.Attempts != 1 {
		t.Fatalf("started held job = %+v", j)
	}
	cancel(third)
	s.waitState(t, third, jobs.StateCanceled)
}

// TestFinding5SessionCannotGetPriority: a signed-in user can neither
// submit at high priority nor give a key of theirs jobs:priority; the
// operator setting --priority-for-all opens high priority to everyone.
func TestFinding5SessionCannotGetPriority(t *testing.T) {
	s := newStack(t)
	session, _ := s.login(t)
	r := do(t, "POST", s.api.URL+"/v1/jobs", session, strings.NewReader(`{"type":"count","priority":"high"}`))
	if p := decode[problemBody](t, r); r.StatusCode != http.StatusForbidden || p.Type != "urn:claimcheck:problem:insufficient-scope" || !strings.Contains(p.Detail, "jobs:priority") {
		t.Fatalf("session at high priority: %d %+v", r.StatusCode, p)
	}
	r = do(t, "POST", s.api.URL+"/v1/api-keys", session, strings.NewReader(`{"name":"mine","scopes":["jobs:submit","jobs:priority"]}`))
	if p := decode[problemBody](t, r); r.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(p.Detail, "jobs:priority") {
		t.Fatalf("self-service key with jobs:priority: %d %+v", r.StatusCode, p)
	}
	listed := decode[struct {
		APIKeys []keyBody `json:"api_keys"`
	}](t, do(t, "GET", s.api.URL+"/v1/api-keys", session, nil))
	jobsOf := decode[struct {
		Jobs []jobs.Job `json:"jobs"`
	}](t, do(t, "GET", s.api.URL+"/v1/jobs", session, nil))
	if len(listed.APIKeys) != 1 || len(jobsOf.Jobs) != 0 { // the stack's own key only
		t.Fatalf("refusals changed something: keys %+v, jobs %+v", listed.APIKeys, jobsOf.Jobs)
	}

	open := newStack(t, func(c *app.Config) { c.PriorityForAll = true })
	session, _ = open.login(t)
	if r := do(t, "POST", open.api.URL+"/v1/jobs", session, strings.NewReader(`{"type":"count","priority":"high"}`)); r.StatusCode != http.StatusAccepted {
		t.Fatalf("with --priority-for-all: %d", r.StatusCode)
	}
}
