package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/app/devstack"
	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/tokens"
)

// TestBrowserWebhooksOnceLinkAndReceipt drives the webhook, one-time link
// and receipt parts of the UI in headless Chromium against the all-in-one
// server (allowed to call loopback webhooks): a job submitted with a
// webhook to a receiver on loopback shows a Deliveries panel whose
// completed event was delivered, with the same webhook-id the receiver
// got, and the panel stops polling once every event is final; the
// one-time link the page makes downloads the result once (200, then 410);
// the Receipt button saves <job id>.receipt.jwt, byte for byte what the
// API serves, and shows its claims with the job claim the job's id and a
// note that the page did not verify it. At phone width the page does not
// scroll sideways. Screenshots: testdata/ui-submit-webhook.png,
// testdata/ui-job-webhooks.png and testdata/ui-job-webhooks-phone.png
// (and in docs/ for the README with CLAIMCHECK_UPDATE_DOCS=1).
func TestBrowserWebhooksOnceLinkAndReceipt(t *testing.T) {
	chrome := findChromium(t)
	rdb := redistest.Client(t)
	ctx := context.Background()
	hooks := startHookReceiver(t)
	stack := devstack.Start(t, rdb, devstack.Options{Config: app.Config{Argon2: cheapArgon2, WebhookAllowPrivate: true}})
	startDeliverer(t, stack, rdb)
	if err := identity.NewUsers(rdb, cheapArgon2, nil).Add(ctx, "ann", "correct horse"); err != nil {
		t.Fatal(err)
	}
	p := newUIPage(t, startBrowser(t, chrome, 1100))
	p.signIn(stack.URL)
	p.run("fill the form", p.choose("mandelbrot"),
		chromedp.WaitVisible(chromedp.ID("in-max_iter")),
		chromedp.SetValue(chromedp.ID("in-width"), "320"), chromedp.SetValue(chromedp.ID("in-height"), "240"))
	var id string
	t.Run("webhook deliveries", func(t *testing.T) {
		p := p.on(t)
		p.run("add a webhook",
			chromedp.SendKeys(chromedp.ID("submit-webhook-url"), hooks.URL+"/hooks/claimcheck"),
			// completed is the default; started is one more.
			p.poll(`document.querySelector("input[name=webhook_event][value=completed]").checked`),
			chromedp.Click(chromedp.CSS("input[name=webhook_event][value=started]")),
			p.poll(unlabelledControls+` === 0`))
		p.screenshot("ui-submit-webhook.png", true)
		p.run("submit and see the deliveries",
			chromedp.Click(chromedp.CSS("#submit-form button[type=submit]")),
			chromedp.WaitVisible(chromedp.ID("view-job")),
			p.waitText("job-state", "succeeded"),
			chromedp.WaitVisible(chromedp.ID("job-deliveries-box")),
			p.poll(`document.querySelector("#job-deliveries tr[data-event=completed][data-outcome=delivered] .badge.delivered") !== null`),
			p.poll(`document.querySelector("#job-deliveries tr[data-event=started][data-outcome=delivered]") !== null`),
			// Every event final and the job ended: no more requests.
			p.poll(`deliveriesTimer === 0 && !deliveriesBusy`))
		id = p.eval(`current`)
		completedID := p.eval(`document.querySelector("#job-deliveries tr[data-event=completed][data-outcome=delivered]").dataset.id`)
		if got := hooks.events(); !got[completedID] {
			t.Fatalf("the panel's delivered completed event %q is not among the receiver's webhook-ids %v", completedID, got)
		}
	})
	if id == "" { // the webhook part failed: the rest needs a finished job all the same
		p.run("submit", chromedp.Click(chromedp.CSS("#submit-form button[type=submit]")),
			chromedp.WaitVisible(chromedp.ID("view-job")), p.waitText("job-state", "succeeded"))
		id = p.eval(`current`)
	}
	p.run("result actions", chromedp.WaitVisible(chromedp.ID("job-download")))

	t.Run("one-time link", func(t *testing.T) {
		p := p.on(t)
		p.run("make it", chromedp.Click(chromedp.ID("job-once")),
			chromedp.WaitVisible(chromedp.ID("job-once-out")),
			p.poll(`document.getElementById("job-once-url").value.includes("/v1/results/")`),
			p.waitText("job-action-status", ""),
			p.poll(`document.getElementById("job-once-note").textContent.includes("Works once")`))
		once := p.eval(`document.getElementById("job-once-url").value`)
		first := do(t, "GET", once, "", nil)
		body, _ := io.ReadAll(first.Body)
		if first.StatusCode != http.StatusOK || !bytes.HasPrefix(body, []byte("\x89PNG")) {
			t.Fatalf("first use of the one-time link: %d, %d bytes starting %q; want 200 and the PNG", first.StatusCode, len(body), body[:min(len(body), 8)])
		}
		second := do(t, "GET", once, "", nil)
		if pb := decode[problemBody](t, second); second.StatusCode != http.StatusGone || pb.Type != "urn:claimcheck:problem:link-used" {
			t.Fatalf("second use of the one-time link: %d %+v; want 410 link-used", second.StatusCode, pb)
		}
		p.run("copy it", chromedp.Click(chromedp.ID("job-once-copy")),
			p.poll(`/^(Copied the one-time link\.|Could not copy)/.test(document.getElementById("job-action-status").textContent)`))
	})

	t.Run("receipt", func(t *testing.T) {
		p := p.on(t)
		downloads := t.TempDir()
		if _, err := chromedp.CallBrowser(p.b.ctx, cdpbrowser.SetDownloadBehavior, cdpbrowser.SetDownloadBehaviorParams{
			Behavior: cdpbrowser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads}); err != nil {
			t.Fatal(err)
		}
		p.run("save and show it", chromedp.Click(chromedp.ID("job-receipt")),
			chromedp.WaitVisible(chromedp.ID("job-receipt-box")),
			p.poll(`document.querySelector("#job-receipt-claims dd[data-claim=job]").textContent === current`),
			p.poll(`document.getElementById("job-receipt-box").textContent.includes("this page did not verify the signature")`),
			p.waitText("job-receipt-verify", "claimcheck receipt verify "+id+".receipt.jwt --jwks "+stack.URL+"/.well-known/jwks.json"),
			p.waitText("job-action-status", ""))
		var file []byte
		waitfor.True(t, 10*time.Second, func() bool {
			var err error
			file, err = os.ReadFile(filepath.Join(downloads, id+".receipt.jwt"))
			return err == nil && len(file) > 0
		})
		resp := do(t, "GET", stack.URL+"/v1/jobs/"+id+"/receipt", p.eval(`tokens.get(current)`), nil)
		served, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !bytes.Equal(bytes.TrimSpace(served), file) {
			t.Fatalf("GET receipt: %d %q; the saved file is %q", resp.StatusCode, served, file)
		}
		if job := receiptJob(t, stack, file); job != id {
			t.Fatalf("the receipt's job claim is %q, want %q", job, id)
		}
	})
	p.screenshot("ui-job-webhooks.png", true)

	// Phone width: the page fits, and each delivery is a small card.
	p.run("phone width", chromedp.EmulateViewport(390, 844),
		p.poll(`getComputedStyle(document.querySelector("#job-deliveries tbody tr")).display === "block"`),
		p.poll(`document.documentElement.scrollWidth <= window.innerWidth`))
	p.screenshot("ui-job-webhooks-phone.png", true)
	p.b.checkNoPageErrors(t)
}

