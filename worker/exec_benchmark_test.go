package worker_test

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/claimcheck/claimcheck/internal/blob"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/worker"
)

// benchInput is the trivial job of the exec-overhead benchmarks: read the
// input, write it back as the result.
var benchInput = json.RawMessage(`{"text":"the quick brown fox jumps over the lazy dog"}`)

// goEcho is the Go handler doing the same work as the exec programs.
var goEcho = worker.Type{
	Name: "go-echo", Timeout: time.Minute,
	Handle: func(ctx context.Context, t *worker.Task) error {
		w, err := t.Result("application/json")
		if err != nil {
			return err
		}
		_, err = w.Write(t.Input())
		return err
	},
}

// benchExecTypes loads the exec types the overhead benchmarks compare.
func benchExecTypes(b *testing.B) []worker.Type {
	b.Helper()
	file := filepath.Join(b.TempDir(), "types.yaml")
	// python3 on PATH may be a wrapper (pyenv's shim is a shell script);
	// the interpreter itself is measured too.
	python, err := exec.Command("python3", "-c", "import sys; print(sys.executable)").Output()
	if err != nil {
		b.Fatal(err)
	}
	echo := `'import sys; sys.stdout.write(sys.stdin.read())'`
	if err := os.WriteFile(file, []byte(`types:
  - {name: exec-cat, command: [cat], timeout: 1m}
  - {name: exec-sh, command: [sh, -c, 'input=$(cat); echo "::progress 50" >&2; printf %s "$input"'], timeout: 1m}
  - {name: exec-python3-on-path, command: [python3, -c, `+echo+`], timeout: 1m}
  - {name: exec-python-interpreter, command: [`+strconv.Quote(strings.TrimSpace(string(python)))+`, -S, -c, `+echo+`], timeout: 1m}
`), 0o600); err != nil {
		b.Fatal(err)
	}
	types, err := worker.TypesFromFile(file)
	if err != nil {
		b.Fatal(err)
	}
	return types
}

// BenchmarkExecOverhead is the cost of one attempt of an exec type — spawn,
// stdin, stdout, stderr, wait, process-group clean-up — against the same
// work in a Go handler, both called the way the worker calls a handler
// (no Redis; see BenchmarkExecJob for whole jobs).
//
//	go test -run '^$' -bench ExecOverhead -benchtime 2s ./worker/
func BenchmarkExecOverhead(b *testing.B) {
	for _, typ := range append([]worker.Type{goEcho}, benchExecTypes(b)...) {
		b.Run(typ.Name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := worker.RunLocal(context.Background(), typ.Handle, benchInput, nil, io.Discard); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkExecJob is whole jobs through a worker on real Redis: record,
// enqueue, run, store the result, record success. Each iteration submits a
// batch of 10 jobs to a worker with one slot and waits for all of them;
// reported per job.
//
//	go test -run '^$' -bench ExecJob -benchtime 20x ./worker/
func BenchmarkExecJob(b *testing.B) {
	exec := benchExecTypes(b)
	for _, typ := range []worker.Type{goEcho, exec[0], exec[1]} {
		b.Run(typ.Name, func(b *testing.B) {
			h := &harness{rdb: redistest.Client(b)}
			h.store = jobs.NewStore(h.rdb, nil)
			var err error
			if h.blobs, err = blob.NewDir(b.TempDir()); err != nil {
				b.Fatal(err)
			}
			w, err := worker.New(worker.Config{ResultsDir: h.blobs.Root(), Concurrency: 1, Logger: quiet, MaxRunningJobs: -1}, h.rdb, typ)
			if err != nil {
				b.Fatal(err)
			}
			if err := w.Start(); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(w.Shutdown)
			const batch = 10
			n := 0
			for b.Loop() {
				ids := make([]string, batch)
				for i := range ids {
					n++
					ids[i] = typ.Name + "-" + strconv.Itoa(n)
					h.submitInput(b, typ, ids[i], string(benchInput))
				}
				for _, id := range ids {
					for {
						j, err := h.store.Get(context.Background(), id)
						if err == nil && j.State.Final() {
							if j.State != jobs.StateSucceeded {
								b.Fatalf("%s: %+v", id, j)
							}
							break
						}
						time.Sleep(200 * time.Microsecond)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(n), "µs/job")
		})
	}
}

// submitInput does what the API does for a job of typ with input.
func (h *harness) submitInput(t testing.TB, typ worker.Type, id, input string) {
	t.Helper()
	ctx := context.Background()
	if _, err := h.store.Create(ctx, jobs.NewJob{ID: id, Type: typ.Name, Owner: "ann", Queue: "default", MaxRetry: typ.MaxRetry, Timeout: typ.Timeout, TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(jobs.TaskPayload{Job: id, Owner: "ann", Input: json.RawMessage(input)})
	if _, err := asynq.NewClientFromRedisClient(h.rdb).EnqueueContext(ctx, asynq.NewTask(typ.Name, payload), asynq.TaskID(id),
		asynq.MaxRetry(jobs.DeliveryRetries(typ.MaxRetry)), asynq.Timeout(typ.Timeout)); err != nil {
		t.Fatal(err)
	}
}
