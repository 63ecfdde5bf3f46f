package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/metrics"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/registry"
	"github.com/claimcheck/claimcheck/internal/testutil/syncbuf"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/worker"
)

// resultType stores a small result: it fails when the store cannot take one.
var resultType = worker.Type{
	Name: "store", Timeout: time.Minute, InputSchema: anyObject,
	Handle: func(ctx context.Context, task *worker.Task) error {
		w, err := task.Result("text/plain")
		if err != nil {
			return err
		}
		_, err = io.WriteString(w, "result of "+task.ID())
		return err
	},
}

// storeWorker starts a worker on h whose results store is root, checked
// often, logging JSON to logs.
func (h *harness) storeWorker(t *testing.T, root string, minFree int64, logs io.Writer) *worker.Server {
	t.Helper()
	return h.startWorker(t, worker.Config{
		ResultsDir:               root,
		ResultsMinFree:           minFree,
		ResultsCheckInterval:     10 * time.Millisecond,
		Concurrency:              2,
		DelayedTaskCheckInterval: 50 * time.Millisecond,
		RetryDelay:               func(int, error) time.Duration { return 10 * time.Millisecond },
		Logger:                   slog.New(slog.NewJSONHandler(logs, nil)),
	})
}

// uncheckedStoreWorker is a worker on h whose results store (root) is
// checked an hour apart: only a failed result write makes it look.
func (h *harness) uncheckedStoreWorker(t *testing.T, root string) *worker.Server {
	t.Helper()
	return h.startWorker(t, worker.Config{
		ResultsDir: root, ResultsMinFree: -1, ResultsCheckInterval: time.Hour, Concurrency: 1, Logger: quiet,
		DelayedTaskCheckInterval: 50 * time.Millisecond,
	})
}

// startWorker starts a worker of resultType on h with cfg, shut down when
// the test ends.
func (h *harness) startWorker(t *testing.T, cfg worker.Config) *worker.Server {
	t.Helper()
	w, err := worker.New(cfg, h.rdb, resultType)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Shutdown)
	return w
}

// readyz asks the worker's operations server; it returns the status and body.
func (h *harness) readyz(t *testing.T, w *worker.Server) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	worker.OpsHandler(quiet, h.rdb, w).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	return rec.Code, rec.Body.String()
}

// assertStaysQueued waits for several more store checks of w (each would
// have resumed a worker whose store is usable), then asserts that none of
// ids was started: all are queued in Redis with no attempt, their tasks
// pending in Asynq.
func (h *harness) assertStaysQueued(t *testing.T, w *worker.Server, ids []string) {
	t.Helper()
	after := worker.StoreChecks(w) + 5
	waitfor.True(t, 10*time.Second, func() bool { return worker.StoreChecks(w) >= after })
	q, err := asynq.NewInspectorFromRedisClient(h.rdb).GetQueueInfo("default")
	if err != nil || q.Pending != len(ids) || q.Active != 0 || q.Retry != 0 || q.Archived != 0 {
		t.Fatalf("queue = %+v (%v), want %d pending and nothing else", q, err, len(ids))
	}
	for _, id := range ids {
		j, err := h.store.Get(context.Background(), id)
		if err != nil || j.State != jobs.StateQueued || j.Attempts != 0 || j.Error != nil {
			t.Fatalf("%s = %+v (%v), want queued and never attempted", id, j, err)
		}
	}
}

func (h *harness) submitMany(t *testing.T, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("j%02d", i)
		h.submit(t, "store", ids[i], 3)
	}
	return ids
}

func (h *harness) assertAllSucceed(t *testing.T, ids []string) {
	t.Helper()
	for _, id := range ids {
		if j := h.waitFinal(t, id); j.State != jobs.StateSucceeded || j.Attempts != 1 {
			t.Fatalf("%s = %+v (error %v), want succeeded on its first attempt", id, j, j.Error)
		}
	}
}

// countLogs counts the JSON log lines whose message starts with prefix,
// and fails on a line that is not JSON.
func countLogs(t *testing.T, logs *syncbuf.Buffer, prefix string) int {
	t.Helper()
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if line == "" {
			continue
		}
		var rec struct{ Msg string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line not JSON: %q", line)
		}
		if strings.HasPrefix(rec.Msg, prefix) {
			n++
		}
	}
	return n
}

