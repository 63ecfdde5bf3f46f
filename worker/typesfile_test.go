//go:build linux

// The exec tests read /proc to see whether a process is still there.

package worker_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/worker"
)

// execScripts are the programs of the exec types in execTypesFile, each
// run with sh in their directory.
var execScripts = map[string]string{
	// Reports progress, waits for the test to have seen it, then writes its result.
	"report.sh": `input=$(cat)
echo "starting $CLAIMCHECK_JOB_ID" >&2
echo "::progress 42 halfway" >&2
while [ ! -e "go-$CLAIMCHECK_JOB_ID" ]; do sleep 0.01; done
printf 'input was %s' "$input"`,
	"fail.sh": `echo "some context" >&2
echo "attempt $CLAIMCHECK_ATTEMPT broke" >&2
exit 1`,
	"badinput.sh": `echo "text is missing" >&2; exit 65`,
	// Forks a child that would run for long and waits for it.
	"forker.sh": `sleep 1000 & echo "$$ $!" > "pids-$CLAIMCHECK_JOB_ID.tmp"; mv "pids-$CLAIMCHECK_JOB_ID.tmp" "pids-$CLAIMCHECK_JOB_ID"; wait`,
	"env.sh":    `env`,
	// Exits on SIGTERM after a moment's clean-up, leaving a mark.
	"term.sh": `trap 'sleep 0.3; echo term > "term-$CLAIMCHECK_JOB_ID"; exit 143' TERM
sleep 1000 & echo "$$ $!" > "pids-$CLAIMCHECK_JOB_ID.tmp"; mv "pids-$CLAIMCHECK_JOB_ID.tmp" "pids-$CLAIMCHECK_JOB_ID"; wait`,
}

const execTypesFile = `types:
  - name: report
    command: [sh, report.sh]
    input_schema: {type: object, properties: {text: {type: string}}}
    content_type: text/plain
    timeout: 1m
    workdir: .
  - {name: fail, command: [sh, fail.sh], timeout: 1m, max_retry: 2}
  - {name: badinput, command: [sh, badinput.sh], timeout: 1m, max_retry: 5}
  - {name: forker, command: [sh, forker.sh], timeout: 1m, kill_grace: 1s}
  - {name: slow, command: [sh, forker.sh], timeout: 1s, max_retry: 0, kill_grace: 1s}
  - {name: big, command: ["yes"], timeout: 1m, max_result_bytes: 1000, max_retry: 3}
  - {name: env, command: [sh, env.sh], timeout: 1m, env: {MODEL: small, TZ: Europe/Paris}}
  - {name: term, command: [sh, term.sh], timeout: 1m, kill_grace: 1s}
`

// execTypes writes the scripts and a types file whose workdir is their
// directory, and loads it.
func execTypes(t *testing.T) ([]worker.Type, string) {
	t.Helper()
	dir := t.TempDir()
	for name, body := range execScripts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(dir, "types.yaml")
	if err := os.WriteFile(file, []byte(execTypesFile), 0o600); err != nil {
		t.Fatal(err)
	}
	// Programs run in the workdir, relative to (by default: the same as)
	// the directory the worker was started in.
	t.Chdir(dir)
	types, err := worker.TypesFromFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return types, dir
}

func typeNamed(t *testing.T, types []worker.Type, name string) worker.Type {
	t.Helper()
	i := slices.IndexFunc(types, func(x worker.Type) bool { return x.Name == name })
	if i < 0 {
		t.Fatalf("no type %s", name)
	}
	return types[i]
}

// alive reports whether pid names a process that is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || !strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
}

// forkerPids waits for job id's program to write its own and its child's
// pid (and, with running, for both to be running).
func forkerPids(t *testing.T, dir, id string, running bool) []int {
	t.Helper()
	var pids []int
	waitfor.True(t, 10*time.Second, func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "pids-"+id))
		f := strings.Fields(string(b))
		if err != nil || len(f) != 2 {
			return false
		}
		pids = pids[:0]
		for _, s := range f {
			n, _ := strconv.Atoi(s)
			pids = append(pids, n)
		}
		return !running || alive(pids[0]) && alive(pids[1])
	})
	return pids
}

