package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// prober asks every route a client uses, four times a second, while a
// fault is on and until the stack is back; the answers land in the
// client's status log, so a window of it shows what clients saw.
type prober struct {
	c    *Client
	tr   *Tracker
	done *Submitted // a succeeded job: status, result, events, cancel
	// unknown collects submissions answered 503 submission-unknown: the
	// Idempotency-Key resolves them once Redis is back.
	mu      sync.Mutex
	unknown []unknownSub
	n       int
	run     string
}

type unknownSub struct {
	spec Spec
	key  string
}

// redisBound is the longest a request may take while Redis does not
// answer: the README's 2 s per Redis call, plus room for a request that
// makes one call after another and for a loaded machine.
const redisBound = 4500 * time.Millisecond

func (p *prober) round(ctx context.Context, wg *sync.WaitGroup) {
	c, s := p.c, p.c.s
	go1 := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	p.mu.Lock()
	p.n++
	key := fmt.Sprintf("%s-probe-%d", p.run, p.n)
	p.mu.Unlock()
	go1(func() {
		spec := SleepSpec(0.25)
		a := c.do(ctx, "POST /v1/jobs", http.MethodPost, s.APIURL+"/v1/jobs", s.APIKeys[0], spec.Body(),
			map[string]string{"Idempotency-Key": key}, 10*time.Second)
		switch {
		case a.Status == http.StatusAccepted:
			var out struct{ ID, Token string }
			if json.Unmarshal(a.Body, &out) == nil {
				p.tr.Add(&Submitted{Spec: spec, ID: out.ID, Token: out.Token, Accepted: time.Now()})
			}
		case a.Status == http.StatusServiceUnavailable && strings.Contains(string(a.Body), "submission-unknown"):
			p.mu.Lock()
			p.unknown = append(p.unknown, unknownSub{spec, key})
			p.mu.Unlock()
		}
	})
	go1(func() {
		c.do(ctx, "GET /v1/jobs", http.MethodGet, s.APIURL+"/v1/jobs?limit=5", s.APIKeys[0], nil, nil, 10*time.Second)
	})
	go1(func() {
		c.do(ctx, "GET /v1/jobs/{id}", http.MethodGet, c.jobURL(p.done.ID, ""), p.done.Token, nil, nil, 10*time.Second)
	})
	go1(func() {
		c.do(ctx, "GET /v1/jobs/{id}/result", http.MethodGet, c.jobURL(p.done.ID, "/result"), p.done.Token, nil, nil, 10*time.Second)
	})
	go1(func() {
		c.do(ctx, "POST /v1/jobs/{id}/cancel", http.MethodPost, c.jobURL(p.done.ID, "/cancel"), p.done.Token, nil, nil, 10*time.Second)
	})
	go1(func() {
		// A finished job's stream is its record and done, then the end:
		// only the status matters here.
		c.do(ctx, "GET /v1/jobs/{id}/events (finished job)", http.MethodGet, c.jobURL(p.done.ID, "/events"), p.done.Token, nil,
			map[string]string{"Accept": "text/event-stream"}, 10*time.Second)
	})
	go1(func() { c.do(ctx, "GET api /readyz", http.MethodGet, s.API.Ready, "", nil, nil, 10*time.Second) })
	go1(func() {
		c.do(ctx, "GET progress /readyz", http.MethodGet, s.Progress.Ready, "", nil, nil, 10*time.Second)
	})
	go1(func() {
		if w := s.Workers[0]; w.Running() {
			c.do(ctx, "GET worker /readyz", http.MethodGet, w.Ready, "", nil, nil, 10*time.Second)
		}
	})
}

// probe runs rounds every 250 ms until stop is closed, then waits for the
// rounds in flight.
func (p *prober) probe(ctx context.Context, stop <-chan struct{}) {
	var wg sync.WaitGroup
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		p.round(ctx, &wg)
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-stop:
			wg.Wait()
			return
		case <-t.C:
		}
	}
}

// resolveUnknown resubmits every submission-unknown with its key: the
// answer is the job, whichever way the commit went.
func (p *prober) resolveUnknown(ctx context.Context, o *Outcome) {
	p.mu.Lock()
	unknown := p.unknown
	p.mu.Unlock()
	for _, u := range unknown {
		s, err := p.c.Submit(ctx, u.spec, u.key, 0, time.Now().Add(time.Minute))
		if err != nil {
			o.Notes = append(o.Notes, "submission-unknown not resolved: "+err.Error())
			continue
		}
		p.tr.Add(s)
	}
	if len(unknown) > 0 {
		o.Notes = append(o.Notes, fmt.Sprintf("%d submission(s) answered 503 submission-unknown, resolved by resubmitting with the same Idempotency-Key", len(unknown)))
	}
}

