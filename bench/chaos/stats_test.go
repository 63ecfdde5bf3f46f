package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 5}, {99, 10}, {100, 10}, {0, 1}, {10, 1}, {11, 2}} {
		if got := Percentile(ds, c.p); got != c.want {
			t.Errorf("Percentile(%v) = %v, want %v", c.p, got, c.want)
		}
	}
	if got := Percentile(nil, 50); got != 0 {
		t.Errorf("Percentile(nil) = %v, want 0", got)
	}
	if ds[0] != 5 {
		t.Error("Percentile sorted its argument in place")
	}
}

func TestRecoveries(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	atp := func(s float64) *time.Time { x := at(s); return &x }
	kills := []time.Time{at(2), at(4), at(6)}
	obs := []Obs{
		{T: at(0.1), State: "queued"},
		{T: at(0.5), State: "running", Attempts: 1, ProgressAt: atp(0.5)},
		{T: at(3.8), State: "running", Attempts: 1, ProgressAt: atp(3.75)},
		// Frozen from 3.75: the kill at 4 ended it, not the one at 2.
		{T: at(15), State: "retrying", Attempts: 1, ProgressAt: atp(3.75), Error: "worker lost"},
		{T: at(70), State: "running", Attempts: 2, ProgressAt: atp(70)},
		{T: at(72), State: "succeeded", Attempts: 2},
	}
	got := Recoveries(obs, kills)
	if len(got) != 1 {
		t.Fatalf("Recoveries = %+v, want one", got)
	}
	if got[0].Kill != at(4) || got[0].Detect != 11*time.Second || got[0].Recover != 66*time.Second {
		t.Errorf("Recoveries = %+v, want kill at 4 s, detect 11 s, recover 66 s", got[0])
	}

	// An attempt that ends on its own (a new attempt after an ordinary
	// failure, long after any kill) is no kill's victim.
	obs = []Obs{
		{T: at(10), State: "running", Attempts: 1, ProgressAt: atp(10)},
		{T: at(11), State: "retrying", Attempts: 1, Error: "boom"},
		{T: at(13), State: "running", Attempts: 2},
		{T: at(14), State: "succeeded", Attempts: 2},
	}
	if got := Recoveries(obs, kills); len(got) != 0 {
		t.Errorf("Recoveries of a job no kill touched = %+v, want none", got)
	}

	// max_retry 0: the job ends failed "worker lost"; recovery is its end.
	obs = []Obs{
		{T: at(1), State: "running", Attempts: 1, ProgressAt: atp(1.9)},
		{T: at(14), State: "failed", Attempts: 1, Error: "worker lost"},
	}
	got = Recoveries(obs, kills)
	if len(got) != 1 || got[0].Kill != at(2) || got[0].Recover != 12*time.Second || got[0].Detect != 12*time.Second {
		t.Errorf("Recoveries of a failed job = %+v, want kill at 2 s, 12 s", got)
	}
}

func TestSummarizeAndCheck(t *testing.T) {
	now := time.Now()
	seen := []Seen{
		{Route: "POST /v1/jobs", Start: now, Status: 503, RetryAfter: true, Latency: time.Second},
		{Route: "POST /v1/jobs", Start: now, Status: 503, RetryAfter: false, Latency: 3 * time.Second},
		{Route: "POST /v1/jobs", Start: now, Status: 202, Latency: 10 * time.Millisecond},
		{Route: "GET /v1/jobs/{id}", Start: now, Status: 500, Problem: "internal"},
		{Route: "GET /v1/jobs/{id} (wait)", Start: now, Status: 304, Latency: 10 * time.Second},
	}
	rs := SummarizeStatuses(seen)
	if len(rs) != 3 || rs[0].Route != "GET /v1/jobs/{id}" || rs[2].Route != "POST /v1/jobs" {
		t.Fatalf("routes = %+v", rs)
	}
	post := rs[2]
	if post.N != 3 || post.Status[503] != 2 || post.NoRetryAfter != 1 || post.Max != 3*time.Second {
		t.Errorf("POST stats = %+v", post)
	}
	if got := post.StatusString(); got != "503×2 202×1" {
		t.Errorf("StatusString = %q", got)
	}
	o := &Outcome{Faults: []Fault{{Name: "f", Routes: rs, Bound: 2 * time.Second}}, Failed: 2, FailedOK: 1, Lost: 1}
	o.Check()
	want := []string{"1 accepted job(s) lost", "1 job(s) failed", "answered 500", "503 without Retry-After", "POST /v1/jobs took 3s"}
	all := strings.Join(o.Violations, "\n")
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("violations lack %q:\n%s", w, all)
		}
	}
	if strings.Contains(all, "(wait) took") {
		t.Errorf("a long-poll's wait counted against the bound:\n%s", all)
	}
	ok := &Outcome{Faults: []Fault{{Name: "f", Routes: SummarizeStatuses(seen[:1])}}, Failed: 1, FailedOK: 1}
	ok.Check()
	if len(ok.Violations) != 0 {
		t.Errorf("violations of a clean outcome: %v", ok.Violations)
	}
}

