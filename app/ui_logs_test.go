package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/app/devstack"
	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/worker"
	"github.com/claimcheck/claimcheck/worker/builtin"
)

// TestBrowserJobLogPane drives the job page's log pane in headless
// Chromium against the all-in-one server, with a Go handler writing its
// log through Task.Logf: the lines appear while the job runs; the pane
// follows new lines at the bottom and stays put once the reader scrolled
// up, offering a jump back; opened after a job that outran the log's cap,
// it says lines were dropped and shows the newest. Screenshot:
// testdata/ui-logs.png.
func TestBrowserJobLogPane(t *testing.T) {
	chrome := findChromium(t)
	rdb := redistest.Client(t)
	ctx := context.Background()
	release := make(chan struct{}, 1)
	const later = 10_200
	build := worker.Type{
		Name: "build", Description: "compiles something, talking about it", Timeout: time.Minute,
		InputSchema: json.RawMessage(`{"type":"object"}`),
		Handle: func(ctx context.Context, t *worker.Task) error {
			t.Logf("fetching sources for job %s", t.ID())
			for i := 1; i <= 40; i++ {
				t.Logf("compile pkg/%02d … ok (%d ms)", i, 40+i*7)
			}
			t.Logger().Info("waiting for a runner", "queue", "default")
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
			for i := 1; i <= later; i++ {
				t.Logf("test %05d/%d … PASS", i, later)
			}
			t.Logf("all done: %d tests passed", later)
			return nil
		},
	}
	stack := devstack.Start(t, rdb, devstack.Options{Config: app.Config{Argon2: cheapArgon2, Types: append(builtin.Types(), build)}})
	if err := identity.NewUsers(rdb, cheapArgon2, nil).Add(ctx, "ann", "correct horse"); err != nil {
		t.Fatal(err)
	}
	b := startBrowser(t, chrome, 1100)
	bctx := b.ctx
	run := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, steps...); err != nil {
			page, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`location.hash + " | state=" + document.getElementById("job-state").textContent +
				" | log rows=" + document.getElementById("job-log").childElementCount + " | last=" + (document.getElementById("job-log").lastElementChild || {}).textContent`))
			t.Fatalf("%s: %v (page: %s)", what, err, page)
		}
	}
	poll := func(expr string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Poll[bool](expr, chromedp.WithPollingInterval(20*time.Millisecond))(ctx, tg)
			return err
		})
	}
	eval := func(expr string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Evaluate[any](expr)(ctx, tg)
			return err
		})
	}
	const pane = `document.getElementById("job-log")`
	const atBottom = `(` + pane + `.scrollHeight - ` + pane + `.scrollTop - ` + pane + `.clientHeight < 4)`
	const lastRow = pane + `.lastElementChild.textContent`

	run("sign in and submit", chromedp.Navigate(stack.URL),
		chromedp.WaitVisible(chromedp.ID("login-user")),
		chromedp.SendKeys(chromedp.ID("login-user"), "ann"),
		chromedp.SendKeys(chromedp.ID("login-password"), "correct horse"+kb.Enter),
		chromedp.WaitVisible(chromedp.ID("submit-form")),
		poll(`document.querySelector("#submit-type option[value=build]") !== null`),
		chromedp.SetValue(chromedp.ID("submit-type"), "build"),
		eval(`document.getElementById("submit-type").dispatchEvent(new Event("change"))`),
		chromedp.Click(chromedp.CSS("#submit-form button[type=submit]")),
		chromedp.WaitVisible(chromedp.ID("view-job")),
		poll(`document.getElementById("job-type").textContent === "build"`))
	// Written while the job runs (it waits for release): there, in order,
	// each with its time, and the pane at its bottom.
	run("lines while running", poll(lastRow+`.endsWith('level=INFO msg="waiting for a runner" queue=default')`),
		poll(`document.getElementById("job-state").textContent === "running"`),
		poll(pane+`.querySelectorAll(".l").length === 42`),
		poll(pane+`.firstElementChild.textContent.includes("fetching sources for job")`),
		poll(`/^\d\d:\d\d:\d\d\.\d{3}$/.test(`+pane+`.querySelector(".t").textContent)`),
		poll(`getComputedStyle(`+pane+`).fontFamily.includes("monospace")`),
		poll(`document.getElementById("job-log-count").textContent === "42 lines"`))

	// The reader scrolls up: new lines arrive without moving the view, and
	// a button offers to jump back to them.
	run("scroll up", eval(pane+`.scrollTop = 0; `+pane+`.dispatchEvent(new Event("scroll"))`),
		poll(`!document.getElementById("job-log-follow").hidden`))
	release <- struct{}{}
	run("new lines while scrolled up", poll(`document.getElementById("job-state").textContent === "succeeded"`),
		poll(lastRow+fmt.Sprintf(`.endsWith("all done: %d tests passed")`, later)),
		poll(pane+`.scrollTop === 0`),
		poll(pane+`.childElementCount <= 10050`))
	run("jump to the newest", chromedp.Click(chromedp.ID("job-log-follow")),
		poll(atBottom), poll(`document.getElementById("job-log-follow").hidden`))

	// Opened again after the end: the log kept its newest 10,000 lines;
	// the pane says the rest were dropped and sits at the newest.
	run("reopen", chromedp.Navigate(stack.URL+"/#jobs"), chromedp.WaitVisible(chromedp.ID("jobs-table")),
		poll(`document.querySelector("#jobs-table tbody a") !== null`),
		chromedp.Click(chromedp.CSS("#jobs-table tbody a")),
		poll(lastRow+fmt.Sprintf(`.endsWith("all done: %d tests passed")`, later)),
		poll(pane+`.firstElementChild.className === "note" && /^\[… \d+ earlier lines dropped\]$/.test(`+pane+`.firstElementChild.textContent)`),
		poll(`!document.getElementById("job-log-dropped").hidden && document.getElementById("job-log-dropped").textContent.includes("earlier lines were dropped")`),
		poll(atBottom))
	if shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100)); err != nil {
		t.Fatal(err)
	} else if err := os.MkdirAll("testdata", 0o755); err == nil {
		_ = os.WriteFile(filepath.Join("testdata", "ui-logs.png"), shot, 0o644)
	}
	b.checkNoPageErrors(t)
}