// TestUnwritableStorePausesWorker: a worker whose results directory is
// replaced by a file (what a lost mount looks like; root ignores
// permission bits, so chmod would prove nothing) stops taking jobs. A
// backlog of 20 submitted meanwhile stays queued, none failed or even
// attempted, /readyz says why in 503 without a path, the worker leaves the
// job-type counts; once the directory is back every job succeeds. On a
// worker without the check (before issue 12), the 20 jobs failed within
// seconds.
func TestUnwritableStorePausesWorker(t *testing.T) {
	h := newHarness(t)
	root := filepath.Join(t.TempDir(), "results")
	var logs syncbuf.Buffer
	w := h.storeWorker(t, root, -1, &logs)
	if code, body := h.readyz(t, w); code != http.StatusOK {
		t.Fatalf("healthy worker: readyz %d %s", code, body)
	}
	paused := pausedGauge(t, "not_writable")

	if err := os.Rename(root, root+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, 10*time.Second, func() bool { return w.Ready() != nil })
	code, body := h.readyz(t, w)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "results-store-writable") ||
		strings.Contains(body, "results-store-space") || strings.Contains(body, root) {
		t.Fatalf("paused worker: readyz %d %s", code, body)
	}
	if err := w.Ready(); strings.Contains(err.Error(), root) {
		t.Fatalf("Ready names the path: %v", err)
	}
	if got := pausedGauge(t, "not_writable"); got != paused+1 {
		t.Fatalf("claimcheck_worker_paused{not_writable} = %g, want %g", got, paused+1)
	}
	// The pause withdraws the worker right after the check that failed.
	waitfor.True(t, 10*time.Second, func() bool { return workersOf(t, h, "store") == 0 })

	ids := h.submitMany(t, 20)
	h.assertStaysQueued(t, w, ids)

	if err := os.Remove(root); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(root+".away", root); err != nil {
		t.Fatal(err)
	}
	h.assertAllSucceed(t, ids)
	if code, body := h.readyz(t, w); code != http.StatusOK {
		t.Fatalf("resumed worker: readyz %d %s", code, body)
	}
	if got := pausedGauge(t, "not_writable"); got != paused {
		t.Fatalf("claimcheck_worker_paused{not_writable} = %g after resuming, want %g", got, paused)
	}
	waitfor.True(t, 10*time.Second, func() bool { return workersOf(t, h, "store") == 1 })
	// Hundreds of checks ran while paused; the log says it once each way,
	// and only the worker's own log names the directory.
	if p, r := countLogs(t, &logs, "results store cannot take results"), countLogs(t, &logs, "results store usable again"); p != 1 || r != 1 {
		t.Fatalf("logged pause %d and resume %d times, want once each:\n%s", p, r, logs.String())
	}
	if !strings.Contains(logs.String(), root) {
		t.Errorf("the pause log does not name the directory for the operator:\n%s", logs.String())
	}
}

// TestLowSpacePausesWorker: a results store with less free space than
// ResultsMinFree is not used. The threshold is set above any disk's free
// space, so the worker starts paused and never takes the jobs.
func TestLowSpacePausesWorker(t *testing.T) {
	h := newHarness(t)
	var logs syncbuf.Buffer
	w := h.storeWorker(t, t.TempDir(), 1<<62, &logs)
	if err := w.Ready(); err == nil {
		t.Fatal("Ready = nil with a threshold above the free space")
	}
	code, body := h.readyz(t, w)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "results-store-space") || strings.Contains(body, "results-store-writable") {
		t.Fatalf("readyz %d %s", code, body)
	}
	ids := h.submitMany(t, 5)
	h.assertStaysQueued(t, w, ids)
	if n := countLogs(t, &logs, "results store cannot take results"); n != 1 {
		t.Fatalf("logged the pause %d times:\n%s", n, logs.String())
	}
}

// TestFullStorePausesWorker runs on a real full file system: a 1 MiB
// tmpfs. Filled past the worker's 256 KiB floor, the worker pauses; filled
// to the last byte (no floor), the probe's write itself fails; emptied, the
// queued jobs run. It needs to mount, so it is skipped where that is not
// allowed, unless CLAIMCHECK_TEST_STRICT=1.
func TestFullStorePausesWorker(t *testing.T) {
	for _, tc := range []struct {
		name    string
		minFree int64
		fill    int64 // bytes written to the file system before the jobs
		reason  string
	}{
		{name: "below the floor", minFree: 256 << 10, fill: 900 << 10, reason: "results-store-space"},
		{name: "no byte left", minFree: -1, fill: 2 << 20, reason: "results-store-writable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if err := syscall.Mount("tmpfs", root, "tmpfs", 0, "size=1m"); err != nil {
				if redistest.Strict() {
					t.Fatalf("mount a tmpfs: %v", err)
				}
				t.Skipf("cannot mount a tmpfs here (%v); the results dir replaced by a file covers the same path", err)
			}
			t.Cleanup(func() { _ = syscall.Unmount(root, 0) })
			h := newHarness(t)
			var logs syncbuf.Buffer
			w := h.storeWorker(t, root, tc.minFree, &logs)
			if err := w.Ready(); err != nil {
				t.Fatalf("empty tmpfs: %v", err)
			}
			filler := filepath.Join(root, "filler")
			f, err := os.Create(filler)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = f.Write(make([]byte, tc.fill)) // ENOSPC is the point when filling it whole
			f.Close()
			waitfor.True(t, 10*time.Second, func() bool { return w.Ready() != nil })
			if code, body := h.readyz(t, w); code != http.StatusServiceUnavailable || !strings.Contains(body, tc.reason) {
				t.Fatalf("readyz %d %s", code, body)
			}
			// Ready turns false as the pause begins; the consumer stops
			// a moment later. Submitting in between let a loaded machine
			// hand it one job, which then failed on the full store.
			insp := asynq.NewInspectorFromRedisClient(h.rdb)
			waitfor.True(t, 10*time.Second, func() bool {
				srvs, err := insp.Servers()
				return err == nil && len(srvs) == 0
			})
			ids := h.submitMany(t, 20)
			h.assertStaysQueued(t, w, ids)
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
			h.assertAllSucceed(t, ids)
		})
	}
}

