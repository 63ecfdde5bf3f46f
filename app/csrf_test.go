package app_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/api/authn"
	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/app/devstack"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/nginxtest"
)

// csrfCase is one cookie-authenticated POST and whether it may pass.
type csrfCase struct {
	name string
	hdr  []string
	pass bool
}

// finding9Cases are the review's repros of finding 9 against a site whose
// own origin is origin (http://host:port), plus the two ways a same-site
// write legitimately passes.
func finding9Cases(origin string) []csrfCase {
	host := strings.TrimPrefix(origin, "http://")
	return []csrfCase{
		{"no Origin, client X-Forwarded-Method: GET", []string{"X-Forwarded-Method", "GET"}, false},
		{"no Origin, client X-Original-Method: GET", []string{"X-Original-Method", "GET"}, false},
		{"Origin http://evil, client X-Forwarded-Host: evil", []string{"Origin", "http://evil", "X-Forwarded-Host", "evil"}, false},
		{"Origin with the right host but https", []string{"Origin", "https://" + host}, false},
		{"client X-Forwarded-Proto: https with an https Origin", []string{"Origin", "https://" + host, "X-Forwarded-Proto", "https"}, false},
		{"client X-Forwarded-Host and -Proto naming its Origin", []string{"Origin", "https://jobs.example", "X-Forwarded-Host", "jobs.example", "X-Forwarded-Proto", "https"}, false},
		{"Origin null, same-host Referer", []string{"Origin", "null", "Referer", origin + "/"}, false},
		{"same origin", []string{"Origin", origin}, true},
		{"no Origin, same-origin Referer", []string{"Referer", origin + "/ui"}, true},
	}
}

// cookiePost sends a cookie-authenticated JSON POST.
func cookiePost(t *testing.T, u, session, body string, hdr ...string) *http.Response {
	t.Helper()
	return do(t, "POST", u, "", strings.NewReader(body),
		append([]string{"Cookie", authn.CookieName + "=" + session, "Content-Type", "application/json"}, hdr...)...)
}

func apiKeyCount(t *testing.T, base, session string) int {
	t.Helper()
	resp := do(t, "GET", base+"/v1/api-keys", session, nil)
	return len(decode[struct {
		APIKeys []struct{ ID string } `json:"api_keys"`
	}](t, resp).APIKeys)
}

// TestFinding9DirectCookieWritesNeedSameOrigin sends the repros straight to
// the api (the dev handler, trusting no proxy): a client's forwarding
// headers change nothing, the Origin's scheme counts, and Origin: null is
// refused whatever the Referer says.
func TestFinding9DirectCookieWritesNeedSameOrigin(t *testing.T) {
	rdb := redistest.Client(t)
	st := devstack.Start(t, rdb, devstack.Options{Config: app.Config{Argon2: cheapArgon2}})
	session := loginAt(t, rdb, st.URL)
	before := apiKeyCount(t, st.URL, session)
	passed := 0
	for _, tc := range finding9Cases(st.URL) {
		resp := cookiePost(t, st.URL+"/v1/api-keys", session, `{"name":"csrf"}`, tc.hdr...)
		checkCSRF(t, tc, resp, http.StatusCreated)
		if tc.pass {
			passed++
		}
	}
	if got := apiKeyCount(t, st.URL, session); got != before+passed {
		t.Fatalf("%d API keys, want %d: a refused request created one", got, before+passed)
	}
}

// TestFinding9GatewayProxyCookieWritesNeedSameOrigin sends them through the
// gateway's reverse proxy, the edge, which trusts no proxy: a refused
// request never reaches the service behind it.
func TestFinding9GatewayProxyCookieWritesNeedSameOrigin(t *testing.T) {
	f := newForwardAuth(t)
	service, _ := url.Parse(f.service.URL)
	gw := httptest.NewServer(app.GatewayHandler(f.stack.Config, f.stack.Dev.Gateway, service, nil))
	t.Cleanup(gw.Close)
	for _, tc := range finding9Cases(gw.URL) {
		before := f.reached.Load()
		resp := cookiePost(t, gw.URL+"/reports/7", f.session, `{}`, tc.hdr...)
		checkCSRF(t, tc, resp, http.StatusOK)
		if reached := f.reached.Load() != before; reached != tc.pass {
			t.Errorf("%s: service reached %v", tc.name, reached)
		}
	}
}

