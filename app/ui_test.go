package app_test

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/app/devstack"
	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/redistest"
)

// findChromium returns a headless-capable browser, skipping the test when
// there is none — except in CI (strict mode), where .ci/run installs one.
func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if redistest.Strict() {
		t.Fatal("chromium not found; strict mode (CI) requires it: apt-get install -y chromium")
	}
	t.Skip("chromium not found; install it to run the browser test")
	return ""
}

// TestBrowserUI drives the web UI in real headless Chromium against the
// all-in-one server: sign in, submit a mandelbrot job from the generated
// form, watch its bar move over the event stream to 100 %, download the PNG
// through a download link, see the preview, and cancel another job. It
// fails on any script error or CSP violation in the page, and saves a
// screenshot to testdata/ui-job.png for review.
func TestBrowserUI(t *testing.T) {
	chrome := findChromium(t)
	rdb := redistest.Client(t)
	ctx := context.Background()
	stack := devstack.Start(t, rdb, devstack.Options{Config: app.Config{Argon2: cheapArgon2}})
	if err := identity.NewUsers(rdb, cheapArgon2, nil).Add(ctx, "ann", "correct horse"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(stack.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") {
		t.Fatalf("CSP %q", csp)
	}

	b := startBrowser(t, chrome, 1200)
	bctx := b.ctx

	run := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, steps...); err != nil {
			page, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`location.hash + " | state=" + document.getElementById("job-state").textContent +
				" | error=" + document.getElementById("job-error").textContent + " | status=" + document.getElementById("status").textContent +
				" | submit-error=" + document.getElementById("submit-error").textContent + " | stream=" + (stream ? stream.readyState : "none") + " | msg=" + document.getElementById("job-message").textContent`))
			t.Fatalf("%s: %v (page: %s)", what, err, page)
		}
	}
	poll := func(expr string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Poll[bool](expr, chromedp.WithPollingInterval(20*time.Millisecond))(ctx, tg)
			return err
		})
	}
	waitText := func(id, want string) chromedp.Action[chromedp.Void] {
		return poll(`document.getElementById(` + jsString(id) + `).textContent === ` + jsString(want))
	}
	eval := func(expr string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Evaluate[any](expr)(ctx, tg)
			return err
		})
	}
	choose := func(typ string) chromedp.Action[chromedp.Void] {
		// The form is visible before GET /v1/job-types has filled the
		// list; choosing earlier races it.
		return chromedp.Steps(poll(`document.querySelector("#submit-type option[value=`+jsString(typ)+`]") !== null`),
			chromedp.SetValue(chromedp.ID("submit-type"), typ),
			eval(`document.getElementById("submit-type").dispatchEvent(new Event("change"))`))
	}
	set := func(id, value string) chromedp.Action[chromedp.Void] {
		return chromedp.SetValue(chromedp.ID(id), value)
	}

	// By keyboard alone: Enter in the password field submits the form.
	run("sign in", chromedp.Navigate(stack.URL),
		chromedp.WaitVisible(chromedp.ID("login-user")),
		chromedp.SendKeys(chromedp.ID("login-user"), "ann"),
		chromedp.SendKeys(chromedp.ID("login-password"), "correct horse"+kb.Enter),
		chromedp.WaitVisible(chromedp.ID("submit-form")))

	// A mandelbrot view of the seahorse valley: slow enough (about half a
	// second) for its progress to be seen moving.
	run("fill the generated form", choose("mandelbrot"),
		chromedp.WaitVisible(chromedp.ID("in-max_iter")),
		// Every control, generated ones included, has a label a screen
		// reader can announce.
		poll(unlabelledControls+` === 0`),
		set("in-width", "480"), set("in-height", "360"), set("in-max_iter", "5000"),
		set("in-x_min", "-0.75"), set("in-x_max", "-0.74"), set("in-y_min", "0.1"), set("in-y_max", "0.11"))
	run("submit and watch",
		eval(`window.__seen = [];
			new MutationObserver(() => window.__seen.push(document.getElementById("job-progress").value))
				.observe(document.getElementById("job-progress"), {attributes: true});`),
		chromedp.Click(chromedp.CSS("#submit-form button[type=submit]")),
		chromedp.WaitVisible(chromedp.ID("view-job")),
		waitText("job-state", "succeeded"),
		chromedp.WaitVisible(chromedp.ID("job-download")))
	seen, err := chromedp.Run(bctx, chromedp.Evaluate[[]float64](`window.__seen`))
	if err != nil {
		t.Fatal(err)
	}
	moved := false
	for _, v := range seen {
		moved = moved || (v > 0 && v < 100)
	}
	if !moved || len(seen) == 0 || seen[len(seen)-1] != 100 {
		t.Fatalf("progress bar values %v: want some between 0 and 100, ending at 100", seen)
	}

	png, err := chromedp.Run(bctx, chromedp.Evaluate[[]int](
		`fetch(document.getElementById("job-download").href).then(r => r.arrayBuffer()).then(b => Array.from(new Uint8Array(b).slice(0, 8)))`,
		chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	run("see the preview", poll(`document.getElementById("job-preview").naturalWidth === 480`))
	if len(png) != 8 || png[0] != 0x89 || png[1] != 'P' || png[2] != 'N' || png[3] != 'G' {
		t.Fatalf("download starts %v, want a PNG", png)
	}
	if shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100)); err != nil {
		t.Fatal(err)
	} else if err := os.MkdirAll("testdata", 0o755); err == nil {
		_ = os.WriteFile(filepath.Join("testdata", "ui-job.png"), shot, 0o644)
	}

	// The jobs list shows it, with its state.
	run("jobs list", chromedp.Navigate(stack.URL+"/#jobs"),
		poll(`Array.from(document.querySelectorAll("#jobs-table tbody tr")).some(r => r.textContent.includes("mandelbrot") && r.textContent.includes("succeeded"))`),
		chromedp.Click(chromedp.CSS("#jobs-table tbody a")),
		waitText("job-state", "succeeded"),
		chromedp.WaitVisible(chromedp.ID("job-share")))

	// Share: a read-only link carries its token in the #fragment.
	run("share", chromedp.Click(chromedp.ID("job-share")), chromedp.WaitVisible(chromedp.ID("job-share-url")))
	shared, err := chromedp.Run(bctx, chromedp.Value(chromedp.ID("job-share-url")))
	if err != nil || !strings.Contains(shared, "#job=") || !strings.Contains(shared, "&token=") {
		t.Fatalf("share link %q %v", shared, err)
	}
	run("open the shared page", chromedp.Navigate(shared), waitText("job-state", "succeeded"),
		poll(`document.getElementById("job-cancel").hidden && document.getElementById("nav").hidden`))

	// Sessions and API keys: revoke another session, create a key, see it
	// listed, revoke it.
	other := signInOverHTTP(t, stack.URL, "ann", "correct horse", "other-laptop/1.0")
	run("account page", chromedp.Navigate(stack.URL+"/#account"),
		poll(`document.getElementById("sessions").textContent.includes("This browser")`),
		poll(`document.getElementById("sessions").textContent.includes("other-laptop/1.0")`),
		poll(unlabelledControls+` === 0`),
		chromedp.Click(chromedp.CSS(`#sessions button[aria-label="Revoke session"]`)),
		poll(`!document.getElementById("sessions").textContent.includes("other-laptop/1.0")`),
		chromedp.SendKeys(chromedp.ID("key-name"), "laptop"),
		chromedp.Click(chromedp.CSS("#key-form button")),
		chromedp.WaitVisible(chromedp.ID("key-new")),
		poll(`document.getElementById("keys").textContent.includes("laptop")`),
		chromedp.Click(chromedp.CSS(`#keys button[aria-label="Revoke key laptop"]`)),
		poll(`!document.getElementById("keys").textContent.includes("laptop")`))
	keys, _ := identity.NewAPIKeys(rdb, nil).ListUser(ctx, "ann")
	for _, k := range keys {
		if k.Name == "laptop" {
			t.Fatalf("the key revoked in the UI is still there: %+v", k)
		}
	}
	// Revoke all my API keys asks first; Cancel leaves them, Yes ends
	// every one and leaves the session signed in.
	run("revoke all API keys",
		chromedp.SendKeys(chromedp.ID("key-name"), "ci"),
		chromedp.Click(chromedp.CSS("#key-form button")),
		poll(`document.getElementById("keys").textContent.includes("ci")`),
		chromedp.Click(chromedp.ID("revoke-all-keys")),
		chromedp.WaitVisible(chromedp.ID("revoke-all-confirm")),
		chromedp.Click(chromedp.ID("revoke-all-no")),
		chromedp.WaitNotVisible(chromedp.ID("revoke-all-confirm")),
		poll(`document.getElementById("keys").children.length > 0`),
		chromedp.Click(chromedp.ID("revoke-all-keys")),
		chromedp.Click(chromedp.ID("revoke-all-yes")),
		poll(`document.getElementById("keys").children.length === 0`),
		poll(`document.getElementById("status").textContent.startsWith("Revoked ")`),
		poll(unlabelledControls+` === 0`))
	if keys, _ := identity.NewAPIKeys(rdb, nil).ListUser(ctx, "ann"); len(keys) != 0 {
		t.Fatalf("after revoking all in the UI ann still has keys %+v", keys)
	}

	run("cancel a long job",
		chromedp.Navigate(stack.URL+"/#jobs"),
		chromedp.WaitVisible(chromedp.ID("submit-form")),
		choose("sleep"),
		chromedp.WaitVisible(chromedp.ID("in-seconds")),
		set("in-seconds", "120"), set("in-steps", "120"),
		chromedp.Click(chromedp.CSS("#submit-form button[type=submit]")),
		waitText("job-state", "running"),
		chromedp.Click(chromedp.ID("job-cancel")),
		waitText("job-state", "canceled"))

	if code := sessionsStatus(t, stack.URL, other); code != http.StatusUnauthorized {
		t.Fatalf("the session revoked in the UI answers %d, want 401", code)
	}

	run("sign out", chromedp.Click(chromedp.ID("signout")), chromedp.WaitVisible(chromedp.ID("login-form")),
		poll(`document.getElementById("nav").hidden`))
	if left, err := identity.NewSessions(rdb, identity.SessionConfig{}, nil).List(ctx, "ann"); err != nil || len(left) != 0 {
		t.Fatalf("after signing out ann still has sessions %+v (%v)", left, err)
	}

	b.checkNoPageErrors(t)
}

