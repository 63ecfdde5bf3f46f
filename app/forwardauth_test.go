package app_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/api/authn"
	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/app/devstack"
	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/nginxtest"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/tokens"
)

// Documented addresses in docs/gateway's configurations, replaced by the
// tests with the real ones.
const (
	docGatewayAddr = "127.0.0.1:8082"
	docServiceAddr = "127.0.0.1:9000"
	docListenAddr  = "127.0.0.1:8000"
)

// forwardAuth is a forward-auth set-up under test: the dev server answering
// the exchange, ann signed in, and a protected service that trusts nothing
// but a valid at+jwt.
type forwardAuth struct {
	stack   *devstack.Stack
	service *httptest.Server
	session string
	reached atomic.Int32
	// seen is the header of the last request that reached the service.
	seen atomic.Pointer[http.Header]
}

// newForwardAuth starts the set-up; the dev server trusts the forwarding
// headers of the proxies named in trustedProxies (the proxy under test runs
// on 127.0.0.1).
func newForwardAuth(t *testing.T, trustedProxies ...string) *forwardAuth {
	t.Helper()
	rdb := redistest.Client(t)
	f := &forwardAuth{stack: devstack.Start(t, rdb, devstack.Options{Config: app.Config{Argon2: cheapArgon2, TrustedProxies: trustedProxies}})}
	verifier := &tokens.AccessVerifier{Keys: f.stack.Dev.GatewayKeys}
	f.service = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.reached.Add(1)
		h := r.Header.Clone()
		f.seen.Store(&h)
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		claims, err := verifier.VerifyAccess(tok)
		if err != nil {
			http.Error(w, "bad internal token: "+err.Error(), http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, "hello %s (header %s, cookie %q)", claims.Subject, r.Header.Get("X-Claimcheck-User"), r.Header.Get("Cookie"))
	}))
	t.Cleanup(f.service.Close)
	if err := identity.NewUsers(rdb, cheapArgon2, nil).Add(context.Background(), "ann", "correct horse"); err != nil {
		t.Fatal(err)
	}
	login := do(t, "POST", f.stack.URL+"/v1/sessions", "", strings.NewReader(`{"username":"ann","password":"correct horse"}`))
	f.session = decode[struct{ Session string }](t, login).Session
	return f
}

// config reads a documented configuration and points it at this set-up,
// with the proxy listening on listen.
func (f *forwardAuth) config(t *testing.T, name, listen string) string {
	t.Helper()
	conf, err := os.ReadFile(filepath.Join("..", "docs", "gateway", name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer(
		docGatewayAddr, strings.TrimPrefix(f.stack.URL, "http://"),
		docServiceAddr, strings.TrimPrefix(f.service.URL, "http://"),
		docListenAddr, listen,
	).Replace(string(conf))
}

// through sends a request to the proxy at listen.
func through(t *testing.T, listen string, hdr ...string) (int, string) {
	t.Helper()
	resp := do(t, "GET", "http://"+listen+"/reports/7", "", nil, hdr...)
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// check proves, through the proxy at listen, that a valid session (cookie or
// bearer) reaches the service with a verified at+jwt and without the cookie,
// that no or a made-up credential never reaches it, and that a session is
// refused on the very next request after logging out.
func (f *forwardAuth) check(t *testing.T, listen string) {
	t.Helper()
	code, body := through(t, listen, "Cookie", authn.CookieName+"="+f.session)
	if code != 200 || body != `hello ann (header ann, cookie "")` {
		t.Fatalf("valid session through the proxy: %d %q", code, body)
	}
	if code, body := through(t, listen, "Authorization", "Bearer "+f.session, "X-Claimcheck-User", "root"); code != 200 || !strings.HasPrefix(body, "hello ann (header ann,") {
		t.Fatalf("bearer session through the proxy: %d %q", code, body)
	}
	before := f.reached.Load()
	if code, _ := through(t, listen); code != 401 {
		t.Fatalf("no credential through the proxy: %d", code)
	}
	if code, _ := through(t, listen, "Cookie", authn.CookieName+"=ccs_made_up"); code != 401 || f.reached.Load() != before {
		t.Fatalf("made-up session: %d (service reached %d times)", code, f.reached.Load()-before)
	}

	// Log out: the very next request through the proxy is refused.
	if r := do(t, "DELETE", f.stack.URL+"/v1/sessions/current", f.session, nil); r.StatusCode != 204 {
		t.Fatalf("logout: %d", r.StatusCode)
	}
	if code, _ := through(t, listen, "Cookie", authn.CookieName+"="+f.session); code != 401 || f.reached.Load() != before {
		t.Fatalf("revoked session through the proxy: %d", code)
	}
}

// TestNginxAuthRequest puts a real nginx, configured with the documented
// docs/gateway/nginx.conf, in front of a service, with the dev server's
// exchange deciding who gets in.
func TestNginxAuthRequest(t *testing.T) {
	nginxtest.Binary(t) // skip (or, in CI, fail) before building anything
	f := newForwardAuth(t, "127.0.0.1")
	listen := nginxtest.FreeAddr(t)
	nginxtest.Start(t, f.config(t, "nginx.conf", listen), listen)
	f.check(t, listen)
}

// TestTraefikForwardAuth does the same with Traefik and the documented
// docs/gateway/traefik.yml. Traefik is not packaged for the machines CI runs
// on, so this test runs only where a traefik binary is on PATH (or named by
// CLAIMCHECK_TRAEFIK), even in strict mode; docs/gateway/README.md says
// which version it last passed with.
func TestTraefikForwardAuth(t *testing.T) {
	bin := os.Getenv("CLAIMCHECK_TRAEFIK")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("traefik"); err != nil {
			t.Skip("traefik not found; put it on PATH or set CLAIMCHECK_TRAEFIK to run the forwardAuth test")
		}
	}
	f := newForwardAuth(t, "127.0.0.1")
	listen := nginxtest.FreeAddr(t)
	dir := t.TempDir()
	dynamic := filepath.Join(dir, "dynamic.yml")
	if err := os.WriteFile(dynamic, []byte(f.config(t, "traefik.yml", listen)), 0o644); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	cmd := exec.Command(bin, "--entryPoints.web.address="+listen, "--providers.file.filename="+dynamic,
		"--log.level=ERROR", "--global.checkNewVersion=false", "--global.sendAnonymousUsage=false")
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start traefik: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("traefik said:\n%s", out.String())
		}
	})
	// Traefik loads the file provider after it starts listening: until the
	// router exists it answers 404, then the middleware's 401.
	var refused http.Header
	waitfor.True(t, 20*time.Second, func() bool {
		resp, err := http.Get("http://" + listen + "/reports/7")
		if err != nil {
			return false
		}
		resp.Body.Close()
		refused = resp.Header
		return resp.StatusCode == http.StatusUnauthorized
	})
	// Unlike nginx, Traefik hands the exchange's refusal to the client whole.
	if refused.Get("Content-Type") != "application/problem+json" || refused.Get("WWW-Authenticate") == "" {
		t.Fatalf("refusal through Traefik lost its problem+json or WWW-Authenticate: %v", refused)
	}
	f.check(t, listen)
}