// TestFinding9NginxCookieWritesNeedSameOrigin sends them through a real
// nginx with the shipped docs/gateway/nginx.conf, in front of a dev server
// that trusts nginx: nginx replaces or clears every forwarding header a
// client sends, so none of them reaches the exchange.
func TestFinding9NginxCookieWritesNeedSameOrigin(t *testing.T) {
	nginxtest.Binary(t)
	f := newForwardAuth(t, "127.0.0.1")
	listen := nginxtest.FreeAddr(t)
	nginxtest.Start(t, f.config(t, "nginx.conf", listen), listen)
	for _, tc := range finding9Cases("http://" + listen) {
		before := f.reached.Load()
		resp := cookiePost(t, "http://"+listen+"/reports/7", f.session, `{}`, tc.hdr...)
		// nginx answers a refused auth_request with its own 403 page, not
		// the gateway's problem+json.
		want := map[bool]int{true: http.StatusOK, false: http.StatusForbidden}[tc.pass]
		if resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", tc.name, resp.StatusCode, want)
		}
		if reached := f.reached.Load() != before; reached != tc.pass {
			t.Errorf("%s: service reached %v", tc.name, reached)
		}
	}
	// What reaches the service is what nginx says, not what the client did.
	resp := do(t, "GET", "http://"+listen+"/reports/7", "", nil, "Cookie", authn.CookieName+"="+f.session,
		"X-Forwarded-Method", "POST", "X-Forwarded-Host", "evil", "X-Forwarded-Proto", "https", "X-Original-URI", "/admin",
		"X-Forwarded-For", "6.6.6.6", "Forwarded", "for=6.6.6.6", "X-Claimcheck-User", "root")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET with a client's forwarding headers: %d", resp.StatusCode)
	}
	seen := *f.seen.Load()
	for k, want := range map[string]string{"X-Forwarded-Host": listen, "X-Forwarded-Proto": "http", "X-Forwarded-For": "127.0.0.1",
		"X-Claimcheck-User": "ann", "X-Forwarded-Method": "", "X-Original-Uri": "", "Forwarded": ""} {
		if got := strings.Join(seen.Values(k), ","); got != want {
			t.Errorf("service saw %s %q, want %q", k, got, want)
		}
	}
}

// TestFinding9ForwardAuthFailsClosedWithoutTrustedProxy calls the exchange
// the way a forward-auth proxy does, from an address the dev server does
// not trust: the method it names cannot be believed, so a cookie request
// counts as state-changing and needs a same Origin. Named as a trusted
// proxy, the same call passes — and a trusted proxy that names no method
// fails closed too.
func TestFinding9ForwardAuthFailsClosedWithoutTrustedProxy(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trusted []string
		hdr     []string
		want    int
	}{
		{"untrusted caller naming GET", nil, []string{"X-Forwarded-Method", "GET"}, http.StatusForbidden},
		{"untrusted caller naming GET (nginx header)", nil, []string{"X-Original-Method", "GET"}, http.StatusForbidden},
		{"trusted proxy naming GET", []string{"127.0.0.1"}, []string{"X-Forwarded-Method", "GET"}, http.StatusOK},
		{"trusted proxy naming no method", []string{"127.0.0.1/8"}, nil, http.StatusForbidden},
		{"trusted proxy naming two methods that disagree", []string{"127.0.0.1"}, []string{"X-Forwarded-Method", "GET", "X-Original-Method", "POST"}, http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rdb := redistest.Client(t)
			st := devstack.Start(t, rdb, devstack.Options{Config: app.Config{Argon2: cheapArgon2, TrustedProxies: tc.trusted}})
			session := loginAt(t, rdb, st.URL)
			resp := do(t, "GET", st.URL+"/v1/auth/exchange", "", nil, append([]string{"Cookie", authn.CookieName + "=" + session}, tc.hdr...)...)
			if resp.StatusCode != tc.want {
				t.Fatalf("%d, want %d", resp.StatusCode, tc.want)
			}
			if tc.want == http.StatusForbidden {
				if p := decode[problemBody](t, resp); p.Type != "urn:claimcheck:problem:csrf" || resp.Header.Get("Authorization") != "" {
					t.Fatalf("refusal %+v, Authorization %q", p, resp.Header.Get("Authorization"))
				}
			}
		})
	}
}