// unlabelledControls counts the visible form controls with neither a
// <label> nor an aria-label.
const unlabelledControls = `Array.from(document.querySelectorAll("input, select, textarea"))
	.filter(el => el.offsetParent !== null && el.labels.length === 0 && !el.getAttribute("aria-label")).length`

// browser is a headless Chromium for one test, gathering what the page
// reports as uncaught exceptions and console errors.
type browser struct {
	ctx    context.Context
	mu     sync.Mutex
	errors []string
}

// startBrowser starts Chromium at a window width of width (CSS px); it
// stops when the test ends or after 90 s.
func startBrowser(t *testing.T, chrome string, width int) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chrome), chromedp.NoSandbox,
		chromedp.WindowSize(width, 1000), chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(cancelBrowser)
	bctx, cancelTimeout := context.WithTimeout(bctx, 90*time.Second)
	t.Cleanup(cancelTimeout)
	b := &browser{ctx: bctx}
	if err := chromedp.Listen(bctx, func(ev any) {
		b.mu.Lock()
		defer b.mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventExceptionThrown:
			b.errors = append(b.errors, e.ExceptionDetails.Text)
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError {
				b.errors = append(b.errors, "console.error")
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	return b
}

// checkNoPageErrors fails the test if the page reported an error.
func (b *browser) checkNoPageErrors(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.errors) > 0 {
		t.Fatalf("the page reported errors: %v", b.errors)
	}
}

func jsString(s string) string { return "'" + strings.ReplaceAll(s, "'", `\'`) + "'" }

// signInOverHTTP creates a session as a script would and returns its bearer
// value.
func signInOverHTTP(t *testing.T, base, user, password, userAgent string) string {
	t.Helper()
	resp := do(t, "POST", base+"/v1/sessions", "", strings.NewReader(`{"username":`+strconv.Quote(user)+`,"password":`+strconv.Quote(password)+`}`),
		"Content-Type", "application/json", "User-Agent", userAgent)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("sign in: %d", resp.StatusCode)
	}
	return decode[struct{ Session string }](t, resp).Session
}

// sessionsStatus answers the status of GET /v1/sessions with a bearer session.
func sessionsStatus(t *testing.T, base, session string) int {
	t.Helper()
	return do(t, "GET", base+"/v1/sessions", session, nil).StatusCode
}
