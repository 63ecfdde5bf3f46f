package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// The pure logic of the harness: statistics, recovery times, the status
// summary of a fault window, invariants and the table. main_test.go covers
// it; the processes and faults are exercised by the harness run in CI.

// Percentile returns the p-th percentile (0–100, nearest rank) of ds; 0
// for none.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	rank = min(max(rank, 1), len(s))
	return s[rank-1]
}

// Obs is one observation of a job's record by the harness.
type Obs struct {
	T          time.Time
	State      string
	Attempts   int
	ProgressAt *time.Time
	Percent    float64
	Error      string
}

// Recovery is what happened to one attempt whose worker was killed.
type Recovery struct {
	Kill time.Time
	// Detect is from the kill to the record no longer saying running
	// that attempt (retrying "worker lost", failed, or a new attempt).
	Detect time.Duration
	// Recover is from the kill to the job running again (a new attempt)
	// or ending.
	Recover time.Duration
}

// Recoveries finds the attempts of one job that were cut short by one of
// kills (sorted) and how long the job took to notice and to recover. An
// attempt is a kill's victim when the record stopped moving (its last
// progress, or the last sighting of it running) before the kill, and later
// observations show it ended without finishing: a new attempt, or a
// "worker lost" state. Observations must be in time order.
func Recoveries(obs []Obs, kills []time.Time) []Recovery {
	var out []Recovery
	var last *Obs // last sighting of the current attempt running
	for i := range obs {
		o := &obs[i]
		if last != nil && (o.Attempts > last.Attempts || strings.Contains(o.Error, "worker lost") && o.State != "running") {
			stall := last.T
			if last.ProgressAt != nil {
				stall = *last.ProgressAt
			}
			// The attempt stopped moving at stall: the first kill after
			// it is the one that ended it (a kill later would have been
			// preceded by more progress).
			k := sort.Search(len(kills), func(i int) bool { return !kills[i].Before(stall.Add(-50 * time.Millisecond)) })
			if k < len(kills) && kills[k].Sub(stall) < 5*time.Second && !o.T.Before(kills[k]) {
				r := Recovery{Kill: kills[k], Detect: o.T.Sub(kills[k])}
				// Recovered: the first sighting of a newer attempt or a
				// final state, from here on.
				for j := i; j < len(obs); j++ {
					if obs[j].Attempts > last.Attempts || Terminal(obs[j].State) {
						r.Recover = obs[j].T.Sub(kills[k])
						break
					}
				}
				if r.Recover > 0 {
					out = append(out, r)
				}
			}
			last = nil
		}
		if o.State == "running" {
			if last == nil || o.Attempts >= last.Attempts {
				last = o
			}
		}
	}
	return out
}

// RouteStats sums up the answers of one route within a window.
type RouteStats struct {
	Route  string
	Status map[int]int // 0: no answer
	// Problems counts problem types of 5xx answers.
	Problems map[string]int
	// NoRetryAfter counts 503s without Retry-After.
	NoRetryAfter int
	P50, P99     time.Duration
	Max          time.Duration
	N            int
}

// SummarizeStatuses groups seen answers by route.
func SummarizeStatuses(seen []Seen) []RouteStats {
	by := map[string]*RouteStats{}
	lat := map[string][]time.Duration{}
	for _, s := range seen {
		r := by[s.Route]
		if r == nil {
			r = &RouteStats{Route: s.Route, Status: map[int]int{}, Problems: map[string]int{}}
			by[s.Route] = r
		}
		r.N++
		r.Status[s.Status]++
		if s.Status >= 500 && s.Problem != "" {
			r.Problems[s.Problem]++
		}
		if s.Status == 503 && !s.RetryAfter {
			r.NoRetryAfter++
		}
		lat[s.Route] = append(lat[s.Route], s.Latency)
		r.Max = max(r.Max, s.Latency)
	}
	var out []RouteStats
	for route, r := range by {
		r.P50, r.P99 = Percentile(lat[route], 50), Percentile(lat[route], 99)
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Route < out[j].Route })
	return out
}

