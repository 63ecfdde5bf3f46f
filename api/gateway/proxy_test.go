package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/api/gateway"
	"github.com/claimcheck/claimcheck/tokens"
)

// TestFinding1ProxyNeverForwardsAClientInternalToken: the gateway forwards
// only what it minted itself. A client's at+jwt (stolen, or minted for
// someone else) is refused before upstream sees it, on every route and in
// ?token=; a job token or download link goes through unchanged, and only
// to the progress service's routes.
func TestFinding1ProxyNeverForwardsAClientInternalToken(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	sess, _, _ := f.dir.Sessions.Create(ctx, "ann", "", "")
	at := strings.TrimPrefix(f.exchange(t, "GET", "/v1/auth/exchange", "Authorization", "Bearer "+sess.Reveal()).Header.Get("Authorization"), "Bearer ")
	if at == "" {
		t.Fatal("no internal token from the exchange")
	}
	jobKey, _ := tokens.GenerateKey()
	jobKeys, _ := tokens.NewKeySet(jobKey)
	job, _, err := (&tokens.Minter{Keys: jobKeys}).MintJob("019a", "ann", tokens.JobScopes, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	link, _, err := (&tokens.LinkMinter{Keys: jobKeys}).MintLink("019a", 0, "", "", time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	var reached atomic.Int32
	var seen atomic.Value
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		seen.Store(r.Header.Get("Authorization") + "|" + r.URL.Query().Get("token"))
	}))
	defer upstream.Close()
	u, _ := url.Parse(upstream.URL)
	proxy := httptest.NewServer(f.gw.Proxy(u))
	defer proxy.Close()
	pass := httptest.NewServer(f.gw.PassThrough(u))
	defer pass.Close()

	send := func(base, method, target, bearer string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+target, nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var p struct{ Type string }
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") {
			_ = json.NewDecoder(resp.Body).Decode(&p)
		} else {
			_, _ = io.Copy(io.Discard, resp.Body)
		}
		return resp.StatusCode, p.Type
	}

	for _, tc := range []struct {
		name, method, target, bearer string
		forwarded                    bool
	}{
		{"at+jwt to an api route", "POST", "/v1/api-keys", at, false},
		{"at+jwt to list jobs", "GET", "/v1/jobs", at, false},
		{"at+jwt to a progress route", "GET", "/v1/jobs/019a", at, false},
		{"at+jwt in ?token=", "GET", "/v1/jobs/019a/events?token=" + url.QueryEscape(at), "", false},
		{"at+jwt in ?token= on an api route", "GET", "/v1/jobs?token=" + url.QueryEscape(at), "", false},
		{"job token to an api route", "POST", "/v1/api-keys", job, false},
		{"job token to re-issue", "POST", "/v1/jobs/019a/token", job, false},
		{"a made-up bearer", "GET", "/v1/jobs", "hello", false},
		{"a JWT-looking bearer", "GET", "/v1/jobs/019a", "eyJhbGciOiJub25lIn0.e30.", false},
		{"job token to its status", "GET", "/v1/jobs/019a", job, true},
		{"job token to cancel", "POST", "/v1/jobs/019a/cancel", job, true},
		{"job token to its logs", "GET", "/v1/jobs/019a/logs?after=3", job, true},
		{"at+jwt to a job's logs", "GET", "/v1/jobs/019a/logs", at, false},
		{"job token in ?token=", "GET", "/v1/jobs/019a/events?token=" + url.QueryEscape(job), "", true},
		{"link to a download", "GET", "/v1/results/019a?sig=" + url.QueryEscape(link), "", true},
		{"at+jwt as a download link", "GET", "/v1/results/019a?sig=" + url.QueryEscape(at), "", false},
	} {
		for _, srv := range []struct {
			name string
			url  string
		}{{"proxy", proxy.URL}, {"pass-through", pass.URL}} {
			if srv.name == "pass-through" && !gateway.ProgressRoute(tc.method, strings.Split(tc.target, "?")[0]) {
				continue // the gateway sends only progress routes there
			}
			before := reached.Load()
			seen.Store("")
			code, typ := send(srv.url, tc.method, tc.target, tc.bearer)
			got := reached.Load() != before
			if got != tc.forwarded {
				t.Errorf("%s (%s): forwarded %v, want %v (status %d %s)", tc.name, srv.name, got, tc.forwarded, code, typ)
				continue
			}
			if !tc.forwarded && (code != 401 || typ != "urn:claimcheck:problem:credential-not-accepted") {
				t.Errorf("%s (%s): %d %q, want 401 credential-not-accepted", tc.name, srv.name, code, typ)
			}
			if tc.forwarded && tc.bearer != "" && seen.Load() != "Bearer "+tc.bearer+"|" {
				t.Errorf("%s (%s): upstream saw a changed Authorization", tc.name, srv.name)
			}
		}
	}

	// A second Authorization header does not ride along behind a job token.
	req2, _ := http.NewRequest("GET", proxy.URL+"/v1/jobs/019a", nil)
	req2.Header.Add("Authorization", "Bearer "+job)
	req2.Header.Add("Authorization", "Bearer "+at)
	before := reached.Load()
	resp2, err := http.DefaultClient.Do(req2)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != 401 || reached.Load() != before {
		t.Fatalf("two Authorization headers: %d, upstream reached %d", resp2.StatusCode, reached.Load()-before)
	}

	// A person's credential is exchanged: upstream sees the gateway's own
	// token, never the client's.
	req, _ := http.NewRequest("GET", proxy.URL+"/v1/jobs", nil)
	req.Header.Set("Authorization", "Bearer "+sess.Reveal())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	got, _ := strings.CutPrefix(seen.Load().(string), "Bearer ")
	got = strings.TrimSuffix(got, "|")
	if claims, err := f.verify.VerifyAccess(got); resp.StatusCode != 200 || err != nil || claims.Subject != "ann" {
		t.Fatalf("exchanged request: %d, upstream's token %v", resp.StatusCode, err)
	}
	// A person's credential is never sent to the progress service.
	for _, cred := range []string{sess.Reveal(), "cck_anything_at_all_0123456789"} {
		if code, typ := send(pass.URL, "GET", "/v1/jobs/019a", cred); code != 401 || typ != "urn:claimcheck:problem:credential-not-accepted" {
			t.Errorf("%.4s… at the progress pass-through: %d %q", cred, code, typ)
		}
	}
}
