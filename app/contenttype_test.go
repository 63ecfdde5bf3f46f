package app_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/app/devstack"
	"github.com/claimcheck/claimcheck/internal/redistest"
)

// TestFinding9JSONRoutesRefuseOtherContentTypes: a body that is not sent as
// application/json is refused with 415 before anything is created — the
// content types a cross-site form can send without a preflight among them.
func TestFinding9JSONRoutesRefuseOtherContentTypes(t *testing.T) {
	rdb := redistest.Client(t)
	st := devstack.Start(t, rdb, devstack.Options{Config: app.Config{Argon2: cheapArgon2}})
	session := loginAt(t, rdb, st.URL)
	ctx := context.Background()
	sessionsBefore, err := app.Identity(st.Config, rdb).Sessions.List(ctx, "ann")
	if err != nil {
		t.Fatal(err)
	}
	for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "", "application/json; charset=utf-16", "application/jsonx"} {
		for _, rt := range []struct{ path, cred, body string }{
			{"/v1/jobs", st.APIKey, `{"type":"primes","input":{"n":10}}`},
			{"/v1/sessions", "", `{"username":"ann","password":"correct horse"}`},
			{"/v1/api-keys", session, `{"name":"plain"}`},
		} {
			req, _ := http.NewRequest("POST", st.URL+rt.path, strings.NewReader(rt.body))
			if ct != "" {
				req.Header.Set("Content-Type", ct)
			}
			if rt.cred != "" {
				req.Header.Set("Authorization", "Bearer "+rt.cred)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			p := decode[problemBody](t, resp)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnsupportedMediaType || p.Type != "urn:claimcheck:problem:unsupported-media-type" || !strings.Contains(p.Detail, "application/json") {
				t.Errorf("POST %s as %q: %d %+v, want 415 unsupported-media-type", rt.path, ct, resp.StatusCode, p)
			}
		}
	}
	list := decode[struct{ Jobs []struct{ ID string } }](t, do(t, "GET", st.URL+"/v1/jobs", st.APIKey, nil))
	if len(list.Jobs) != 0 {
		t.Fatalf("refused submissions created %d jobs", len(list.Jobs))
	}
	sessionsAfter, _ := app.Identity(st.Config, rdb).Sessions.List(ctx, "ann")
	if len(sessionsAfter) != len(sessionsBefore) {
		t.Fatalf("refused sign-ins created %d sessions", len(sessionsAfter)-len(sessionsBefore))
	}
	if n := apiKeyCount(t, st.URL, session); n != 1 { // devstack's own key
		t.Fatalf("refused creations left %d API keys", n)
	}
	// Parameters are fine, and so is an empty body on a route whose body
	// is optional.
	if r := do(t, "POST", st.URL+"/v1/jobs", st.APIKey, strings.NewReader(`{"type":"primes","input":{"n":10}}`), "Content-Type", "application/json; charset=UTF-8"); r.StatusCode != http.StatusAccepted {
		t.Fatalf("application/json; charset=UTF-8: %d", r.StatusCode)
	}
}
