package app_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/claimcheck/claimcheck/api/authn"
	"github.com/claimcheck/claimcheck/internal/app"
	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/devstack"
	"github.com/claimcheck/claimcheck/internal/testutil/nginxtest"
	"github.com/claimcheck/claimcheck/tokens"
)

// TestNginxAuthRequest puts a real nginx, configured with the documented
// docs/gateway/nginx.conf, in front of a service, with the dev server's
// exchange deciding who gets in.
func TestNginxAuthRequest(t *testing.T) {
	nginxtest.Binary(t) // skip (or, in CI, fail) before building anything
	rdb := redistest.Client(t)
	ctx := context.Background()
	stack := devstack.Start(t, rdb, devstack.Options{Config: app.Config{Argon2: cheapArgon2}})

	// The protected service trusts nothing but a valid at+jwt.
	verifier := &tokens.AccessVerifier{Keys: stack.Dev.GatewayKeys}
	var reached atomic.Int32
	service := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		claims, err := verifier.VerifyAccess(tok)
		if err != nil {
			http.Error(w, "bad internal token: "+err.Error(), http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, "hello %s (header %s, cookie %q)", claims.Subject, r.Header.Get("X-Claimcheck-User"), r.Header.Get("Cookie"))
	}))
	defer service.Close()

	conf, err := os.ReadFile("../../docs/gateway/nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	listen := nginxtest.FreeAddr(t)
	server := strings.NewReplacer(
		"127.0.0.1:8082", strings.TrimPrefix(stack.URL, "http://"),
		"127.0.0.1:9000", strings.TrimPrefix(service.URL, "http://"),
		"127.0.0.1:8000", listen,
	).Replace(string(conf))
	nginxtest.Start(t, server, listen)

	if err := identity.NewUsers(rdb, cheapArgon2, nil).Add(ctx, "ann", "correct horse"); err != nil {
		t.Fatal(err)
	}
	login := do(t, "POST", stack.URL+"/v1/sessions", "", strings.NewReader(`{"username":"ann","password":"correct horse"}`))
	session := decode[struct{ Session string }](t, login).Session

	through := func(hdr ...string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+listen+"/reports/7", nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := through("Cookie", authn.CookieName+"="+session)
	if code != 200 || body != `hello ann (header ann, cookie "")` {
		t.Fatalf("valid session through nginx: %d %q", code, body)
	}
	if code, body := through("Authorization", "Bearer "+session); code != 200 || !strings.HasPrefix(body, "hello ann") {
		t.Fatalf("bearer session through nginx: %d %q", code, body)
	}
	before := reached.Load()
	if code, _ := through(); code != 401 {
		t.Fatalf("no credential through nginx: %d", code)
	}
	if code, _ := through("Cookie", authn.CookieName+"=ccs_made_up"); code != 401 || reached.Load() != before {
		t.Fatalf("made-up session: %d (service reached %d times)", code, reached.Load()-before)
	}

	// Log out: the very next request through nginx is refused.
	if r := do(t, "DELETE", stack.URL+"/v1/sessions/current", session, nil); r.StatusCode != 204 {
		t.Fatalf("logout: %d", r.StatusCode)
	}
	if code, _ := through("Cookie", authn.CookieName+"="+session); code != 401 || reached.Load() != before {
		t.Fatalf("revoked session through nginx: %d", code)
	}
}