// TestFinding9TrustedProxyForwardedHostAndProtoBelieved: behind a
// TLS-terminating proxy named with --trusted-proxy, the proxy's
// X-Forwarded-Host and -Proto are believed, so a same-origin https request
// passes (and the cookie is Secure), directly at the api and through the
// gateway's proxy.
func TestFinding9TrustedProxyForwardedHostAndProtoBelieved(t *testing.T) {
	f := newForwardAuth(t, "127.0.0.1")
	behind := []string{"X-Forwarded-Host", "jobs.example", "X-Forwarded-Proto", "https"}

	login := do(t, "POST", f.stack.URL+"/v1/sessions", "", strings.NewReader(`{"username":"ann","password":"correct horse"}`),
		append([]string{"Origin", "https://jobs.example"}, behind...)...)
	if login.StatusCode != http.StatusCreated {
		t.Fatalf("login behind a trusted TLS proxy: %d", login.StatusCode)
	}
	for _, ck := range login.Cookies() {
		if ck.Name == authn.CookieName && !ck.Secure {
			t.Fatal("cookie not Secure behind a trusted TLS proxy")
		}
	}
	before := apiKeyCount(t, f.stack.URL, f.session)
	for _, tc := range []csrfCase{
		{"https Origin naming the forwarded host", append([]string{"Origin", "https://jobs.example"}, behind...), true},
		{"https Origin naming the forwarded host, default port spelled out", append([]string{"Origin", "https://JOBS.example:443"}, behind...), true},
		{"http Origin naming the forwarded host", append([]string{"Origin", "http://jobs.example"}, behind...), false},
		{"Origin naming the proxy's upstream address", append([]string{"Origin", f.stack.URL}, behind...), false},
	} {
		checkCSRF(t, tc, cookiePost(t, f.stack.URL+"/v1/api-keys", f.session, `{"name":"behind"}`, tc.hdr...), http.StatusCreated)
	}
	if got := apiKeyCount(t, f.stack.URL, f.session); got != before+2 {
		t.Fatalf("%d API keys, want %d", got, before+2)
	}

	cfg := f.stack.Config // trusts 127.0.0.1
	service, _ := url.Parse(f.service.URL)
	gw := httptest.NewServer(app.GatewayHandler(cfg, f.stack.Dev.Gateway, service, nil))
	t.Cleanup(gw.Close)
	resp := cookiePost(t, gw.URL+"/reports/7", f.session, `{}`, append([]string{"Origin", "https://jobs.example"}, behind...)...)
	checkCSRF(t, csrfCase{name: "through the gateway behind a trusted proxy", pass: true}, resp, http.StatusOK)
	// The service behind the gateway learns the public host and scheme.
	if seen := *f.seen.Load(); seen.Get("X-Forwarded-Host") != "jobs.example" || seen.Get("X-Forwarded-Proto") != "https" {
		t.Fatalf("upstream saw X-Forwarded-Host %q, -Proto %q", seen.Get("X-Forwarded-Host"), seen.Get("X-Forwarded-Proto"))
	}
}

// loginAt signs ann (created here) in at base and returns her session.
func loginAt(t *testing.T, rdb redis.UniversalClient, base string) string {
	t.Helper()
	if err := app.Identity(app.Config{Argon2: cheapArgon2}, rdb).Users.Add(context.Background(), "ann", "correct horse"); err != nil {
		t.Fatal(err)
	}
	resp := do(t, "POST", base+"/v1/sessions", "", strings.NewReader(`{"username":"ann","password":"correct horse"}`), "Content-Type", "application/json")
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	return decode[struct{ Session string }](t, resp).Session
}

// checkCSRF asserts that tc passed with ok, or was refused as csrf.
func checkCSRF(t *testing.T, tc csrfCase, resp *http.Response, ok int) {
	t.Helper()
	if tc.pass {
		if resp.StatusCode != ok {
			t.Errorf("%s: %d, want %d", tc.name, resp.StatusCode, ok)
		}
		return
	}
	var p problemBody
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &p)
	if resp.StatusCode != http.StatusForbidden || p.Type != "urn:claimcheck:problem:csrf" {
		t.Errorf("%s: %d %.80s, want 403 csrf", tc.name, resp.StatusCode, b)
	}
}