// TestBrowserWebhookRefused submits a job with a webhook to loopback to a
// server that does not allow internal addresses: the form shows the
// problem's detail beside the URL field and stays put, no job is created
// and the receiver hears nothing. The same form without the webhook then
// submits a job whose page shows no Deliveries panel and never asks for
// its deliveries. Screenshot: testdata/ui-submit-webhook-refused.png.
func TestBrowserWebhookRefused(t *testing.T) {
	chrome := findChromium(t)
	rdb := redistest.Client(t)
	ctx := context.Background()
	hooks := startHookReceiver(t)
	var asked atomic.Int32 // GET …/deliveries
	stack := devstack.Start(t, rdb, devstack.Options{Config: app.Config{Argon2: cheapArgon2},
		Wrap: func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasSuffix(r.URL.Path, "/deliveries") {
					asked.Add(1)
				}
				h.ServeHTTP(w, r)
			})
		}})
	if err := identity.NewUsers(rdb, cheapArgon2, nil).Add(ctx, "ann", "correct horse"); err != nil {
		t.Fatal(err)
	}
	// What the API answers, so the page can be held to it.
	raw := `{"type":"sleep","input":{"seconds":0},"webhook":{"url":"` + hooks.URL + `/h"}}`
	resp := do(t, "POST", stack.URL+"/v1/jobs", stack.APIKey, strings.NewReader(raw))
	pb := decode[problemBody](t, resp)
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.HasPrefix(pb.Type, "urn:claimcheck:problem:") || pb.Detail == "" ||
		resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("a loopback webhook: %d %s %+v; want 422 problem+json", resp.StatusCode, resp.Header.Get("Content-Type"), pb)
	}
	if strings.Contains(pb.Detail, hooks.URL) {
		t.Fatalf("the refusal echoes the webhook URL: %q", pb.Detail)
	}

	p := newUIPage(t, startBrowser(t, chrome, 1100))
	p.signIn(stack.URL)
	p.run("submit with a loopback webhook", p.choose("sleep"),
		chromedp.WaitVisible(chromedp.ID("in-seconds")),
		chromedp.SetValue(chromedp.ID("in-seconds"), "0"),
		chromedp.SendKeys(chromedp.ID("submit-webhook-url"), hooks.URL+"/h"),
		chromedp.Click(chromedp.CSS("#submit-form button[type=submit]")),
		p.waitText("submit-webhook-error", pb.Detail),
		p.poll(`document.getElementById("submit-webhook-url").getAttribute("aria-invalid") === "true"`),
		p.poll(`document.getElementById("submit-error").textContent === ""`),
		p.waitText("status", ""),
		p.poll(`!document.getElementById("view-jobs").hidden && document.getElementById("submit-webhook-url").value !== ""`))
	p.screenshot("ui-submit-webhook-refused.png", false)
	if list := decode[struct{ Jobs []json.RawMessage }](t, do(t, "GET", stack.URL+"/v1/jobs", stack.APIKey, nil)); len(list.Jobs) != 0 {
		t.Fatalf("a refused submit created jobs: %s", list.Jobs)
	}
	if got := hooks.events(); len(got) != 0 {
		t.Fatalf("the receiver was called: %v", got)
	}

	// Editing the URL clears the error; without one the job goes through,
	// and its page has no Deliveries panel and never asks for any.
	p.run("submit without the webhook",
		chromedp.SendKeys(chromedp.ID("submit-webhook-url"), kb.Backspace),
		p.waitText("submit-webhook-error", ""),
		p.poll(`(document.getElementById("submit-webhook-url").value = "") === ""`),
		chromedp.Click(chromedp.CSS("#submit-form button[type=submit]")),
		chromedp.WaitVisible(chromedp.ID("view-job")),
		p.waitText("job-state", "succeeded"),
		p.poll(`document.getElementById("job-deliveries-box").hidden && deliveriesTimer === 0 && !deliveriesBusy`))
	if n := asked.Load(); n != 0 {
		t.Fatalf("the page of a job submitted without a webhook asked for its deliveries %d times", n)
	}
	p.b.checkNoPageErrors(t)
}

