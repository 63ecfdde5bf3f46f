package app_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/syncbuf"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/tokens"
	"github.com/claimcheck/claimcheck/worker/builtin"
)

func TestMetricsReadinessAndRequestIDs(t *testing.T) {
	s := newStack(t)
	sub := s.submit(t, `{"type":"count"}`)
	s.waitState(t, sub, jobs.StateSucceeded)
	do(t, "GET", s.progress.URL+sub.Links.Self, sub.Token, nil)
	do(t, "GET", s.progress.URL+sub.Links.Self, "not-a-token", nil)

	ops := httptest.NewServer(app.OpsHandler(s.cfg, s.rdb))
	defer ops.Close()
	r := do(t, "GET", ops.URL+"/metrics", "", nil)
	body, _ := io.ReadAll(r.Body)
	for _, want := range []string{
		`claimcheck_jobs_submitted_total{type="count"}`,
		`claimcheck_jobs_finished_total{state="succeeded",type="count"}`,
		`claimcheck_token_verifications_total{kind="job",result="ok"}`,
		`claimcheck_token_verifications_total{kind="job",result="malformed"}`,
		`claimcheck_http_request_duration_seconds_count{method="GET",route="/v1/jobs/:id",status="200"}`,
		`claimcheck_event_streams_open`,
		`go_goroutines`,
	} {
		if r.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(string(body), sub.ID) || strings.Contains(string(body), "not-a-token") {
		t.Error("/metrics carries an id or a token")
	}

	for _, url := range []string{s.api.URL, s.progress.URL} {
		if r := do(t, "GET", url+"/readyz", "", nil); r.StatusCode != 200 {
			t.Errorf("%s/readyz: %d", url, r.StatusCode)
		}
	}
	// With Redis gone, readiness says so (and liveness does not).
	dead := redis.NewClient(&redis.Options{Addr: redistest.Addr()})
	dead.Close()
	deadOps := httptest.NewServer(app.OpsHandler(app.Config{Logger: slog.New(slog.DiscardHandler)}, dead))
	defer deadOps.Close()
	if r := do(t, "GET", deadOps.URL+"/readyz", "", nil); r.StatusCode != 503 {
		t.Fatalf("readyz without redis: %d", r.StatusCode)
	}
	if r := do(t, "GET", deadOps.URL+"/healthz", "", nil); r.StatusCode != 200 {
		t.Fatalf("healthz: %d", r.StatusCode)
	}

	// Request ids: a proxy's well-formed one is kept, anything else replaced.
	if r := do(t, "GET", s.api.URL+"/v1/job-types", "", nil, "X-Request-Id", "edge-42"); r.Header.Get("X-Request-Id") != "edge-42" {
		t.Fatalf("request id not kept: %q", r.Header.Get("X-Request-Id"))
	}
	r = do(t, "GET", s.api.URL+"/v1/job-types", "", nil, "X-Request-Id", "bad id\twith spaces")
	if id := r.Header.Get("X-Request-Id"); !regexp.MustCompile(`^[0-9a-f]{24}$`).MatchString(id) {
		t.Fatalf("request id not replaced: %q", id)
	}
}

// TestMetricsNotOnPublicAddressOfAnyService: /metrics (request counts by
// route, queue depths, build details) was public on the gateway. Every
// public handler — api, progress, the gateway (proxying to the api) and
// dev — answers it 404 problem+json; only the operations server of
// --metrics-addr serves it, and a process started with --metrics-addr
// serves it there and not on its public address.
func TestMetricsNotOnPublicAddressOfAnyService(t *testing.T) {
	s := newStack(t)
	gwKeys, _, err := tokens.EnsureDir(s.cfg.GatewayKeyDir)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := app.Gateway(s.cfg, s.rdb, app.Identity(s.cfg, s.rdb), gwKeys)
	if err != nil {
		t.Fatal(err)
	}
	upstream, _ := url.Parse(s.api.URL)
	progressURL, _ := url.Parse(s.progress.URL)
	gwSrv := httptest.NewServer(app.GatewayHandler(s.cfg, gw, upstream, progressURL))
	defer gwSrv.Close()
	forwardAuth := httptest.NewServer(app.GatewayHandler(s.cfg, gw, nil, nil))
	defer forwardAuth.Close()
	dev, err := app.DevHandler(s.cfg, s.rdb, s.keys)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Progress.Close()
	devSrv := httptest.NewServer(dev.Handler)
	defer devSrv.Close()
	for name, base := range map[string]string{"api": s.api.URL, "progress": s.progress.URL, "gateway": gwSrv.URL, "gateway forward-auth": forwardAuth.URL, "dev": devSrv.URL} {
		r := do(t, "GET", base+"/metrics", "", nil)
		body, _ := io.ReadAll(r.Body)
		if r.StatusCode != http.StatusNotFound || !strings.Contains(r.Header.Get("Content-Type"), "application/problem+json") || strings.Contains(string(body), "claimcheck_") {
			t.Errorf("%s serves /metrics publicly: %d %s %.80q", name, r.StatusCode, r.Header.Get("Content-Type"), body)
		}
		if r := do(t, "GET", base+"/readyz", "", nil); r.StatusCode != 200 {
			t.Errorf("%s/readyz: %d (healthchecks stay public)", name, r.StatusCode)
		}
	}

	// ServeWithOps: the public address has no /metrics, the ops one does.
	cfg := s.cfg
	cfg.Addr, cfg.MetricsAddr = "127.0.0.1:0", "127.0.0.1:0"
	ctx, stop := context.WithCancel(context.Background())
	public := make(chan string, 1)
	served := make(chan error, 1)
	var logs syncbuf.Buffer // the server writes it while the test reads
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	go func() {
		served <- app.ServeWithOps(ctx, cfg, s.rdb, app.Handler(cfg, s.prog), func(a string) { public <- a })
	}()
	pub := <-public
	metricsAddr := regexp.MustCompile(`msg="metrics listening" addr=(\S+)`)
	waitfor.True(t, 5*time.Second, func() bool { return metricsAddr.MatchString(logs.String()) })
	opsAddr := metricsAddr.FindStringSubmatch(logs.String())[1]
	if r := do(t, "GET", "http://"+pub+"/metrics", "", nil); r.StatusCode != http.StatusNotFound {
		t.Errorf("public address of ServeWithOps serves /metrics: %d", r.StatusCode)
	}
	r := do(t, "GET", "http://"+opsAddr+"/metrics", "", nil)
	body, _ := io.ReadAll(r.Body)
	if r.StatusCode != 200 || !strings.Contains(string(body), "go_goroutines") {
		t.Errorf("--metrics-addr does not serve /metrics: %d", r.StatusCode)
	}
	stop()
	if err := <-served; err != nil {
		t.Fatalf("ServeWithOps: %v", err)
	}
}

// TestServeShutsDownGracefully cancels Serve's context (what SIGTERM does)
// while a request is in flight: the server stops accepting at once, the
// request still gets its whole answer, and Serve returns cleanly.
func TestServeShutsDownGracefully(t *testing.T) {
	inFlight, release := make(chan struct{}), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(inFlight)
		<-release
		io.WriteString(w, "finished")
	})
	ctx, stop := context.WithCancel(context.Background())
	addrc, served := make(chan string, 1), make(chan error, 1)
	go func() { served <- app.Serve(ctx, "127.0.0.1:0", h, func(a string) { addrc <- a }) }()
	addr := <-addrc

	answer := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/slow")
		if err != nil {
			answer <- "error: " + err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		answer <- fmt.Sprintf("%d %s", resp.StatusCode, b)
	}()
	<-inFlight
	stop() // SIGTERM
	waitfor.True(t, 5*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case err := <-served:
		t.Fatalf("Serve returned (%v) with a request in flight", err)
	default:
	}
	close(release)
	if got := <-answer; got != "200 finished" {
		t.Fatalf("in-flight request during shutdown: %s", got)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

// TestOpsReadinessIncludesAnEmbeddedWorkersStore: dev and embedded mode
// serve one ops server for every part; its /readyz must fail, naming the
// check and no path, when the in-process worker's results store does.
func TestOpsReadinessIncludesAnEmbeddedWorkersStore(t *testing.T) {
	rdb := redistest.Client(t)
	cfg := app.Config{Logger: slog.New(slog.DiscardHandler), ResultsDir: filepath.Join(t.TempDir(), "results"), Types: builtin.Types()}
	cfg.Worker.ResultsMinFree = -1
	cfg.Worker.ResultsCheckInterval = 50 * time.Millisecond
	w, err := app.Worker(cfg, rdb)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Shutdown)
	ops := httptest.NewServer(app.OpsHandler(cfg, rdb, w.ReadyChecks()...))
	defer ops.Close()
	if r := do(t, "GET", ops.URL+"/readyz", "", nil); r.StatusCode != 200 {
		t.Fatalf("readyz with a good store: %d", r.StatusCode)
	}
	if err := os.Rename(cfg.ResultsDir, cfg.ResultsDir+".away"); err != nil {
		t.Fatal(err)
	}
	var body string
	waitfor.True(t, 10*time.Second, func() bool {
		r := do(t, "GET", ops.URL+"/readyz", "", nil)
		b, _ := io.ReadAll(r.Body)
		body = string(b)
		return r.StatusCode == 503
	})
	if !strings.Contains(body, "results-store-writable") || strings.Contains(body, cfg.ResultsDir) {
		t.Fatalf("readyz body %q: want the failing check named, and no path", body)
	}
}