// StatusString is "503×120 200×3" (most frequent first; 0 shows as "none").
func (r RouteStats) StatusString() string {
	codes := make([]int, 0, len(r.Status))
	for c := range r.Status {
		codes = append(codes, c)
	}
	sort.Slice(codes, func(i, j int) bool {
		if r.Status[codes[i]] != r.Status[codes[j]] {
			return r.Status[codes[i]] > r.Status[codes[j]]
		}
		return codes[i] < codes[j]
	})
	parts := make([]string, len(codes))
	for i, c := range codes {
		name := strconv.Itoa(c)
		if c == 0 {
			name = "none"
		}
		parts[i] = fmt.Sprintf("%s×%d", name, r.Status[c])
	}
	return strings.Join(parts, " ")
}

// Fault is one injected fault and what clients saw during it.
type Fault struct {
	Name     string
	From, To time.Time
	Routes   []RouteStats
	// RecoveredIn is from the end of the fault until every process was
	// ready again.
	RecoveredIn time.Duration
	// Bound, when set, is the longest a request may take during the
	// fault (long-polls and event streams excepted: they wait by design).
	Bound time.Duration
}

// Outcome is one scenario's figures.
type Outcome struct {
	Name        string
	Duration    time.Duration
	Accepted    int
	Succeeded   int
	Failed      int
	FailedOK    int // failures the scenario expects (also counted in Failed)
	Canceled    int
	Lost        int
	Stuck       int
	Differing   int // results whose bytes differ from their record or from a same-input job
	Downloaded  int
	Recoveries  []Recovery
	Faults      []Fault
	Notes       []string
	Violations  []string
	KnownIssues []string
}

// Check adds a violation for every broken invariant.
func (o *Outcome) Check() {
	if o.Lost > 0 {
		o.Violations = append(o.Violations, fmt.Sprintf("%d accepted job(s) lost", o.Lost))
	}
	if o.Stuck > 0 {
		o.Violations = append(o.Violations, fmt.Sprintf("%d job(s) stuck (not final after the drain deadline)", o.Stuck))
	}
	if o.Differing > 0 {
		o.Violations = append(o.Violations, fmt.Sprintf("%d result(s) with differing bytes", o.Differing))
	}
	if n := o.Failed - o.FailedOK; n > 0 {
		o.Violations = append(o.Violations, fmt.Sprintf("%d job(s) failed that the scenario does not expect to fail", n))
	}
	for _, f := range o.Faults {
		for _, r := range f.Routes {
			for code, n := range r.Status {
				if code >= 500 && code != 503 {
					o.Violations = append(o.Violations, fmt.Sprintf("%s: %s answered %d ×%d", f.Name, r.Route, code, n))
				}
				if code == 0 {
					o.Violations = append(o.Violations, fmt.Sprintf("%s: %s got no answer ×%d (hung past the client timeout or connection refused)", f.Name, r.Route, n))
				}
			}
			// Readiness probes are for orchestrators, which poll on their
			// own period: no Retry-After is promised there.
			if r.NoRetryAfter > 0 && !strings.HasSuffix(r.Route, "/readyz") {
				o.Violations = append(o.Violations, fmt.Sprintf("%s: %s answered 503 without Retry-After ×%d", f.Name, r.Route, r.NoRetryAfter))
			}
			if f.Bound > 0 && r.Max > f.Bound && !waits(r.Route) {
				o.Violations = append(o.Violations, fmt.Sprintf("%s: %s took %s (bound %s)", f.Name, r.Route, r.Max.Round(time.Millisecond), f.Bound))
			}
		}
	}
}

// waits reports whether a route holds its answer back by design.
func waits(route string) bool {
	return strings.Contains(route, "(wait)") || strings.HasSuffix(route, "/events")
}

func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	if d < 10*time.Second {
		return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.1fs", d.Seconds())
}