// workersOf is the number of live workers announcing typ, as the api
// reads it.
func workersOf(t *testing.T, h *harness, typ string) int {
	t.Helper()
	_, workers, err := registry.NewReader(h.rdb, registry.Config{}).Types(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	return workers[typ]
}

// pausedGauge reads claimcheck_worker_paused{reason} from the registry
// /metrics serves.
func pausedGauge(t *testing.T, reason string) float64 {
	t.Helper()
	mfs, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "claimcheck_worker_paused" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return 0
}

// TestStoreFailureMidJob: a store that breaks between two checks fails
// the attempt that hit it — with an error naming no server path — and that
// write failure pauses the worker at once, not at its next check (an hour
// away here), so the jobs behind it stay queued.
func TestStoreFailureMidJob(t *testing.T) {
	h := newHarness(t)
	root := filepath.Join(t.TempDir(), "results")
	w := h.uncheckedStoreWorker(t, root)
	if err := os.Rename(root, root+".away"); err != nil {
		t.Fatal(err)
	}
	h.submit(t, "store", "first", 0)
	j := h.waitFinal(t, "first")
	if j.State != jobs.StateFailed || j.Error == nil || strings.Contains(*j.Error, root) || strings.Contains(*j.Error, "/") {
		t.Fatalf("job = %+v (error %v), want failed with no path in its error", j, j.Error)
	}
	waitfor.True(t, 10*time.Second, func() bool { return w.Ready() != nil })
	// No check runs for an hour, so the stopped consumer is the proof: once
	// its asynq server is gone from Redis, nothing of this worker can take
	// a task.
	insp := asynq.NewInspectorFromRedisClient(h.rdb)
	waitfor.True(t, 10*time.Second, func() bool {
		srvs, err := insp.Servers()
		return err == nil && len(srvs) == 0
	})
	ids := h.submitMany(t, 5)
	q, err := insp.GetQueueInfo("default")
	if err != nil || q.Pending != len(ids) || q.Active != 0 {
		t.Fatalf("queue = %+v (%v), want %d pending", q, err, len(ids))
	}
}

// TestLowSpaceResumesAboveAMargin: a worker paused for space resumes only
// once a tenth more than the floor is free, so a store hovering just above
// the floor does not flap (pause, withdraw, resume, re-announce) at every
// check.
func TestLowSpaceResumesAboveAMargin(t *testing.T) {
	root := t.TempDir()
	if err := syscall.Mount("tmpfs", root, "tmpfs", 0, "size=1m"); err != nil {
		if redistest.Strict() {
			t.Fatalf("mount a tmpfs: %v", err)
		}
		t.Skipf("cannot mount a tmpfs here (%v)", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(root, 0) })
	h := newHarness(t)
	const floor = 256 << 10
	w := h.storeWorker(t, root, floor, io.Discard)
	filler := filepath.Join(root, "filler")
	fill := func(n int64) {
		t.Helper()
		if err := os.WriteFile(filler, make([]byte, n), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	fill(900 << 10) // about 124 KiB free: below the floor
	waitfor.True(t, 10*time.Second, func() bool { return w.Ready() != nil })
	fill(752 << 10) // about 272 KiB free: above the floor, under floor + 10 %
	after := worker.StoreChecks(w) + 5
	waitfor.True(t, 10*time.Second, func() bool { return worker.StoreChecks(w) >= after })
	if w.Ready() == nil {
		t.Fatal("resumed with free space just above the floor: it would flap at the floor")
	}
	fill(600 << 10) // about 424 KiB free
	waitfor.True(t, 10*time.Second, func() bool { return w.Ready() == nil })
}
