package app_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/tokens"
)

func TestDownloadLinks(t *testing.T) {
	s := newStack(t)
	sub := s.submit(t, `{"type":"primes","input":{"n":100000}}`)
	s.waitState(t, sub, jobs.StateSucceeded)
	r := do(t, "GET", s.progress.URL+sub.Links.Result, sub.Token, nil)
	want, _ := io.ReadAll(r.Body)
	if r.StatusCode != 200 || len(want) < 8 {
		t.Fatalf("result: %d %q", r.StatusCode, want)
	}

	r = do(t, "POST", s.progress.URL+"/v1/jobs/"+sub.ID+"/links", sub.Token,
		strings.NewReader(`{"filename":"primes.json","disposition":"inline","expires_in":"5m"}`))
	link := decode[struct {
		URL       string    `json:"url"`
		ExpiresAt time.Time `json:"expires_at"`
	}](t, r)
	if r.StatusCode != 201 || !strings.HasPrefix(link.URL, "/v1/results/"+sub.ID+"?sig=") || time.Until(link.ExpiresAt) > 5*time.Minute {
		t.Fatalf("create link: %d %+v", r.StatusCode, link)
	}

	// The URL alone downloads: no header needed, as in a browser.
	r = do(t, "GET", s.progress.URL+link.URL, "", nil)
	got, _ := io.ReadAll(r.Body)
	h := r.Header
	if r.StatusCode != 200 || string(got) != string(want) || h.Get("Referrer-Policy") != "no-referrer" ||
		!strings.HasPrefix(h.Get("Cache-Control"), "private") || h.Get("Content-Disposition") != `inline; filename=primes.json` || h.Get("ETag") == "" {
		t.Fatalf("download: %d %q %v", r.StatusCode, got, h)
	}
	r = do(t, "GET", s.progress.URL+link.URL, "", nil, "Range", "bytes=2-5")
	part, _ := io.ReadAll(r.Body)
	if r.StatusCode != http.StatusPartialContent || string(part) != string(want[2:6]) {
		t.Fatalf("range: %d %q, want %q", r.StatusCode, part, want[2:6])
	}

	sig := link.URL[strings.Index(link.URL, "sig=")+4:]
	other := s.submit(t, `{"type":"count"}`)
	s.waitState(t, other, jobs.StateSucceeded)
	linkKeys, err := tokens.LoadDir(s.cfg.LinkKeyDir)
	if err != nil {
		t.Fatal(err)
	}
	expired, _, _ := (&tokens.LinkMinter{Keys: linkKeys, Now: func() time.Time { return time.Now().Add(-time.Hour) }}).
		MintLink(sub.ID, 0, "", "attachment", time.Minute)
	for name, tc := range map[string]struct {
		method, url, bearer string
		status              int
	}{
		"tampered":                  {"GET", s.progress.URL + "/v1/results/" + sub.ID + "?sig=" + flip(sig), "", 401},
		"expired":                   {"GET", s.progress.URL + "/v1/results/" + sub.ID + "?sig=" + expired, "", 401},
		"on another job":            {"GET", s.progress.URL + "/v1/results/" + other.ID + "?sig=" + sig, "", 403},
		"no sig":                    {"GET", s.progress.URL + "/v1/results/" + sub.ID, "", 401},
		"a job token as a link":     {"GET", s.progress.URL + "/v1/results/" + sub.ID + "?sig=" + sub.Token, "", 401},
		"a link as a job token":     {"GET", s.progress.URL + sub.Links.Result, sig, 401},
		"another job's link":        {"POST", s.progress.URL + "/v1/jobs/" + other.ID + "/links", sub.Token, 403},
		"read-only token, no links": {"POST", s.progress.URL + "/v1/jobs/" + sub.ID + "/links", readOnly(t, s, sub.ID), 403},
	} {
		r := do(t, tc.method, tc.url, tc.bearer, nil)
		body, _ := io.ReadAll(r.Body)
		if r.StatusCode != tc.status || strings.Contains(string(body), sig) {
			t.Errorf("%s: %d %s, want %d", name, r.StatusCode, body, tc.status)
		}
	}

	// A lifetime the link cannot carry (its exp is in whole seconds) is a
	// bad request, not a sign that the valid token is dead.
	for _, d := range []string{"1ns", "500ms", "0s", "-1m", "25h", "soon"} {
		r := do(t, "POST", s.progress.URL+sub.Links.Result[:strings.LastIndex(sub.Links.Result, "/")]+"/links", sub.Token,
			strings.NewReader(`{"expires_in":"`+d+`"}`), "Content-Type", "application/json")
		body, _ := io.ReadAll(r.Body)
		if r.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(string(body), "expires_in") {
			t.Errorf("expires_in %q: %d %s, want 422 naming expires_in", d, r.StatusCode, body)
		}
	}

	// A job that has not succeeded has no link.
	running := s.submit(t, `{"type":"stepper","input":{"steps":1}}`)
	if r := do(t, "POST", s.progress.URL+"/v1/jobs/"+running.ID+"/links", running.Token, nil); r.StatusCode != 409 {
		t.Fatalf("link to an unfinished job: %d", r.StatusCode)
	}
	s.step <- struct{}{}

	// Revoking the job's tokens revokes its links.
	if r := do(t, "POST", s.api.URL+"/v1/jobs/"+sub.ID+"/revoke-tokens", s.apiKey, nil); r.StatusCode != 201 {
		t.Fatalf("revoke: %d", r.StatusCode)
	}
	waitfor.True(t, time.Second, func() bool { return do(t, "GET", s.progress.URL+link.URL, "", nil).StatusCode == 401 })
	s.waitState(t, running, jobs.StateSucceeded)
}

