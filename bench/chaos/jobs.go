package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Spec is a job to submit. Variant names its input: jobs of one variant
// must produce the same bytes.
type Spec struct {
	Type     string
	Input    string
	MaxRetry *int
	Variant  string
	// Webhook, when set, is the URL the job's completed event is sent to.
	Webhook string
}

// Body is the POST /v1/jobs body.
func (s Spec) Body() []byte {
	m := map[string]any{"type": s.Type, "input": json.RawMessage(s.Input)}
	if s.MaxRetry != nil {
		m["max_retry"] = *s.MaxRetry
	}
	if s.Webhook != "" {
		m["webhook"] = map[string]any{"url": s.Webhook, "events": []string{"completed"}}
	}
	b, _ := json.Marshal(m)
	return b
}

func intp(n int) *int { return &n }

// SleepSpec is a sleep job reporting progress four times a second.
func SleepSpec(seconds float64) Spec {
	steps := max(1, int(seconds*4))
	in := fmt.Sprintf(`{"seconds":%g,"steps":%d}`, seconds, steps)
	return Spec{Type: "sleep", Input: in, Variant: "sleep " + in}
}

// MixedSpec is the i-th job of a mixed load: mostly short sleeps, some
// primes and small mandelbrots, from a few inputs each so that duplicates
// can be compared; one in ten has max_retry 0.
func MixedSpec(r *rand.Rand) Spec {
	var s Spec
	switch x := r.IntN(10); {
	case x < 6:
		s = SleepSpec([]float64{0.5, 1, 1.5, 2}[r.IntN(4)])
	case x < 8:
		n := []int{100000, 300000, 1000000}[r.IntN(3)]
		in := fmt.Sprintf(`{"n":%d}`, n)
		s = Spec{Type: "primes", Input: in, Variant: "primes " + in}
	default:
		it := []int{100, 200, 400}[r.IntN(3)]
		in := fmt.Sprintf(`{"width":160,"height":120,"max_iter":%d}`, it)
		s = Spec{Type: "mandelbrot", Input: in, Variant: "mandelbrot " + in}
	}
	if r.IntN(10) == 0 {
		s.MaxRetry = intp(0)
	}
	return s
}

// Tracked is an accepted job and everything the harness saw of it.
type Tracked struct {
	*Submitted
	mu    sync.Mutex
	Obs   []Obs
	Final *JobView
	Lost  bool
	// Last is the last record seen.
	Last *JobView
}

func (t *Tracked) observe(v *JobView) {
	o := Obs{T: time.Now(), State: v.State, Attempts: v.Attempts, ProgressAt: v.Progress.UpdatedAt, Percent: v.Progress.Percent}
	if v.Error != nil {
		o.Error = *v.Error
	}
	t.mu.Lock()
	t.Obs = append(t.Obs, o)
	t.Last = v
	if Terminal(v.State) {
		t.Final = v
	}
	t.mu.Unlock()
}

// Tracker follows accepted jobs with long-polls until they end.
type Tracker struct {
	c      *Client
	parent context.Context
	ctx    context.Context
	stop   context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	jobs   []*Tracked
}

// NewTracker returns a tracker whose followers run until Drain.
func NewTracker(ctx context.Context, c *Client) *Tracker {
	t := &Tracker{c: c, parent: ctx}
	t.ctx, t.stop = context.WithCancel(ctx)
	return t
}

// Add follows s.
func (t *Tracker) Add(s *Submitted) *Tracked {
	j := &Tracked{Submitted: s}
	t.mu.Lock()
	t.jobs = append(t.jobs, j)
	t.mu.Unlock()
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		t.follow(j)
	}()
	return j
}

// Jobs returns every tracked job.
func (t *Tracker) Jobs() []*Tracked {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]*Tracked(nil), t.jobs...)
}

