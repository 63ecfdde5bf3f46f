package app_test

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"

	"github.com/claimcheck/claimcheck/api/ratelimit"
	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/tokens"
)

type keyBody struct {
	ID        string     `json:"id"`
	Key       string     `json:"key"`
	Prefix    string     `json:"prefix"`
	Name      string     `json:"name"`
	Scopes    []string   `json:"scopes"`
	LastUsed  *time.Time `json:"last_used"`
	ExpiresAt *time.Time `json:"expires_at"`
}

func TestAPIKeysOverHTTP(t *testing.T) {
	s := newStack(t)
	session, cookie := s.login(t)

	resp := do(t, "POST", s.api.URL+"/v1/api-keys", session, strings.NewReader(`{"name":"dashboard","scopes":["jobs:read"],"expires_in":"1h"}`))
	created := decode[keyBody](t, resp)
	if resp.StatusCode != 201 || !strings.HasPrefix(created.Key, identity.APIKeyPrefix) || !strings.HasPrefix(created.Key, created.Prefix) ||
		!slices.Equal(created.Scopes, []string{"jobs:read"}) || created.ExpiresAt == nil || time.Until(*created.ExpiresAt) > time.Hour {
		t.Fatalf("create: %d %+v", resp.StatusCode, created)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("a response with a secret has Cache-Control %q", cc)
	}

	// The read-only key lists jobs but cannot submit, and says why.
	if r := do(t, "GET", s.api.URL+"/v1/jobs", created.Key, nil); r.StatusCode != 200 {
		t.Fatalf("read-only key listing jobs: %d", r.StatusCode)
	}
	r := do(t, "POST", s.api.URL+"/v1/jobs", created.Key, strings.NewReader(`{"type":"count"}`))
	if p := decode[problemBody](t, r); r.StatusCode != 403 || p.Type != "urn:claimcheck:problem:insufficient-scope" ||
		!strings.Contains(r.Header.Get("WWW-Authenticate"), `error="insufficient_scope"`) {
		t.Fatalf("read-only key submitting: %d %+v %q", r.StatusCode, p, r.Header.Get("WWW-Authenticate"))
	}

	// The list shows prefix, name, scopes and last use, never a secret.
	resp = do(t, "GET", s.api.URL+"/v1/api-keys", session, nil)
	list := decode[struct {
		APIKeys []keyBody `json:"api_keys"`
	}](t, resp)
	i := slices.IndexFunc(list.APIKeys, func(k keyBody) bool { return k.ID == created.ID })
	if resp.StatusCode != 200 || i < 0 || list.APIKeys[i].Key != "" || list.APIKeys[i].Prefix != created.Prefix ||
		list.APIKeys[i].Name != "dashboard" || list.APIKeys[i].LastUsed == nil {
		t.Fatalf("list: %d %+v", resp.StatusCode, list)
	}

	// An API key cannot manage keys; bad input is refused clearly.
	for _, tc := range []struct {
		method, cred, body string
		status             int
		problem            string
	}{
		{"GET", s.apiKey, "", 403, "session-required"},
		{"POST", s.apiKey, `{"name":"x"}`, 403, "session-required"},
		{"POST", session, `{"name":"x","scopes":["jobs:everything"]}`, 422, "invalid-request"},
		{"POST", session, `{"name":"x","expires_in":"soon"}`, 422, "invalid-request"},
		{"POST", session, `{"name":"x","admin":true}`, 400, "bad-request"},
		{"POST", session, `{"name":"` + strings.Repeat("x", 20<<10) + `"}`, 413, "body-too-large"},
	} {
		var body *strings.Reader
		if tc.body != "" {
			body = strings.NewReader(tc.body)
		}
		var resp *http.Response
		if body != nil {
			resp = do(t, tc.method, s.api.URL+"/v1/api-keys", tc.cred, body)
		} else {
			resp = do(t, tc.method, s.api.URL+"/v1/api-keys", tc.cred, nil)
		}
		if p := decode[problemBody](t, resp); resp.StatusCode != tc.status || p.Type != "urn:claimcheck:problem:"+tc.problem {
			t.Errorf("%s %.40s: %d %+v, want %d %s", tc.method, tc.body, resp.StatusCode, p, tc.status, tc.problem)
		}
	}
	// A cookie-authenticated create needs an Origin naming this site.
	req, _ := http.NewRequest("POST", s.api.URL+"/v1/api-keys", strings.NewReader(`{"name":"csrf"}`))
	req.AddCookie(cookie)
	req.Header.Set("Origin", "https://evil.example")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 403 {
		t.Fatalf("cross-site key creation: %v %v", resp.StatusCode, err)
	}

	// Delete revokes at once; the next request with the key is refused.
	if r := do(t, "DELETE", s.api.URL+"/v1/api-keys/"+created.ID, session, nil); r.StatusCode != 204 {
		t.Fatalf("delete: %d", r.StatusCode)
	}
	if r := do(t, "GET", s.api.URL+"/v1/jobs", created.Key, nil); r.StatusCode != 401 || r.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("revoked key: %d", r.StatusCode)
	}
	if r := do(t, "DELETE", s.api.URL+"/v1/api-keys/"+created.ID, session, nil); r.StatusCode != 404 {
		t.Fatalf("second delete: %d", r.StatusCode)
	}
}