func readOnly(t *testing.T, s *stack, id string) string {
	t.Helper()
	r := do(t, "POST", s.api.URL+"/v1/jobs/"+id+"/token", s.apiKey, strings.NewReader(`{"scope":"job:read"}`))
	return decode[struct{ Token string }](t, r).Token
}

// flip changes one character well inside a token's signature, where every
// bit counts (the last characters of base64 carry padding bits).
func flip(tok string) string {
	b := []byte(tok)
	i := len(b) - 10
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

// TestOnceDownloadLink: a one-time link through the whole stack (and the
// OpenAPI contract): 201 with once, HEAD claims nothing, the first GET gets
// the result, every later request is 410; a Range it does not take is 416.
func TestOnceDownloadLink(t *testing.T) {
	s := newStack(t)
	sub := s.submit(t, `{"type":"primes","input":{"n":100000}}`)
	s.waitState(t, sub, jobs.StateSucceeded)
	r := do(t, "GET", s.progress.URL+sub.Links.Result, sub.Token, nil)
	want, _ := io.ReadAll(r.Body)

	r = do(t, "POST", s.progress.URL+"/v1/jobs/"+sub.ID+"/links", sub.Token, strings.NewReader(`{"once":true}`))
	link := decode[struct {
		URL  string `json:"url"`
		Once bool   `json:"once"`
	}](t, r)
	if r.StatusCode != 201 || !link.Once {
		t.Fatalf("create one-time link: %d %+v", r.StatusCode, link)
	}
	if r := do(t, "HEAD", s.progress.URL+link.URL, "", nil); r.StatusCode != 200 || r.ContentLength != int64(len(want)) {
		t.Fatalf("HEAD: %d %d", r.StatusCode, r.ContentLength)
	}
	r = do(t, "GET", s.progress.URL+link.URL, "", nil, "Range", "bytes=0-3")
	if body, _ := io.ReadAll(r.Body); r.StatusCode != http.StatusRequestedRangeNotSatisfiable || !strings.Contains(string(body), "link-range") {
		t.Fatalf("closed range: %d %s", r.StatusCode, body)
	}
	r = do(t, "GET", s.progress.URL+link.URL, "", nil)
	if got, _ := io.ReadAll(r.Body); r.StatusCode != 200 || string(got) != string(want) {
		t.Fatalf("download: %d, %d bytes", r.StatusCode, len(got))
	}
	var last *http.Response
	waitfor.True(t, 5*time.Second, func() bool { last = do(t, "GET", s.progress.URL+link.URL, "", nil); return last.StatusCode != 409 })
	if body, _ := io.ReadAll(last.Body); last.StatusCode != http.StatusGone || !strings.Contains(string(body), "urn:claimcheck:problem:link-used") {
		t.Fatalf("second download: %d %s", last.StatusCode, body)
	}
}