func (t *Tracker) follow(j *Tracked) {
	etag := ""
	var notFoundSince time.Time
	for t.ctx.Err() == nil {
		v, a := t.c.LongPoll(t.ctx, j.Submitted, etag, longPollWait)
		switch {
		case v != nil:
			notFoundSince = time.Time{}
			etag = a.Header.Get("ETag")
			j.observe(v)
			if Terminal(v.State) {
				return
			}
			continue
		case a.Status == http.StatusNotModified:
			continue
		case a.Status == http.StatusNotFound:
			// A record gone for good is a lost job; a moment's 404 could
			// only be a bug of its own, so it must last.
			if notFoundSince.IsZero() {
				notFoundSince = time.Now()
			} else if time.Since(notFoundSince) > 10*time.Second {
				j.mu.Lock()
				j.Lost = true
				j.mu.Unlock()
				return
			}
		}
		select {
		case <-t.ctx.Done():
		case <-time.After(retryWait(a)):
		}
	}
}

// Drain waits until every job is final or lost, or the deadline passes;
// then it stops the followers.
func (t *Tracker) Drain(deadline time.Duration) {
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(deadline):
	}
	t.stop()
	t.wg.Wait()
}

// Recheck reads every job's record again after a drain. A job the
// harness saw final whose record now says otherwise (a Redis that lost
// acknowledged writes rolls records back) is followed again until drain
// passes; it returns how many regressed, with examples.
func (t *Tracker) Recheck(drain time.Duration) (int, []string) {
	t.ctx, t.stop = context.WithCancel(t.parent)
	var regressed []string
	for _, j := range t.Jobs() {
		j.mu.Lock()
		final := j.Final
		j.mu.Unlock()
		if final == nil {
			continue
		}
		v, a := t.c.Get(t.ctx, j.Submitted)
		now := ""
		switch {
		case v != nil && v.State == final.State:
			continue
		case v != nil:
			now = v.State
		default:
			now = fmt.Sprint(a.Status)
		}
		regressed = append(regressed, fmt.Sprintf("job %s: seen %s, now %s", j.ID, final.State, now))
		j.mu.Lock()
		j.Final = nil
		j.mu.Unlock()
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			t.follow(j)
		}()
	}
	t.Drain(drain)
	return len(regressed), regressed
}

// Account fills o's job counts from the tracked jobs; expected says which
// failures the scenario expects. Jobs not final get one last read.
func (t *Tracker) Account(ctx context.Context, o *Outcome, expected func(*Tracked, *JobView) bool) {
	capped := map[string]int{}
	note := func(kind, msg string) {
		if capped[kind]++; capped[kind] <= 5 {
			o.Notes = append(o.Notes, kind+": "+msg)
		}
	}
	defer func() {
		for kind, n := range capped {
			if n > 5 {
				o.Notes = append(o.Notes, fmt.Sprintf("%s: … and %d more", kind, n-5))
			}
		}
	}()
	for _, j := range t.Jobs() {
		o.Accepted++
		if j.Final == nil && !j.Lost {
			if v, a := t.c.Get(ctx, j.Submitted); v != nil {
				j.observe(v)
			} else if a.Status == http.StatusNotFound {
				j.Lost = true
			}
		}
		switch {
		case j.Lost:
			o.Lost++
			note("lost", fmt.Sprintf("job %s (%s) accepted %s", j.ID, j.Spec.Variant, j.Accepted.Format(time.RFC3339Nano)))
		case j.Final == nil:
			o.Stuck++
			state := "?"
			if j.Last != nil {
				state = fmt.Sprintf("%s attempts=%d", j.Last.State, j.Last.Attempts)
			}
			note("stuck", fmt.Sprintf("job %s (%s) %s", j.ID, j.Spec.Variant, state))
		case j.Final.State == "succeeded":
			o.Succeeded++
		case j.Final.State == "canceled":
			o.Canceled++
		case j.Final.State == "failed":
			o.Failed++
			msg := ""
			if j.Final.Error != nil {
				msg = *j.Final.Error
			}
			if expected != nil && expected(j, j.Final) {
				o.FailedOK++
			} else {
				note("unexpected failure", fmt.Sprintf("job %s (%s, max_retry %d, attempts %d): %q", j.ID, j.Spec.Variant, j.Final.MaxRetry, j.Final.Attempts, msg))
			}
		}
	}
}