// allReady waits until every claimcheck process of s answers /readyz 200
// and returns how long that took.
func allReady(ctx context.Context, s *Stack, d time.Duration) (time.Duration, error) {
	t0 := time.Now()
	for _, p := range append([]*Proc{s.API, s.Progress}, s.Workers...) {
		if !p.Running() {
			continue
		}
		if err := WaitReady(ctx, p, d-time.Since(t0)); err != nil {
			return time.Since(t0), err
		}
	}
	return time.Since(t0), nil
}

// phantoms lists every job of every user and counts those no 202 of this
// scenario accepted (issue 12's bug B: a 503 "nothing accepted" that left
// a record behind).
func phantoms(ctx context.Context, c *Client, tr *Tracker, o *Outcome) {
	known := map[string]bool{}
	for _, j := range tr.Jobs() {
		known[j.ID] = true
	}
	for _, key := range c.s.APIKeys {
		cursor := ""
		for page := 0; page < 200; page++ {
			u := c.s.APIURL + "/v1/jobs?limit=100"
			if cursor != "" {
				u += "&cursor=" + url.QueryEscape(cursor)
			}
			a := c.do(ctx, "GET /v1/jobs", http.MethodGet, u, key, nil, nil, 10*time.Second)
			if a.Status != http.StatusOK {
				o.Violations = append(o.Violations, fmt.Sprintf("listing jobs after the fault: %d", a.Status))
				return
			}
			var l struct {
				Jobs []struct {
					ID    string `json:"id"`
					State string `json:"state"`
				} `json:"jobs"`
				Next string `json:"next_cursor"`
			}
			if err := json.Unmarshal(a.Body, &l); err != nil {
				o.Violations = append(o.Violations, "listing jobs: "+err.Error())
				return
			}
			for _, j := range l.Jobs {
				if !known[j.ID] {
					o.Violations = append(o.Violations, fmt.Sprintf("phantom job %s (%s): listed, but no 202 accepted it", j.ID, j.State))
				}
			}
			if l.Next == "" {
				break
			}
			cursor = l.Next
		}
	}
}

// warmJob runs one job to success, for the probes to read.
func warmJob(ctx context.Context, c *Client, tr *Tracker) (*Submitted, error) {
	s, err := c.Submit(ctx, SleepSpec(0.25), "warm-"+randHex(4), 0, time.Now().Add(time.Minute))
	if err != nil {
		return nil, err
	}
	j := tr.Add(s)
	err = waitFor(ctx, 60*time.Second, "warm-up job", func() bool {
		j.mu.Lock()
		defer j.mu.Unlock()
		return j.Final != nil
	})
	if err == nil && j.Final.State != "succeeded" {
		err = fmt.Errorf("warm-up job %s", j.Final.State)
	}
	return s, err
}

// redisOutage runs the stop and down scenarios: jobs queued and running,
// then Redis frozen (stop) or killed and kept away (down) for opt.Outage
// while every route is probed; then Redis back, nothing restarted.
// Expected: during the outage only 503 with Retry-After (or an answer that
// needs no Redis), each within the bound; after it, every process ready
// again by itself and every job finished (a running job may lose an
// attempt, never fail: max_retry is 3), no phantom job.
func redisOutage(ctx context.Context, opt Options, name string, kill bool) (*Outcome, error) {
	o := &Outcome{}
	s, err := NewStack(ctx, opt.Bin, opt.Root, name, StackConfig{Workers: 2, Concurrency: 4, Users: 2})
	if err != nil {
		return o, err
	}
	defer s.Close()
	c := newClient(s)
	tr := NewTracker(ctx, c)
	t0 := time.Now()
	done, err := warmJob(ctx, c, tr)
	if err != nil {
		return o, err
	}
	// A backlog: long sleeps running through the outage, short ones queued.
	for i := range 24 {
		spec := SleepSpec([]float64{0.5, 1, 2}[i%3])
		if i < 6 {
			spec = SleepSpec(opt.Outage.Seconds() + 4)
		}
		sub, err := c.Submit(ctx, spec, fmt.Sprintf("%s-pre-%d-%s", name, i, randHex(3)), i, time.Now().Add(time.Minute))
		if err != nil {
			return o, err
		}
		tr.Add(sub)
	}
	time.Sleep(time.Second) // let the long ones start: the fault should meet them running
	p := &prober{c: c, tr: tr, done: done, run: name + "-" + randHex(3)}
	stopProbe := make(chan struct{})
	probed := make(chan struct{})
	go func() { p.probe(ctx, stopProbe); close(probed) }()
	time.Sleep(time.Second) // a second of normal answers before the fault
	from := time.Now()
	if kill {
		s.Redis.Kill()
	} else {
		s.Redis.Signal(syscall.SIGSTOP)
	}
	time.Sleep(opt.Outage) // the fault's length: a sleep by nature
	if kill {
		err = s.StartRedis(ctx)
	} else {
		s.Redis.Signal(syscall.SIGCONT)
	}
	to := time.Now()
	if err != nil {
		close(stopProbe)
		return o, fmt.Errorf("restart redis: %w", err)
	}
	back, err := allReady(ctx, s, 60*time.Second)
	time.Sleep(2 * time.Second) // two seconds of answers after recovery
	close(stopProbe)
	<-probed
	f := Fault{Name: fmt.Sprintf("redis %s", map[bool]string{true: "killed", false: "SIGSTOPped"}[kill]), From: from, To: to,
		Routes: SummarizeStatuses(c.Seen.Window(from, to)), RecoveredIn: back, Bound: redisBound}
	after := Fault{Name: "after, until ready + 2 s", From: to, To: time.Now(), Routes: SummarizeStatuses(c.Seen.Window(to, time.Now()))}
	o.Faults = append(o.Faults, f, after)
	if err != nil {
		return o, fmt.Errorf("not ready again without a restart: %w", err)
	}
	p.resolveUnknown(ctx, o)
	// Jobs after recovery, to show the stack works as before.
	for i := range 10 {
		sub, err := c.Submit(ctx, SleepSpec(0.5), fmt.Sprintf("%s-post-%d-%s", name, i, randHex(3)), i, time.Now().Add(time.Minute))
		if err != nil {
			return o, err
		}
		tr.Add(sub)
	}
	tr.Drain(150 * time.Second)
	tr.Account(ctx, o, nil)
	tr.VerifyResults(ctx, o)
	phantoms(ctx, c, tr, o)
	tr.Retried(o)
	o.Recoveries = tr.Recoveries([]time.Time{from})
	o.Faults = append(o.Faults, wholeRun(c, t0))
	return o, nil
}