func TestLoginBruteForceIsRateLimited(t *testing.T) {
	s := newStack(t, func(c *app.Config) {
		l := ratelimit.DefaultLimits()
		l.LoginPerUser = redis_rate.PerMinute(3)
		c.Limits = &l
	})
	for i := range 3 {
		r := do(t, "POST", s.api.URL+"/v1/sessions", "", strings.NewReader(`{"username":"ann","password":"guess `+strconv.Itoa(i)+`"}`))
		if r.StatusCode != 401 {
			t.Fatalf("guess %d: %d", i, r.StatusCode)
		}
	}
	// The per-user backstop (here 3 a minute) is spent: even the right
	// password waits now. Under the defaults one address cannot spend it
	// (TestFinding4AttackerCannotLockOwnerOut).
	r := do(t, "POST", s.api.URL+"/v1/sessions", "", strings.NewReader(`{"username":"ann","password":"correct horse"}`))
	p := decode[problemBody](t, r)
	retry, err := strconv.Atoi(r.Header.Get("Retry-After"))
	if r.StatusCode != 429 || p.Type != "urn:claimcheck:problem:rate-limited" || err != nil || retry < 1 || retry > 60 {
		t.Fatalf("4th attempt: %d %+v Retry-After %q", r.StatusCode, p, r.Header.Get("Retry-After"))
	}
	// The limit is per user: someone else signs in.
	if err := identity.NewUsers(s.rdb, cheapArgon2, nil).Add(context.Background(), "bob", "battery staple"); err != nil {
		t.Fatal(err)
	}
	if r := do(t, "POST", s.api.URL+"/v1/sessions", "", strings.NewReader(`{"username":"bob","password":"battery staple"}`)); r.StatusCode != 201 {
		t.Fatalf("bob: %d", r.StatusCode)
	}
}

func TestSubmissionRateLimitAndQuota(t *testing.T) {
	s := newStack(t, func(c *app.Config) {
		l := ratelimit.DefaultLimits()
		l.Submit = redis_rate.Limit{Rate: 3, Burst: 3, Period: time.Minute}
		c.Limits = &l
		c.MaxActiveJobs = 2
	})
	a, b := s.submit(t, `{"type":"block"}`), s.submit(t, `{"type":"block"}`)
	r := do(t, "POST", s.api.URL+"/v1/jobs", s.apiKey, strings.NewReader(`{"type":"block"}`))
	if p := decode[problemBody](t, r); r.StatusCode != 429 || p.Type != "urn:claimcheck:problem:quota-exceeded" {
		t.Fatalf("third active job: %d %+v", r.StatusCode, p)
	}
	// Cancelling one frees a slot…
	if r := do(t, "POST", s.progress.URL+a.Links.Cancel, a.Token, nil); r.StatusCode >= 300 {
		t.Fatalf("cancel: %d", r.StatusCode)
	}
	s.waitState(t, a, jobs.StateCanceled)
	// …but the submission budget (3 a minute) is spent by now.
	r = do(t, "POST", s.api.URL+"/v1/jobs", s.apiKey, strings.NewReader(`{"type":"count"}`))
	if p := decode[problemBody](t, r); r.StatusCode != 429 || p.Type != "urn:claimcheck:problem:rate-limited" || r.Header.Get("Retry-After") == "" {
		t.Fatalf("4th submission in a minute: %d %+v", r.StatusCode, p)
	}
	_ = b
}