// startDeliverer runs the webhook deliverer beside the stack's worker, as
// claimcheck dev does (devstack runs none), its completed events linking
// to the stack.
func startDeliverer(t *testing.T, stack *devstack.Stack, rdb redis.UniversalClient) {
	t.Helper()
	d, err := app.Webhooks(stack.Config, rdb, stack.URL)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Shutdown)
}

// hookReceiver is a webhook endpoint on loopback that answers 204 and
// remembers the webhook-id of every request.
type hookReceiver struct {
	*httptest.Server
	mu  sync.Mutex
	ids map[string]bool
}

func startHookReceiver(t *testing.T) *hookReceiver {
	t.Helper()
	h := &hookReceiver{ids: map[string]bool{}}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		h.mu.Lock()
		h.ids[r.Header.Get("webhook-id")] = true
		h.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookReceiver) events() map[string]bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]bool, len(h.ids))
	for k, v := range h.ids {
		out[k] = v
	}
	return out
}

// uiPage drives one browser for one test, failing it with the page's state
// when a step fails.
type uiPage struct {
	t *testing.T
	b *browser
}

func newUIPage(t *testing.T, b *browser) *uiPage { return &uiPage{t: t, b: b} }

// on is p failing t instead, for a subtest.
func (p *uiPage) on(t *testing.T) *uiPage { return &uiPage{t: t, b: p.b} }