func TestWriteTable(t *testing.T) {
	o := &Outcome{Name: "r1", Accepted: 10, Succeeded: 9, Failed: 1, FailedOK: 1,
		Recoveries: []Recovery{{Detect: 11 * time.Second, Recover: 70 * time.Second}},
		Violations: []string{"boom"}}
	var b bytes.Buffer
	WriteTable(&b, []*Outcome{o})
	for _, w := range []string{"r1", "11.0s / 11.0s", "70.0s / 70.0s", "FAIL", "VIOLATION: boom", "1 (1)"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("table lacks %q:\n%s", w, b.String())
		}
	}
}

func TestParseVmRSS(t *testing.T) {
	in := "Name:\tclaimcheck\nVmPeak:\t  99999 kB\nVmRSS:\t   25432 kB\nThreads:\t7\n"
	got, err := ParseVmRSS(strings.NewReader(in))
	if err != nil || got != 25432*1024 {
		t.Errorf("ParseVmRSS = %d, %v", got, err)
	}
	if _, err := ParseVmRSS(strings.NewReader("Name:\tx\n")); err == nil {
		t.Error("ParseVmRSS without a VmRSS line: no error")
	}
}

func TestParseMetric(t *testing.T) {
	in := "# HELP go_goroutines Number of goroutines.\n# TYPE go_goroutines gauge\ngo_goroutines 42\ngo_goroutines_extra 1\n"
	got, err := ParseMetric(strings.NewReader(in), "go_goroutines")
	if err != nil || got != 42 {
		t.Errorf("ParseMetric = %v, %v", got, err)
	}
	if _, err := ParseMetric(strings.NewReader("go_threads 3\n"), "go_goroutines"); err == nil {
		t.Error("ParseMetric of a missing metric: no error")
	}
}

func TestGrowth(t *testing.T) {
	flat := []float64{50, 10, 10, 10, 10, 10, 10, 10}
	if g := Growth(flat); g != 0 {
		t.Errorf("Growth(flat after warm-up) = %v, want 0", g)
	}
	up := []float64{1, 1, 10, 10, 15, 15, 20, 20}
	if g := Growth(up); g != 1 {
		t.Errorf("Growth(doubling) = %v, want 1", g)
	}
	if g := Growth([]float64{1, 2}); g != 0 {
		t.Errorf("Growth(short) = %v, want 0", g)
	}
}

func TestDifferingResults(t *testing.T) {
	by := map[string][]string{
		"a": {"x", "x", "y"},
		"b": {"z"},
		"c": {"p", "q", "q", "q"},
	}
	if got := DifferingResults(by); got != 2 {
		t.Errorf("DifferingResults = %d, want 2", got)
	}
}

func TestFindKey(t *testing.T) {
	out := "created API key 3f2a for chaos0 (jobs:submit jobs:read)\n  cck_Ab12Cd34secret\nstore it now\n"
	if got := findKey(out); got != "cck_Ab12Cd34secret" {
		t.Errorf("findKey = %q", got)
	}
	if got := findKey("nothing here"); got != "" {
		t.Errorf("findKey = %q, want none", got)
	}
}

func TestSpecBody(t *testing.T) {
	s := SleepSpec(1.5)
	s.MaxRetry = intp(0)
	if got, want := string(s.Body()), `{"input":{"seconds":1.5,"steps":6},"max_retry":0,"type":"sleep"}`; got != want {
		t.Errorf("Body = %s, want %s", got, want)
	}
}

func TestApplyKnown(t *testing.T) {
	known := []KnownIssue{{ID: "store", Scenarios: []string{"full"}, Match: []string{"server path"}, Doc: "part 4"}}
	o := &Outcome{Name: "full", Violations: []string{"3 job error(s) carry a server path", "1 job(s) lost"}}
	applyKnown(o, known)
	if len(o.Violations) != 1 || o.Violations[0] != "1 job(s) lost" {
		t.Errorf("violations = %v, want only the lost job", o.Violations)
	}
	if len(o.KnownIssues) != 2 || !strings.Contains(o.KnownIssues[0], "[store] 3 job error(s)") {
		t.Errorf("known issues = %v", o.KnownIssues)
	}
	// Another scenario's violations are not excused.
	other := &Outcome{Name: "r1", Violations: []string{"3 job error(s) carry a server path"}}
	applyKnown(other, known)
	if len(other.Violations) != 1 {
		t.Errorf("r1's violations = %v, want it kept", other.Violations)
	}
	// A known issue that no longer shows says so.
	clean := &Outcome{Name: "full"}
	applyKnown(clean, known)
	if len(clean.Notes) != 1 || !strings.Contains(clean.Notes[0], "did not reproduce") {
		t.Errorf("notes = %v", clean.Notes)
	}
}

func TestErrorClass(t *testing.T) {
	got := errorClass("write /tmp/x/results/.tmp-01a23224-46fe-7333-9f0e-4173172102d3-28: no space left on device")
	if got != "write <path>: no space left on device" {
		t.Errorf("errorClass = %q", got)
	}
	if got := errorClass("worker lost"); got != "worker lost" {
		t.Errorf("errorClass = %q", got)
	}
}