func runStop(ctx context.Context, opt Options) (*Outcome, error) {
	return redisOutage(ctx, opt, "stop", false)
}

func runDown(ctx context.Context, opt Options) (*Outcome, error) {
	return redisOutage(ctx, opt, "down", true)
}

// runR2: Redis SIGKILLed mid-run and restarted at once from its AOF while
// jobs are submitted and run. Expected: no job that got a 202 is lost, no
// phantom, every job ends (none fails: max_retry is 3), only 503 with
// Retry-After while Redis is away.
func runR2(ctx context.Context, opt Options) (*Outcome, error) {
	o := &Outcome{}
	s, err := NewStack(ctx, opt.Bin, opt.Root, "r2", StackConfig{Workers: 2, Concurrency: 4, Users: 4})
	if err != nil {
		return o, err
	}
	defer s.Close()
	c := newClient(s)
	tr := NewTracker(ctx, c)
	t0 := time.Now()
	n := 200
	if opt.Short {
		n = 80
	}
	var killAt, backAt time.Time
	var restartErr error
	faultDone := make(chan struct{})
	go func() {
		defer close(faultDone)
		// Mid-run: once a third of the jobs are in.
		_ = waitFor(ctx, time.Minute, "a third of r2's jobs", func() bool { return len(tr.Jobs()) >= n/3 })
		killAt = time.Now()
		s.Redis.Kill()
		time.Sleep(500 * time.Millisecond)
		restartErr = s.StartRedis(ctx)
		backAt = time.Now()
	}()
	gen := func(i int) Spec { return SleepSpec([]float64{0.25, 0.5, 1, 2}[i%4]) }
	errs := submitAll(ctx, c, tr, "r2-"+randHex(4), n, 4, gen)
	<-faultDone
	if restartErr != nil {
		return o, fmt.Errorf("restart redis: %w", restartErr)
	}
	for _, e := range errs {
		o.Notes = append(o.Notes, "not accepted: "+e.Error())
	}
	back, err := allReady(ctx, s, 60*time.Second)
	o.Faults = append(o.Faults, Fault{Name: "redis SIGKILLed, restarted from AOF", From: killAt, To: backAt,
		Routes: SummarizeStatuses(c.Seen.Window(killAt, backAt.Add(back))), RecoveredIn: back, Bound: redisBound})
	if err != nil {
		return o, fmt.Errorf("not ready again without a restart: %w", err)
	}
	window := 0
	for _, j := range tr.Jobs() {
		if j.Accepted.Before(killAt) && j.Accepted.After(killAt.Add(-time.Second)) {
			window++
		}
	}
	tr.Drain(150 * time.Second)
	if n, ex := tr.Recheck(150 * time.Second); n > 0 {
		o.Violations = append(o.Violations, fmt.Sprintf("%d job(s) seen final before the SIGKILL were not final after it: %v", n, ex[:min(len(ex), 5)]))
	}
	tr.Account(ctx, o, nil)
	tr.VerifyResults(ctx, o)
	phantoms(ctx, c, tr, o)
	tr.Retried(o)
	o.Recoveries = tr.Recoveries([]time.Time{killAt})
	if info, err := s.RDB.Info(ctx, "persistence").Result(); err == nil {
		for _, l := range strings.Split(info, "\n") {
			if strings.HasPrefix(l, "aof_delayed_fsync:") || strings.HasPrefix(l, "aof_last_write_status:") {
				o.Notes = append(o.Notes, "redis after restart: "+strings.TrimSpace(l))
			}
		}
	}
	o.Notes = append(o.Notes, fmt.Sprintf("%d job(s) got their 202 in the last second before the SIGKILL (the appendfsync everysec window); lost of them: see 'lost'", window))
	o.Faults = append(o.Faults, wholeRun(c, t0))
	return o, nil
}

