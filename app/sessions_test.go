package app_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/claimcheck/claimcheck/api/authn"
	"github.com/claimcheck/claimcheck/internal/redistest"
)

// login signs ann in and returns the session secret and its cookie.
func (s *stack) login(t *testing.T, hdr ...string) (string, *http.Cookie) {
	t.Helper()
	resp := do(t, "POST", s.api.URL+"/v1/sessions", "", strings.NewReader(`{"username":"ann","password":"correct horse"}`), hdr...)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	body := decode[struct{ Session, ID, ExpiresAt string }](t, resp)
	for _, ck := range resp.Cookies() {
		if ck.Name == authn.CookieName {
			return body.Session, ck
		}
	}
	t.Fatal("login set no session cookie")
	return "", nil
}

func (s *stack) postJob(t *testing.T, bearer string, ck *http.Cookie, hdr ...string) int {
	t.Helper()
	req, _ := http.NewRequest("POST", s.api.URL+"/v1/jobs", strings.NewReader(`{"type":"count"}`))
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if ck != nil {
		req.AddCookie(ck)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestLogin(t *testing.T) {
	s := newStack(t)
	for _, body := range []string{`{"username":"ann","password":"wrong horse"}`, `{"username":"nobody","password":"correct horse"}`} {
		resp := do(t, "POST", s.api.URL+"/v1/sessions", "", strings.NewReader(body))
		p := decode[problemBody](t, resp)
		if resp.StatusCode != 401 || p.Status != 401 || len(resp.Cookies()) != 0 {
			t.Fatalf("bad login %s: %d %+v", body, resp.StatusCode, p)
		}
	}
	resp := do(t, "POST", s.api.URL+"/v1/sessions", "", strings.NewReader(`{"username":"ann","password":"correct horse","remember":true}`))
	if resp.StatusCode != 400 {
		t.Fatalf("unknown field: %d", resp.StatusCode)
	}
	sess, ck := s.login(t)
	if !strings.HasPrefix(sess, "ccs_") || ck.Value != sess || !ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode || ck.Path != "/" || ck.Secure {
		t.Fatalf("cookie %+v", ck)
	}
	// A client's own X-Forwarded-Proto is not believed (see
	// TestFinding9TrustedProxyForwardedHostAndProtoBelieved for a proxy's).
	if _, ck := s.login(t, "X-Forwarded-Proto", "https"); ck.Secure {
		t.Fatal("an untrusted X-Forwarded-Proto made the cookie Secure")
	}
	resp = do(t, "POST", s.api.URL+"/v1/sessions", "", strings.NewReader(`{"username":"ann","password":"correct horse"}`), "Origin", "https://evil.example")
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site login: %d", resp.StatusCode)
	}
	// The session works as a bearer credential too.
	if code := s.postJob(t, sess, nil); code != http.StatusAccepted {
		t.Fatalf("submit with session: %d", code)
	}
}

func TestCookieRequestsNeedSameOrigin(t *testing.T) {
	s := newStack(t)
	_, ck := s.login(t)
	apiHost := strings.TrimPrefix(s.api.URL, "http://")
	for _, tc := range []struct {
		name string
		hdr  []string
		want int
	}{
		{"no origin", nil, http.StatusForbidden},
		{"foreign origin", []string{"Origin", "https://evil.example"}, http.StatusForbidden},
		{"foreign referer", []string{"Referer", "https://evil.example/page"}, http.StatusForbidden},
		{"same origin", []string{"Origin", s.api.URL}, http.StatusAccepted},
		{"same referer", []string{"Referer", s.api.URL + "/ui"}, http.StatusAccepted},
		// Not from a trusted proxy, so not believed.
		{"client's own forwarded host", []string{"Origin", "https://jobs.example", "X-Forwarded-Host", "jobs.example", "X-Forwarded-Proto", "https"}, http.StatusForbidden},
	} {
		if got := s.postJob(t, "", ck, tc.hdr...); got != tc.want {
			t.Errorf("%s (%s): %d, want %d", tc.name, apiHost, got, tc.want)
		}
	}
	// Exactly the two accepted requests made job records.
	recs := redistest.Keys(t, s.rdb, "cc:job:*")
	// Only the records themselves ("cc:job:{id}"): a job that ran has
	// keys beside its record (events, receipt, …) by the time this reads.
	recs = slices.DeleteFunc(recs, func(k string) bool { return !strings.HasSuffix(k, "}") })
	if len(recs) != 2 {
		t.Fatalf("%d job records, want 2", len(recs))
	}
}

func TestLogoutRefusesTheNextRequest(t *testing.T) {
	s := newStack(t)
	first, _ := s.login(t)
	second, _ := s.login(t)
	third, _ := s.login(t)

	resp := do(t, "GET", s.api.URL+"/v1/sessions", first, nil)
	list := decode[struct {
		Sessions []struct {
			ID      string
			Current bool
		}
	}](t, resp)
	if len(list.Sessions) != 3 {
		t.Fatalf("sessions: %+v", list)
	}
	var current int
	for _, l := range list.Sessions {
		if l.Current {
			current++
		}
	}
	if current != 1 {
		t.Fatalf("%d sessions marked current", current)
	}

	if resp := do(t, "DELETE", s.api.URL+"/v1/sessions/current", first, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	if code := s.postJob(t, first, nil); code != http.StatusUnauthorized {
		t.Fatalf("request after logout: %d", code)
	}
	if code := s.postJob(t, second, nil); code != http.StatusAccepted {
		t.Fatalf("other session after logout: %d", code)
	}
	// Log out everywhere from the second: the third dies with it.
	if resp := do(t, "DELETE", s.api.URL+"/v1/sessions", second, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("logout everywhere: %d", resp.StatusCode)
	}
	for _, sess := range []string{second, third} {
		if code := s.postJob(t, sess, nil); code != http.StatusUnauthorized {
			t.Fatalf("request after logout everywhere: %d", code)
		}
	}
	// The API key is not a session: logout-everywhere leaves it alone.
	if code := s.postJob(t, s.apiKey, nil); code != http.StatusAccepted {
		t.Fatalf("api key after logout everywhere: %d", code)
	}
}

func TestBlockRefusesTheNextRequest(t *testing.T) {
	s := newStack(t)
	sess, _ := s.login(t)
	if err := s.dir.Block(context.Background(), "ann"); err != nil {
		t.Fatal(err)
	}
	for _, cred := range []string{sess, s.apiKey} {
		if code := s.postJob(t, cred, nil); code != http.StatusUnauthorized {
			t.Fatalf("request after block: %d", code)
		}
	}
	resp := do(t, "POST", s.api.URL+"/v1/sessions", "", strings.NewReader(`{"username":"ann","password":"correct horse"}`))
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("blocked login: %d", resp.StatusCode)
	}
}

func TestSessionIsNotAJobToken(t *testing.T) {
	s := newStack(t)
	sess, _ := s.login(t)
	sub := s.submit(t, `{"type":"count"}`)
	resp := do(t, "GET", s.progress.URL+"/v1/jobs/"+sub.ID, sess, nil)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("session at the progress service: %d", resp.StatusCode)
	}
}