func TestListJobsAndReissueTokens(t *testing.T) {
	s := newStack(t)
	ctx := context.Background()
	var subs []submitted
	for range 5 {
		subs = append(subs, s.submit(t, `{"type":"count"}`))
	}
	for _, sub := range subs {
		s.waitState(t, sub, jobs.StateSucceeded)
	}
	bobKey, _, err := identity.NewAPIKeys(s.rdb, nil).Create(ctx, "bob", "", "")
	if err != nil {
		t.Fatal(err)
	}
	bobJob := do(t, "POST", s.api.URL+"/v1/jobs", bobKey.Reveal(), strings.NewReader(`{"type":"count"}`))
	if bobJob.StatusCode != 202 {
		t.Fatalf("bob submits: %d", bobJob.StatusCode)
	}

	type listBody struct {
		Jobs []struct {
			ID    string `json:"id"`
			State string `json:"state"`
			Token string `json:"token"`
			Links struct{ Self string }
		} `json:"jobs"`
		NextCursor string `json:"next_cursor"`
	}
	var seen []string
	url := s.api.URL + "/v1/jobs?limit=2&state=succeeded"
	for pages := 0; url != ""; pages++ {
		r := do(t, "GET", url, s.apiKey, nil)
		page := decode[listBody](t, r)
		if r.StatusCode != 200 || pages > 3 {
			t.Fatalf("page %d: %d", pages, r.StatusCode)
		}
		for _, j := range page.Jobs {
			if j.State != "succeeded" || j.Token != "" || !strings.HasSuffix(j.Links.Self, "/v1/jobs/"+j.ID) {
				t.Fatalf("listed %+v", j)
			}
			seen = append(seen, j.ID)
		}
		url = ""
		if page.NextCursor != "" {
			link := r.Header.Get("Link")
			if !strings.Contains(link, `rel="next"`) || !strings.Contains(link, page.NextCursor) {
				t.Fatalf("Link %q for cursor %q", link, page.NextCursor)
			}
			url = s.api.URL + "/v1/jobs?limit=2&state=succeeded&cursor=" + page.NextCursor
		}
	}
	var want []string
	for _, sub := range slices.Backward(subs) {
		want = append(want, sub.ID)
	}
	if !slices.Equal(seen, want) {
		t.Fatalf("listed %v, want ann's jobs newest first %v", seen, want)
	}
	for _, q := range []string{"?state=done", "?limit=0", "?limit=101", "?cursor=x"} {
		if r := do(t, "GET", s.api.URL+"/v1/jobs"+q, s.apiKey, nil); r.StatusCode != 400 {
			t.Errorf("GET /v1/jobs%s: %d", q, r.StatusCode)
		}
	}

	// A narrower token for sharing: it reads, but cannot cancel.
	sub := subs[0]
	r := do(t, "POST", s.api.URL+"/v1/jobs/"+sub.ID+"/token", s.apiKey, strings.NewReader(`{"scope":"job:read","expires_in":"10m"}`))
	shared := decode[struct {
		Token     string    `json:"token"`
		Scope     string    `json:"scope"`
		ExpiresAt time.Time `json:"expires_at"`
	}](t, r)
	if r.StatusCode != 201 || shared.Scope != "job:read" || time.Until(shared.ExpiresAt) > 10*time.Minute {
		t.Fatalf("reissue: %d %+v", r.StatusCode, shared)
	}
	if r := do(t, "GET", s.progress.URL+sub.Links.Self, shared.Token, nil); r.StatusCode != 200 {
		t.Fatalf("shared token reading: %d", r.StatusCode)
	}
	if r := do(t, "GET", s.progress.URL+sub.Links.Result, shared.Token, nil); r.StatusCode != 403 {
		t.Fatalf("read-only token fetching the result: %d", r.StatusCode)
	}
	// Never wider: not beyond the job scopes, not past the original expiry.
	r = do(t, "POST", s.api.URL+"/v1/jobs/"+sub.ID+"/token", s.apiKey, strings.NewReader(`{"scope":"job:read job:admin"}`))
	if p := decode[problemBody](t, r); r.StatusCode != 403 || p.Type != "urn:claimcheck:problem:scope-too-wide" {
		t.Fatalf("wider scope: %d %+v", r.StatusCode, p)
	}
	r = do(t, "POST", s.api.URL+"/v1/jobs/"+sub.ID+"/token", s.apiKey, strings.NewReader(`{"expires_in":"8760h"}`))
	full := decode[struct {
		Scope     string    `json:"scope"`
		ExpiresAt time.Time `json:"expires_at"`
	}](t, r)
	if r.StatusCode != 201 || full.ExpiresAt.After(sub.TokenExpiresAt) || full.Scope != strings.Join(tokens.JobScopes, " ") {
		t.Fatalf("long reissue: %d %+v (original expires %v)", r.StatusCode, full, sub.TokenExpiresAt)
	}
	// A read-only credential cannot obtain job:cancel.
	roKey, _, _ := identity.NewAPIKeys(s.rdb, nil).CreateKey(ctx, identity.KeySpec{User: "ann", Scopes: []string{identity.ScopeJobsRead}})
	r = do(t, "POST", s.api.URL+"/v1/jobs/"+sub.ID+"/token", roKey.Reveal(), strings.NewReader(`{"scope":"job:cancel"}`))
	if r.StatusCode != 403 {
		t.Fatalf("read-only key asking for job:cancel: %d", r.StatusCode)
	}
	r = do(t, "POST", s.api.URL+"/v1/jobs/"+sub.ID+"/token", roKey.Reveal(), nil)
	if got := decode[struct{ Scope string }](t, r); r.StatusCode != 201 || strings.Contains(got.Scope, tokens.ScopeJobCancel) {
		t.Fatalf("read-only key's default reissue: %d %q", r.StatusCode, got.Scope)
	}
	// Someone else's job does not exist, as far as bob can tell.
	if r := do(t, "POST", s.api.URL+"/v1/jobs/"+sub.ID+"/token", bobKey.Reveal(), nil); r.StatusCode != 404 {
		t.Fatalf("bob reissuing ann's token: %d", r.StatusCode)
	}
}