func waitGone(t *testing.T, pids []int) {
	t.Helper()
	waitfor.True(t, 10*time.Second, func() bool { return !slices.ContainsFunc(pids, alive) })
}

func TestExecTypeProgressAndResult(t *testing.T) {
	types, dir := execTypes(t)
	h := start(t, types...)
	typ := typeNamed(t, types, "report")
	h.submitInput(t, typ, "r1", `{"text":"hello"}`)
	waitfor.True(t, 10*time.Second, func() bool {
		j, err := h.store.Get(context.Background(), "r1")
		return err == nil && j.State == jobs.StateRunning && j.Progress.Percent == 42 && j.Progress.Message == "halfway"
	})
	if err := os.WriteFile(filepath.Join(dir, "go-r1"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	j := h.waitFinal(t, "r1")
	want := `input was {"text":"hello"}`
	sum := sha256.Sum256([]byte(want))
	if j.State != jobs.StateSucceeded || j.Result == nil || j.Result.Size != int64(len(want)) ||
		j.Result.SHA256 != hex.EncodeToString(sum[:]) || j.Result.ContentType != "text/plain" {
		t.Fatalf("job = %+v, result %+v", j, j.Result)
	}
	f, err := h.blobs.Open("r1")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if b, _ := io.ReadAll(f); string(b) != want {
		t.Fatalf("blob %q", b)
	}
	// stderr lines are the job's log, ::progress lines are not.
	page, err := h.store.LogAfter(context.Background(), "r1", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range page.Lines {
		lines = append(lines, l.Text)
	}
	if len(lines) != 1 || lines[0] != "starting r1" {
		t.Fatalf("log lines = %q, want only the stderr line", lines)
	}
}

func TestExecTypeExitStatus(t *testing.T) {
	types, _ := execTypes(t)
	h := start(t, types...)
	h.submitInput(t, typeNamed(t, types, "fail"), "f1", `{}`)
	h.submitInput(t, typeNamed(t, types, "badinput"), "b1", `{}`)

	j := h.waitFinal(t, "f1")
	if j.State != jobs.StateFailed || j.Attempts != 3 || j.Error == nil || *j.Error != "program exited with status 1: attempt 3 broke" {
		t.Fatalf("exit 1: %+v (error %v)", j, j.Error)
	}
	j = h.waitFinal(t, "b1")
	if j.State != jobs.StateFailed || j.Attempts != 1 || j.Error == nil ||
		*j.Error != "program exited with status 65 (EX_DATAERR: bad input, not retried): text is missing" {
		t.Fatalf("exit 65: %+v (error %v)", j, j.Error)
	}
}

func TestExecTypeTimeoutKillsTheProcessGroup(t *testing.T) {
	types, dir := execTypes(t)
	h := start(t, types...)
	h.submitInput(t, typeNamed(t, types, "slow"), "s1", `{}`)
	pids := forkerPids(t, dir, "s1", false)
	j := h.waitFinal(t, "s1")
	if j.State != jobs.StateFailed || j.Error == nil || !strings.HasPrefix(*j.Error, "attempt timed out") ||
		!strings.Contains(*j.Error, "process group was sent SIGTERM") {
		t.Fatalf("job = %+v (error %v)", j, j.Error)
	}
	waitGone(t, pids)
}

func TestExecTypeCancelKillsTheProcessGroup(t *testing.T) {
	types, dir := execTypes(t)
	h := start(t, types...)
	h.submitInput(t, typeNamed(t, types, "forker"), "c1", `{}`)
	pids := forkerPids(t, dir, "c1", true)
	if _, err := jobs.CancelJob(context.Background(), h.store, asynq.NewInspectorFromRedisClient(h.rdb), "c1", jobs.AnyEpoch, time.Hour); err != nil {
		t.Fatal(err)
	}
	if j := h.waitFinal(t, "c1"); j.State != jobs.StateCanceled {
		t.Fatalf("job = %+v", j)
	}
	waitGone(t, pids)
}

func TestExecTypeResultOverItsLimitFailsOnce(t *testing.T) {
	types, _ := execTypes(t)
	h := start(t, types...)
	h.submitInput(t, typeNamed(t, types, "big"), "y1", `{}`)
	j := h.waitFinal(t, "y1")
	if j.State != jobs.StateFailed || j.Attempts != 1 || j.Error == nil || !strings.Contains(*j.Error, "1000-byte limit for big jobs") {
		t.Fatalf("job = %+v (error %v)", j, j.Error)
	}
}

func TestExecTypeEnvironment(t *testing.T) {
	t.Setenv("CLAIMCHECK_SECRET", "from-the-worker")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "do-not-pass")
	t.Setenv("LANG", "en_US.UTF-8")
	types, _ := execTypes(t) // the environment is taken when the file loads
	h := start(t, types...)
	h.submitInput(t, typeNamed(t, types, "env"), "e1", `{}`)
	if j := h.waitFinal(t, "e1"); j.State != jobs.StateSucceeded {
		t.Fatalf("job = %+v", j)
	}
	f, err := h.blobs.Open("e1")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	got := map[string]string{}
	for kv := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		k, v, _ := strings.Cut(kv, "=")
		got[k] = v
	}
	allowed := []string{"PATH", "HOME", "USER", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "MODEL", "CLAIMCHECK_JOB_ID", "CLAIMCHECK_ATTEMPT",
		"PWD", "SHLVL", "_"} // the last three sh sets itself
	for k := range got {
		if !slices.Contains(allowed, k) {
			t.Errorf("the program saw %s", k)
		}
	}
	for k, v := range map[string]string{"MODEL": "small", "TZ": "Europe/Paris", "LANG": "en_US.UTF-8", "PATH": os.Getenv("PATH"),
		"CLAIMCHECK_JOB_ID": "e1", "CLAIMCHECK_ATTEMPT": "1"} {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

// TestShutdownStopsExecPrograms: when shutdown hands a running exec job
// back, its program gets SIGTERM and Shutdown waits for it to stop; none of its
// processes survive; the job is not failed for it.
func TestShutdownStopsExecPrograms(t *testing.T) {
	types, dir := execTypes(t)
	h := newHarness(t)
	w := h.worker(t, 50*time.Millisecond, types...)
	h.submitInput(t, typeNamed(t, types, "term"), "t1", `{}`)
	pids := forkerPids(t, dir, "t1", true)
	w.Shutdown()
	if _, err := os.Stat(filepath.Join(dir, "term-t1")); err != nil {
		t.Fatalf("Shutdown returned before the program had handled SIGTERM: %v", err)
	}
	waitGone(t, pids)
	j, err := h.store.Get(context.Background(), "t1")
	if err != nil || j.State.Final() || j.Error != nil {
		t.Fatalf("handed-back job = %+v, %v", j, err)
	}
}

func TestExamplesExecRun(t *testing.T) {
	t.Chdir("..") // the repository root, as in the README
	types, err := worker.TypesFromFile("examples/exec/types.yaml")
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, types...)
	text := "The cat and the hat.\nThe end."
	in, _ := json.Marshal(map[string]string{"text": text})
	wc := typeNamed(t, types, "wordcount")
	if err := wc.Validate(in); err != nil {
		t.Fatal(err)
	}
	h.submitInput(t, wc, "w1", string(in))
	cz := typeNamed(t, types, "collatz")
	h.submitInput(t, cz, "c1", `{"n": 27}`)

	read := func(id string) []byte {
		t.Helper()
		j := h.waitFinal(t, id)
		if j.State != jobs.StateSucceeded || j.Progress.Percent != 100 {
			t.Fatalf("%s = %+v (error %v)", id, j, j.Error)
		}
		f, err := h.blobs.Open(id)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b, _ := io.ReadAll(f)
		return b
	}
	var got struct {
		Words, Lines int
		Top          []struct {
			Word  string
			Count int
		}
	}
	if err := json.Unmarshal(read("w1"), &got); err != nil {
		t.Fatal(err)
	}
	if got.Words != 7 || got.Lines != 2 || len(got.Top) == 0 || got.Top[0].Word != "the" || got.Top[0].Count != 3 {
		t.Fatalf("wordcount = %+v", got)
	}
	rows := strings.Split(strings.TrimSpace(string(read("c1"))), "\n")
	// 27 takes 111 steps and climbs to 9232.
	if len(rows) != 28 || rows[0] != "k,steps,peak" || rows[27] != "27,111,9232" || rows[1] != "1,0,1" {
		t.Fatalf("collatz: %d rows, %q … %q", len(rows), rows[0], rows[len(rows)-1])
	}
}

func TestTypesFromFileRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.WriteFile("job.sh", []byte("echo hi"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("notexec.sh", []byte("echo hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	const ok = `name: wc, command: [sh, job.sh], timeout: 1m`
	for _, tc := range []struct {
		name, file string
		want       []string // each in the error
	}{
		{"bad duration", `types: [{name: wordcount, command: [sh], timeout: 10 minutes}]`,
			[]string{`type "wordcount": timeout: "10 minutes" is not a duration`}},
		{"duration as a number", `types: [{name: wc, command: [sh], timeout: 600}]`, []string{`type "wc": timeout: 600 is not a duration`}},
		{"unknown field", `types: [{` + ok + `, retries: 3}]`, []string{`type "wc": unknown field "retries"`}},
		{"unknown top-level field", "types: [{" + ok + "}]\nversion: 2", []string{`unknown field "version"`}},
		{"no name", `types: [{` + ok + `}, {command: [sh], timeout: 1m}]`, []string{`type #2: name: required`}},
		{"bad name", `types: [{name: "word count", command: [sh], timeout: 1m}]`, []string{`type "word count": name:`}},
		{"duplicate name", `types: [{` + ok + `}, {` + ok + `}]`, []string{`type "wc": name: declared twice`}},
		{"duplicate key", `types: [{` + ok + `, timeout: 2m}]`, []string{`"timeout" already defined`}},
		{"no command", `types: [{name: wc, timeout: 1m}]`, []string{`type "wc": command: required`}},
		{"command a string", `types: [{name: wc, command: "sh job.sh", timeout: 1m}]`, []string{`type "wc": command: want a list`}},
		{"empty command", `types: [{name: wc, command: [], timeout: 1m}]`, []string{`type "wc": command: required`}},
		{"program not on PATH", `types: [{name: wc, command: [no-such-program-xyz], timeout: 1m}]`, []string{`type "wc": command: [0]:`, "no-such-program-xyz"}},
		{"program not there", `types: [{name: wc, command: [./missing.sh], timeout: 1m}]`, []string{`type "wc": command: [0]:`, "missing.sh"}},
		{"program not executable", `types: [{name: wc, command: [./notexec.sh], timeout: 1m}]`, []string{`type "wc": command: [0]:`, "not an executable file"}},
		{"no timeout", `types: [{name: wc, command: [sh]}]`, []string{`type "wc": timeout: required`}},
		{"zero timeout", `types: [{name: wc, command: [sh], timeout: 0s}]`, []string{`type "wc": timeout: 0s: must be positive`}},
		{"negative timeout", `types: [{name: wc, command: [sh], timeout: -1m}]`, []string{`type "wc": timeout: -1m: must be positive`}},
		{"sub-second timeout", `types: [{name: wc, command: [sh], timeout: 300ms}]`, []string{`type "wc": timeout: 300ms: must be at least 1s`}},
		{"max_timeout below timeout", `types: [{` + ok + `, max_timeout: 10s}]`, []string{`type "wc": max_timeout:`}},
		{"bad kill_grace", `types: [{` + ok + `, kill_grace: soon}]`, []string{`type "wc": kill_grace: "soon" is not a duration`}},
		{"negative max_retry", `types: [{` + ok + `, max_retry: -1}]`, []string{`type "wc": max_retry: -1: must be 0 or more`}},
		{"fractional max_retry", `types: [{` + ok + `, max_retry: 1.5}]`, []string{`type "wc": max_retry: 1.5 is not a whole number`}},
		{"negative max_result_bytes", `types: [{` + ok + `, max_result_bytes: -5}]`, []string{`type "wc": max_result_bytes: -5`}},
		{"bad pool", `types: [{` + ok + `, pool: GPU boxes}]`, []string{`type "wc": pool: "GPU boxes"`}},
		{"bad content type", `types: [{` + ok + `, content_type: "text/"}]`, []string{`type "wc": content_type:`}},
		{"schema does not compile", `types: [{` + ok + `, input_schema: {type: 12}}]`, []string{`type "wc": input_schema:`}},
		{"schema not JSON", `types: [{` + ok + `, input_schema: "{type"}]`, []string{`type "wc": input_schema: not valid JSON`}},
		{"schema a list", `types: [{` + ok + `, input_schema: [1]}]`, []string{`type "wc": input_schema: want a JSON Schema object`}},
		{"workdir missing", `types: [{` + ok + `, workdir: nowhere}]`, []string{`type "wc": workdir:`, "nowhere"}},
		{"workdir a file", `types: [{` + ok + `, workdir: job.sh}]`, []string{`type "wc": workdir:`, "is not a directory"}},
		{"env key", `types: [{` + ok + `, env: {"A-B": x}}]`, []string{`type "wc": env: "A-B" is not a variable name`}},
		{"env reserved", `types: [{` + ok + `, env: {CLAIMCHECK_JOB_ID: x}}]`, []string{`type "wc": env: CLAIMCHECK_JOB_ID: CLAIMCHECK_* is set by the worker`}},
		{"env value not a string", `types: [{` + ok + `, env: {N: 3}}]`, []string{`type "wc": env: N: 3 is not a string`}},
		{"not a list", `types: {name: wc}`, []string{`types: want a list`}},
		{"empty list", `types: []`, []string{`types: the list is empty`}},
		{"entry not a mapping", `types: [wc]`, []string{`type #1: want a mapping`}},
		{"not YAML", `types: [`, []string{"types.yaml: ["}},
		{"JSON with an unknown field", `{"types": [{"name": "wc", "command": ["sh"], "timeout": "1m", "Timeout": "2m"}]}`, []string{`type "wc": unknown field "Timeout"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile("types.yaml", []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			types, err := worker.TypesFromFile("types.yaml")
			if err == nil {
				t.Fatalf("loaded %d types", len(types))
			}
			msg := err.Error()
			for _, want := range append([]string{"types.yaml: "}, tc.want...) {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q\nwant it to contain %q", msg, want)
				}
			}
		})
	}
	if _, err := worker.TypesFromFile("absent.yaml"); err == nil || !strings.Contains(err.Error(), "absent.yaml") {
		t.Errorf("missing file: %v", err)
	}
}

func TestTypesFromFileFields(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.Mkdir("jobs", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("jobs/run.sh", []byte("#!/bin/sh\ncat"), 0o755); err != nil {
		t.Fatal(err)
	}
	// JSON, the same shape; the schema as a JSON string.
	file := `{"types": [
	  {"name": "echo", "description": "Echoes.", "command": ["./run.sh", "x"], "workdir": "jobs",
	   "input_schema": "{\"type\":\"object\",\"required\":[\"a\"]}", "content_type": "application/json",
	   "timeout": "90s", "max_timeout": "1h", "max_retry": 4, "max_result_bytes": 2048, "pool": "gpu", "kill_grace": "3s"},
	  {"name": "plain", "command": ["sh", "-c", "cat"], "timeout": "1m"}]}`
	if err := os.WriteFile("types.json", []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	types, err := worker.TypesFromFile("types.json")
	if err != nil {
		t.Fatal(err)
	}
	e, p := types[0], types[1]
	if e.Name != "echo" || e.Description != "Echoes." || e.ContentType != "application/json" || e.Timeout != 90*time.Second ||
		e.MaxTimeout != time.Hour || e.MaxRetry != 4 || e.MaxResultBytes != 2048 || e.Pool != "gpu" || e.Handle == nil {
		t.Errorf("echo = %+v", e)
	}
	if err := e.Validate(json.RawMessage(`{"b":1}`)); err == nil {
		t.Error("the schema was not applied")
	}
	if p.ContentType != "application/octet-stream" || p.Pool != "" || p.MaxRetry != 0 || p.InputSchema != nil {
		t.Errorf("defaults: %+v", p)
	}
	// The relative workdir is resolved against the start directory: moving
	// away afterwards does not change where the program runs.
	t.Chdir(t.TempDir())
	var out strings.Builder
	if _, err := worker.RunLocal(context.Background(), e.Handle, json.RawMessage(`{"a":1}`), nil, &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != `{"a":1}` {
		t.Errorf("echo wrote %q", out.String())
	}
}