// WriteTable prints the summary table and, below it, each scenario's
// fault windows, notes and violations.
func WriteTable(w io.Writer, outs []*Outcome) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\taccepted\tsucceeded\tfailed (expected)\tcanceled\tlost\tstuck\tdiffering\tdetect p50/p99\trecover p50/p99\tresult\t")
	for _, o := range outs {
		var det, rec []time.Duration
		for _, r := range o.Recoveries {
			det, rec = append(det, r.Detect), append(rec, r.Recover)
		}
		verdict := "ok"
		if len(o.Violations) > 0 {
			verdict = "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d (%d)\t%d\t%d\t%d\t%d\t%s / %s\t%s / %s\t%s\t\n", o.Name, o.Accepted, o.Succeeded,
			o.Failed, o.FailedOK, o.Canceled, o.Lost, o.Stuck, o.Differing,
			ms(Percentile(det, 50)), ms(Percentile(det, 99)), ms(Percentile(rec, 50)), ms(Percentile(rec, 99)), verdict)
	}
	tw.Flush()
	for _, o := range outs {
		fmt.Fprintf(w, "\n%s (%s, %d victim attempts):\n", o.Name, o.Duration.Round(time.Second), len(o.Recoveries))
		if len(o.Recoveries) > 0 {
			var det, rec []time.Duration
			for _, r := range o.Recoveries {
				det, rec = append(det, r.Detect), append(rec, r.Recover)
			}
			fmt.Fprintf(w, "  victims: detect min %s p50 %s p90 %s max %s; recover min %s p50 %s p90 %s max %s\n",
				ms(Percentile(det, 0)), ms(Percentile(det, 50)), ms(Percentile(det, 90)), ms(Percentile(det, 100)),
				ms(Percentile(rec, 0)), ms(Percentile(rec, 50)), ms(Percentile(rec, 90)), ms(Percentile(rec, 100)))
		}
		for _, f := range o.Faults {
			fmt.Fprintf(w, "  fault %s (%s", f.Name, f.To.Sub(f.From).Round(100*time.Millisecond))
			if f.RecoveredIn > 0 {
				fmt.Fprintf(w, "; all processes ready %s after it ended", ms(f.RecoveredIn))
			}
			fmt.Fprintln(w, "):")
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			for _, r := range f.Routes {
				probs := ""
				if len(r.Problems) > 0 {
					keys := make([]string, 0, len(r.Problems))
					for k := range r.Problems {
						keys = append(keys, fmt.Sprintf("%s×%d", k, r.Problems[k]))
					}
					sort.Strings(keys)
					probs = " [" + strings.Join(keys, " ") + "]"
				}
				fmt.Fprintf(tw, "    %s\t%s%s\tlatency p50 %s p99 %s max %s\n", r.Route, r.StatusString(), probs, ms(r.P50), ms(r.P99), ms(r.Max))
			}
			tw.Flush()
		}
		for _, n := range o.Notes {
			fmt.Fprintf(w, "  note: %s\n", n)
		}
		for _, n := range o.KnownIssues {
			fmt.Fprintf(w, "  KNOWN ISSUE: %s\n", n)
		}
		for _, v := range o.Violations {
			fmt.Fprintf(w, "  VIOLATION: %s\n", v)
		}
	}
}

// ParseVmRSS reads the resident set size in bytes from /proc/<pid>/status.
func ParseVmRSS(r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) < 1 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, err
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS line")
}

// ParseMetric reads one unlabelled gauge (go_goroutines) from a Prometheus
// text exposition.
func ParseMetric(r io.Reader, name string) (float64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
	}
	return 0, fmt.Errorf("no %s sample", name)
}

// Growth compares the mean of the last quarter of a series with that of
// its second quarter (after warm-up): 0.1 is 10 % more. It returns 0 for
// fewer than 8 samples.
func Growth(xs []float64) float64 {
	if len(xs) < 8 {
		return 0
	}
	q := len(xs) / 4
	mean := func(s []float64) float64 {
		t := 0.0
		for _, x := range s {
			t += x
		}
		return t / float64(len(s))
	}
	base := mean(xs[q : 2*q])
	if base == 0 {
		return 0
	}
	return mean(xs[len(xs)-q:])/base - 1
}

// DifferingResults counts, among jobs of the same input (variant), those
// whose result digest differs from the most common one.
func DifferingResults(byVariant map[string][]string) int {
	n := 0
	for _, sums := range byVariant {
		count := map[string]int{}
		best := 0
		for _, s := range sums {
			count[s]++
			best = max(best, count[s])
		}
		n += len(sums) - best
	}
	return n
}