// VerifyResults downloads every succeeded job's result and checks its
// sha256 and size against the record and against other jobs of the same
// input.
func (t *Tracker) VerifyResults(ctx context.Context, o *Outcome) {
	type res struct {
		j        *Tracked
		sum      string
		size     int64
		status   int
		mismatch bool
	}
	var jobs []*Tracked
	for _, j := range t.Jobs() {
		if j.Final != nil && j.Final.State == "succeeded" {
			jobs = append(jobs, j)
		}
	}
	out := make(chan res)
	work := make(chan *Tracked)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				var sum string
				var size int64
				var a Answer
				for try := 0; try < 10; try++ {
					sum, size, a = t.c.Download(ctx, j.Submitted)
					if a.Status != http.StatusServiceUnavailable && a.Status != 0 || ctx.Err() != nil {
						break
					}
					time.Sleep(retryWait(a))
				}
				r := res{j: j, sum: sum, size: size, status: a.Status}
				if j.Final.Result == nil || sum != j.Final.Result.SHA256 || size != j.Final.Result.Size {
					r.mismatch = true
				}
				out <- r
			}
		}()
	}
	go func() {
		for _, j := range jobs {
			work <- j
		}
		close(work)
		wg.Wait()
		close(out)
	}()
	byVariant := map[string][]string{}
	for r := range out {
		if r.status != http.StatusOK {
			o.Differing++
			o.Notes = append(o.Notes, fmt.Sprintf("result of job %s not downloadable: %d", r.j.ID, r.status))
			continue
		}
		o.Downloaded++
		if r.mismatch {
			o.Differing++
			o.Notes = append(o.Notes, fmt.Sprintf("result of job %s: sha256 %s size %d, record says %+v", r.j.ID, r.sum, r.size, r.j.Final.Result))
			continue
		}
		byVariant[r.j.Spec.Variant] = append(byVariant[r.j.Spec.Variant], r.sum)
	}
	if n := DifferingResults(byVariant); n > 0 {
		o.Differing += n
		o.Notes = append(o.Notes, fmt.Sprintf("%d result(s) differ from other jobs of the same input", n))
	}
	o.Notes = append(o.Notes, fmt.Sprintf("downloaded and checked %d result(s) of %d distinct input(s)", o.Downloaded, len(byVariant)))
}

// Retried notes the jobs that needed more than one attempt, and the
// errors their failed attempts recorded.
func (t *Tracker) Retried(o *Outcome) {
	n := 0
	errs := map[string]int{}
	for _, j := range t.Jobs() {
		j.mu.Lock()
		if j.Final != nil && j.Final.Attempts > 1 {
			n++
		}
		seen := map[string]bool{}
		for _, ob := range j.Obs {
			if ob.Error != "" && !seen[ob.Error] {
				seen[ob.Error] = true
				errs[errorClass(ob.Error)]++
			}
		}
		j.mu.Unlock()
	}
	if n > 0 {
		o.Notes = append(o.Notes, fmt.Sprintf("%d job(s) took more than one attempt; attempt errors seen: %v", n, errs))
	}
}

var (
	reID   = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	rePath = regexp.MustCompile(`/[^ :]+`)
)

// errorClass is an error text without its job ids and paths, so that
// like errors count together.
func errorClass(e string) string {
	return rePath.ReplaceAllString(reID.ReplaceAllString(e, "<id>"), "<path>")
}

// Recoveries collects the recovery of every job's attempts cut by kills.
func (t *Tracker) Recoveries(kills []time.Time) []Recovery {
	var out []Recovery
	for _, j := range t.Jobs() {
		j.mu.Lock()
		out = append(out, Recoveries(j.Obs, kills)...)
		j.mu.Unlock()
	}
	return out
}

// workerLost is R1's expected failure: a job whose worker was killed on
// its last attempt.
func workerLost(_ *Tracked, v *JobView) bool {
	return v.Error != nil && strings.Contains(*v.Error, "worker lost")
}

// longPollWait is how long (s) the tracker's long-polls wait for a change
// (-wait).
var longPollWait = 10