func TestRevokeJobTokens(t *testing.T) {
	s := newStack(t)
	sub := s.submit(t, `{"type":"block"}`)
	shared := decode[struct{ Token string }](t, do(t, "POST", s.api.URL+"/v1/jobs/"+sub.ID+"/token", s.apiKey, strings.NewReader(`{"scope":"job:read"}`))).Token
	for _, tok := range []string{sub.Token, shared} {
		if r := do(t, "GET", s.progress.URL+"/v1/jobs/"+sub.ID, tok, nil); r.StatusCode != 200 {
			t.Fatalf("before revoking: %d", r.StatusCode)
		}
	}
	stream := openEvents(t, s.progress.URL+sub.Links.Events, sub.Token)
	stream.must(t, "state")
	r := do(t, "POST", s.api.URL+"/v1/jobs/"+sub.ID+"/revoke-tokens", s.apiKey, nil)
	fresh := decode[struct{ Token, Scope string }](t, r)
	if r.StatusCode != 201 || fresh.Scope != strings.Join(tokens.JobScopes, " ") {
		t.Fatalf("revoke-tokens: %d %+v", r.StatusCode, fresh)
	}
	// The progress service (another process here) caches job records and
	// hears of the revocation on Redis pub/sub: from then on — well under a
	// millisecond — every earlier token is refused, on every route, and its
	// open event stream ends.
	waitfor.True(t, time.Second, func() bool {
		return do(t, "GET", s.progress.URL+"/v1/jobs/"+sub.ID, sub.Token, nil).StatusCode == 401
	})
	for {
		ev, err := stream.next()
		if err == io.EOF {
			break
		}
		if err != nil || ev.Type == "done" {
			t.Fatalf("revoked token's stream: %+v %v", ev, err)
		}
	}
	for _, tc := range []struct{ tok, method, path string }{
		{sub.Token, "GET", "/v1/jobs/" + sub.ID},
		{sub.Token, "GET", "/v1/jobs/" + sub.ID + "/result"},
		{sub.Token, "POST", "/v1/jobs/" + sub.ID + "/cancel"},
		{shared, "GET", "/v1/jobs/" + sub.ID},
	} {
		r := do(t, tc.method, s.progress.URL+tc.path, tc.tok, nil)
		if p := decode[problemBody](t, r); r.StatusCode != 401 || p.Type != "urn:claimcheck:problem:invalid-token" || r.Header.Get("WWW-Authenticate") == "" {
			t.Fatalf("%s %s with a revoked token: %d %+v", tc.method, tc.path, r.StatusCode, p)
		}
	}
	if j := s.get(t, submitted{ID: sub.ID, Token: fresh.Token}); j.State.Final() {
		t.Fatalf("a revoked token's cancel went through: %s", j.State)
	}
	// Re-issued tokens carry the new epoch too.
	again := decode[struct{ Token string }](t, do(t, "POST", s.api.URL+"/v1/jobs/"+sub.ID+"/token", s.apiKey, nil)).Token
	if r := do(t, "POST", s.progress.URL+"/v1/jobs/"+sub.ID+"/cancel", again, nil); r.StatusCode >= 300 {
		t.Fatalf("cancel with a re-issued token after revoking: %d", r.StatusCode)
	}
	// Only the owner may revoke.
	bob, _, _ := identity.NewAPIKeys(s.rdb, nil).Create(context.Background(), "bob", "", "")
	if r := do(t, "POST", s.api.URL+"/v1/jobs/"+sub.ID+"/revoke-tokens", bob.Reveal(), nil); r.StatusCode != 404 {
		t.Fatalf("bob revoking ann's job tokens: %d", r.StatusCode)
	}
}