func (p *uiPage) run(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	if err := chromedp.Do(p.b.ctx, steps...); err != nil {
		page, _ := chromedp.Run(p.b.ctx, chromedp.Evaluate[string](`location.hash + " | state=" + document.getElementById("job-state").textContent +
			" | error=" + document.getElementById("job-error").textContent + " | status=" + document.getElementById("status").textContent +
			" | submit-error=" + document.getElementById("submit-error").textContent + " | webhook-error=" + document.getElementById("submit-webhook-error").textContent +
			" | action=" + document.getElementById("job-action-status").textContent + " | deliveries=" + JSON.stringify(deliveries)`))
		p.t.Fatalf("%s: %v (page: %s)", what, err, page)
	}
}

func (p *uiPage) poll(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Poll[bool](expr, chromedp.WithPollingInterval(20*time.Millisecond))(ctx, tg)
		return err
	})
}

func (p *uiPage) waitText(id, want string) chromedp.Action[chromedp.Void] {
	return p.poll(`document.getElementById(` + jsString(id) + `).textContent === ` + jsString(want))
}

// eval returns the string expr evaluates to.
func (p *uiPage) eval(expr string) string {
	p.t.Helper()
	v, err := chromedp.Run(p.b.ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		p.t.Fatalf("%s: %v", expr, err)
	}
	return v
}

func (p *uiPage) choose(typ string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(p.poll(`document.querySelector("#submit-type option[value=`+jsString(typ)+`]") !== null`),
		chromedp.SetValue(chromedp.ID("submit-type"), typ),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Evaluate[any](`document.getElementById("submit-type").dispatchEvent(new Event("change"))`)(ctx, tg)
			return err
		}))
}

func (p *uiPage) signIn(base string) {
	p.t.Helper()
	p.run("sign in", chromedp.Navigate(base),
		chromedp.WaitVisible(chromedp.ID("login-user")),
		chromedp.SendKeys(chromedp.ID("login-user"), "ann"),
		chromedp.SendKeys(chromedp.ID("login-password"), "correct horse"+kb.Enter),
		chromedp.WaitVisible(chromedp.ID("submit-form")))
}

// screenshot saves the whole page to testdata/name, and, for a picture in
// the README (inDocs), to docs/name too when CLAIMCHECK_UPDATE_DOCS=1.
func (p *uiPage) screenshot(name string, inDocs bool) {
	p.t.Helper()
	// Two frames: what the last step changed is painted, not half of it.
	if _, err := chromedp.Run(p.b.ctx, chromedp.Evaluate[any](`new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))`, chromedp.EvalAwaitPromise)); err != nil {
		p.t.Fatal(err)
	}
	shot, err := chromedp.Run(p.b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Fatal(err)
	}
	dirs := []string{"testdata"}
	if inDocs && os.Getenv("CLAIMCHECK_UPDATE_DOCS") == "1" {
		dirs = append(dirs, filepath.Join("..", "docs"))
	}
	for _, dir := range dirs {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			p.t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), shot, 0o644); err != nil {
			p.t.Fatal(err)
		}
	}
}

// receiptJob verifies a receipt against the keys of kind receipt in the
// stack's JWKS, as claimcheck receipt verify does, and returns its job claim.
func receiptJob(t *testing.T, stack *devstack.Stack, raw []byte) string {
	t.Helper()
	keys, err := tokens.NewRemoteKeysOf(context.Background(), stack.URL+"/.well-known/jwks.json", tokens.KindReceipt, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := (&tokens.ReceiptVerifier{Keys: keys}).VerifyReceipt(string(raw))
	if err != nil {
		t.Fatalf("the saved receipt does not verify: %v", err)
	}
	return c.Job
}