// runAOFLoss shows what appendfsync everysec risks: on a machine crash
// (not a process crash: a SIGKILLed redis-server's writes are already in
// the kernel's page cache, as R2 shows) up to about a second of writes
// Redis acknowledged never reaches the disk. The harness copies Redis's
// AOF directory while jobs are being submitted and run, lets Redis take a
// second more of writes, then SIGKILLs it and restarts it from the copy:
// the last second is gone, as after a power cut. Expected: no job
// accepted before the copy is lost or stuck; what became of those accepted
// in the lost second is reported (the window's cost), not judged.
func runAOFLoss(ctx context.Context, opt Options) (*Outcome, error) {
	o := &Outcome{}
	s, err := NewStack(ctx, opt.Bin, opt.Root, "aofloss", StackConfig{Workers: 2, Concurrency: 4, Users: 4})
	if err != nil {
		return o, err
	}
	defer s.Close()
	c := newClient(s)
	tr := NewTracker(ctx, c)
	t0 := time.Now()
	n := 120
	if opt.Short {
		n = 60
	}
	aof := filepath.Join(s.Dir, "redis")
	var copyAt, killAt time.Time
	var faultErr error
	faultDone := make(chan struct{})
	go func() {
		defer close(faultDone)
		_ = waitFor(ctx, time.Minute, "a third of the jobs", func() bool { return len(tr.Jobs()) >= n/3 })
		copyAt = time.Now()
		if out, err := exec.Command("cp", "-a", aof, aof+".crash").CombinedOutput(); err != nil {
			faultErr = fmt.Errorf("copy the AOF: %w: %s", err, out)
			return
		}
		time.Sleep(time.Second) // the second that will be lost
		killAt = time.Now()
		s.Redis.Kill()
		if err := os.RemoveAll(aof); err != nil {
			faultErr = err
			return
		}
		if err := os.Rename(aof+".crash", aof); err != nil {
			faultErr = err
			return
		}
		faultErr = s.StartRedis(ctx)
	}()
	gen := func(i int) Spec { return SleepSpec([]float64{0.25, 0.5, 1, 2}[i%4]) }
	errs := submitAll(ctx, c, tr, "aofloss-"+randHex(4), n, 4, gen)
	<-faultDone
	if faultErr != nil {
		return o, faultErr
	}
	for _, e := range errs {
		o.Notes = append(o.Notes, "not accepted: "+e.Error())
	}
	back, err := allReady(ctx, s, 60*time.Second)
	o.Faults = append(o.Faults, Fault{Name: "AOF rolled back 1 s, redis restarted", From: killAt, To: time.Now(),
		Routes: SummarizeStatuses(c.Seen.Window(killAt, time.Now())), RecoveredIn: back, Bound: redisBound})
	if err != nil {
		return o, err
	}
	tr.Drain(200 * time.Second)
	if n, ex := tr.Recheck(150 * time.Second); n > 0 {
		o.Notes = append(o.Notes, fmt.Sprintf("%d job(s) seen final before the crash were not final after it (followed again): %v", n, ex[:min(len(ex), 5)]))
	}
	tr.Account(ctx, o, nil)
	// Sort the damage: before the copy it is a violation; in the lost
	// second it is the window's cost.
	inWindow := map[string]int{}
	windowJobs := 0
	for _, j := range tr.Jobs() {
		if j.Accepted.Before(copyAt) || j.Accepted.After(killAt) {
			continue
		}
		windowJobs++
		switch {
		case j.Lost:
			o.Lost--
			inWindow["lost (404)"]++
		case j.Final == nil:
			o.Stuck--
			st := "?"
			if j.Last != nil {
				st = j.Last.State
			}
			inWindow["stuck "+st]++
		default:
			inWindow[j.Final.State]++
		}
	}
	o.Notes = append(o.Notes, fmt.Sprintf("%d job(s) got their 202 in the lost second; what became of them: %v", windowJobs, inWindow))
	tr.VerifyResults(ctx, o)
	tr.Retried(o)
	o.Faults = append(o.Faults, wholeRun(c, t0))
	return o, nil
}
