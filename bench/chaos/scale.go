package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// The scale scenario (issue 13 part 3): every process several times over,
// as separate OS processes, on a Redis Cluster of three primaries with
// results in an S3-protocol store and no directory shared but the signing
// keys (a secret mount in a real deployment):
//
//	2 gateways ─▶ 2 apis (--trust-gateway) ─┐
//	clients ───▶ 2 progress ────────────────┼─▶ Redis Cluster (3 primaries)
//	3 workers ──────────────────────────────┘   S3 (results)
//
// The client spreads requests over the running instances of each kind as
// a load balancer would. It proves that mixed jobs all succeed; that a job
// submitted through one api is read, downloaded (with Range) and streamed
// from either progress instance; that an event stream resumed with
// Last-Event-ID on the other progress instance misses nothing; how long
// revoke-tokens, logout, block and API-key rotation take to reach every
// instance (p50/p99); and that killing one instance of each kind mid-load
// loses no accepted job.

// ScaleStack is a Stack of many instances.
type ScaleStack struct {
	*Stack
	Nodes    []*Proc
	APIs     []*Proc
	Progs    []*Proc
	Gateways []*Proc
	S3       *S3Server
	// users are the accounts the scenario signs in as, with passwords.
	users map[string]string
	env   []string
}

// NewScaleStack starts the cluster, the object store and every instance,
// and waits until each is ready.
func NewScaleStack(ctx context.Context, bin, root string, workers, apis, progs, gateways int) (*ScaleStack, error) {
	dir, err := os.MkdirTemp(root, "scale-")
	if err != nil {
		return nil, err
	}
	s := &ScaleStack{Stack: &Stack{Dir: dir, bin: bin}, users: map[string]string{}}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	if err := s.startCluster(ctx, 3); err != nil {
		return nil, err
	}
	if s.S3, err = StartS3(ctx, filepath.Join(dir, "s3")); err != nil {
		return nil, err
	}
	keys := filepath.Join(dir, "keys")
	s.env = append([]string{"REDIS_URL=" + s.RedisURL}, s.S3.Env()...)
	admin := append([]string{"CLAIMCHECK_DATA_DIR=" + filepath.Join(dir, "admin")}, s.env...)
	for _, kind := range []string{"jobs", "gateway", "progress"} {
		if _, err := s.admin(ctx, admin, "", "keys", "generate", "--out", filepath.Join(keys, kind)); err != nil {
			return nil, err
		}
	}
	for i := range 4 {
		user, pw := fmt.Sprintf("scale%d", i), randHex(12)
		if _, err := s.admin(ctx, admin, pw+"\n", "users", "add", user, "--password-stdin"); err != nil {
			return nil, err
		}
		out, err := s.admin(ctx, admin, "", "apikeys", "create", "--user", user, "--name", "scale")
		if err != nil {
			return nil, err
		}
		if key := findKey(out); key != "" {
			s.APIKeys = append(s.APIKeys, key)
		} else {
			return nil, errors.New("apikeys create printed no key")
		}
		s.users[user] = pw
	}
	logs := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return nil, err
	}
	// Each process has a data directory of its own, holding only a link
	// to the shared keys: results live in S3 alone.
	proc := func(name string, listen bool, args ...string) (*Proc, error) {
		data := filepath.Join(dir, name)
		if err := os.MkdirAll(data, 0o755); err != nil {
			return nil, err
		}
		if err := os.Symlink(keys, filepath.Join(data, "keys")); err != nil {
			return nil, err
		}
		p := &Proc{Name: name, Path: bin, Log: filepath.Join(logs, name+".log"),
			Env:  append([]string{"CLAIMCHECK_DATA_DIR=" + data}, s.env...),
			Args: append([]string{args[0], "--metrics-addr", ""}, args[1:]...), MetricsArg: 2}
		if listen {
			port, err := freePort()
			if err != nil {
				return nil, err
			}
			p.Args, p.URL = append(p.Args, "--addr", addr(port)), "http://"+addr(port)
		}
		return p, nil
	}
	for i := range apis {
		p, err := proc(fmt.Sprintf("api%d", i+1), true, "api", "--trust-gateway", "--max-active-jobs", "-1")
		if err != nil {
			return nil, err
		}
		s.APIs = append(s.APIs, p)
	}
	for i := range progs {
		p, err := proc(fmt.Sprintf("progress%d", i+1), true, "progress", "--results-url", s.S3.ResultsURL,
			"--max-streams-per-address", "-1", "--max-streams-per-token", "-1", "--max-streams-per-job", "-1")
		if err != nil {
			return nil, err
		}
		s.Progs = append(s.Progs, p)
	}
	for i := range gateways {
		p, err := proc(fmt.Sprintf("gateway%d", i+1), true, "gateway", "--upstream", s.APIs[i%len(s.APIs)].URL)
		if err != nil {
			return nil, err
		}
		s.Gateways = append(s.Gateways, p)
	}
	for i := range workers {
		p, err := proc(fmt.Sprintf("worker%d", i+1), false, "worker", "--concurrency", "4", "--max-running-jobs", "0",
			"--results-url", s.S3.ResultsURL)
		if err != nil {
			return nil, err
		}
		s.Workers = append(s.Workers, p)
	}
	all := slices.Concat(s.APIs, s.Progs, s.Gateways, s.Workers)
	for _, p := range all {
		if err := p.Start(); err != nil {
			return nil, err
		}
	}
	for _, p := range all {
		if err := WaitReady(ctx, p, 90*time.Second); err != nil {
			return nil, err
		}
	}
	s.apiFronts, s.progFronts = s.Gateways, s.Progs
	s.APIURL, s.ProgURL = s.Gateways[0].URL, s.Progs[0].URL
	ok = true
	return s, nil
}

// startCluster starts n cluster-enabled redis-servers (AOF, a password)
// and joins them with redis-cli --cluster create.
func (s *ScaleStack) startCluster(ctx context.Context, n int) error {
	bin, err1 := exec.LookPath("redis-server")
	cli, err2 := exec.LookPath("redis-cli")
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("redis-server and redis-cli must be on PATH: %w", err)
	}
	pw := randHex(16)
	var addrs []string
	for i := range n {
		d := filepath.Join(s.Dir, fmt.Sprintf("redis%d", i+1))
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		// A free port may be taken between the probe and redis-server's
		// bind (the other scenarios start at the same time): try another.
		var lastErr error
		for range 5 {
			port, err := freePort()
			if err != nil {
				return err
			}
			p := &Proc{Name: fmt.Sprintf("redis%d", i+1), Path: bin, Log: filepath.Join(s.Dir, fmt.Sprintf("redis%d.log", i+1)),
				Args: []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", d,
					"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000",
					"--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
					"--maxmemory-policy", "noeviction", "--requirepass", pw, "--masterauth", pw, "--daemonize", "no"}}
			if err := p.Start(); err != nil {
				return err
			}
			c := redis.NewClient(&redis.Options{Addr: addr(port), Password: pw, MaxRetries: -1})
			lastErr = waitFor(ctx, 20*time.Second, "redis "+addr(port), func() bool {
				return !p.Running() || c.Ping(ctx).Err() == nil
			})
			ok := lastErr == nil && p.Running()
			c.Close()
			if ok {
				s.Nodes = append(s.Nodes, p)
				addrs = append(addrs, addr(port))
				break
			}
			p.Kill()
			if lastErr == nil {
				lastErr = fmt.Errorf("redis-server on %s exited (see %s)", addr(port), p.Log)
			}
		}
		if len(addrs) != i+1 {
			return lastErr
		}
	}
	args := append([]string{"--no-auth-warning", "-a", pw, "--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("redis-cli --cluster create: %w: %s", err, out)
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, Password: pw})
	s.RedisURL = "redis+cluster://:" + pw + "@" + strings.Join(addrs, ",")
	defer cc.Close()
	return waitFor(ctx, 30*time.Second, "cluster state ok", func() bool {
		var notOK atomic.Bool // ForEachShard calls the nodes at once
		err := cc.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error {
			info, err := n.ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				notOK.Store(true)
			}
			return nil
		})
		return err == nil && !notOK.Load()
	})
}

// Close ends every process and the object store.
func (s *ScaleStack) Close() {
	for _, p := range slices.Concat(s.Gateways, s.APIs, s.Progs, s.Workers, s.Nodes) {
		p.Kill()
	}
	if s.S3 != nil {
		s.S3.Close()
	}
}

// runScale is the scenario; see the top of this file.
func runScale(ctx context.Context, opt Options) (*Outcome, error) {
	o := &Outcome{}
	s, err := NewScaleStack(ctx, opt.Bin, opt.Root, 3, 2, 2, 2)
	if err != nil {
		return o, err
	}
	defer s.Close()
	c := newClient(s.Stack)
	tr := NewTracker(ctx, c)
	r := rand.New(rand.NewPCG(3, 4))
	var genMu sync.Mutex
	gen := func(int) Spec { genMu.Lock(); defer genMu.Unlock(); return MixedSpec(r) }
	t0 := time.Now()
	n := opt.Jobs
	if opt.Short {
		n = 60
	}

	// Mixed jobs through both gateways, followed on both progress
	// instances; one of each kind is SIGKILLed while they run.
	killed := make(chan []string)
	go func() { killed <- s.killOneOfEach(ctx, 1500*time.Millisecond) }()
	errs := submitAll(ctx, c, tr, "scale-"+randHex(4), n, 8, gen)
	for _, e := range errs {
		o.Notes = append(o.Notes, "not accepted: "+e.Error())
	}
	o.Notes = append(o.Notes, fmt.Sprintf("SIGKILLed mid-load (not restarted): %s", strings.Join(<-killed, ", ")),
		"results in "+s.S3.Kind+" over HTTP; no directory shared but the signing keys")
	// A killed worker's jobs run again once Asynq's lease on them ends;
	// one with max_retry 0 fails "worker lost" instead, as it must.
	tr.Drain(150 * time.Second)
	tr.Account(ctx, o, workerLost)
	tr.VerifyResults(ctx, o)

	// The rest runs on the surviving instances plus the killed ones
	// restarted, so that every check meets two of each kind.
	for _, p := range slices.Concat(s.APIs, s.Progs, s.Gateways, s.Workers) {
		if !p.Running() {
			if err := p.Start(); err != nil {
				return o, err
			}
			if err := WaitReady(ctx, p, 60*time.Second); err != nil {
				return o, err
			}
		}
	}
	if err := s.crossInstance(ctx, c, o); err != nil {
		o.Violations = append(o.Violations, "cross-instance: "+err.Error())
	}
	if err := s.resumeElsewhere(ctx, c); err != nil {
		o.Violations = append(o.Violations, "SSE resumed on the other progress instance: "+err.Error())
	}
	trials := 20
	if opt.Short {
		trials = 4
	}
	windows, err := s.revocationWindows(ctx, c, trials)
	if err != nil {
		o.Violations = append(o.Violations, "revocation: "+err.Error())
	}
	o.Notes = append(o.Notes, windows...)
	o.Faults = append(o.Faults, wholeRun(c, t0))
	// Connection errors at the moment of the kills are what a load
	// balancer's retry hides; they are reported, not violations.
	o.Faults[0].Routes = slices.DeleteFunc(o.Faults[0].Routes, func(r RouteStats) bool {
		if r.Status[0] > 0 {
			o.Notes = append(o.Notes, fmt.Sprintf("%s: %d request(s) cut by the kills", r.Route, r.Status[0]))
			delete(r.Status, 0)
		}
		return len(r.Status) == 0
	})
	return o, nil
}

// killOneOfEach SIGKILLs the first instance of every kind after d.
func (s *ScaleStack) killOneOfEach(ctx context.Context, d time.Duration) []string {
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(d):
	}
	var names []string
	for _, p := range []*Proc{s.Gateways[0], s.APIs[0], s.Progs[0], s.Workers[0]} {
		p.Kill()
		names = append(names, p.Name)
	}
	return names
}

// crossInstance submits through each gateway and reads every job's
// record, result (whole and a Range) and event stream on every progress
// instance: the same bytes everywhere.
func (s *ScaleStack) crossInstance(ctx context.Context, c *Client, o *Outcome) error {
	for gi, g := range s.Gateways {
		spec := Spec{Type: "mandelbrot", Input: `{"width":320,"height":240,"max_iter":50}`}
		a := c.do(ctx, "POST /v1/jobs", http.MethodPost, g.URL+"/v1/jobs", s.APIKeys[gi%len(s.APIKeys)], spec.Body(), nil, 10*time.Second)
		if a.Status != http.StatusAccepted {
			return fmt.Errorf("submit through %s: %d %s", g.Name, a.Status, a.Body)
		}
		var sub struct{ ID, Token string }
		if err := json.Unmarshal(a.Body, &sub); err != nil {
			return err
		}
		j := &Submitted{ID: sub.ID, Token: sub.Token}
		// Wait on the other progress instance than the one that reads it.
		if err := waitFor(ctx, 60*time.Second, "job "+j.ID, func() bool {
			a := c.do(ctx, "GET /v1/jobs/{id}", http.MethodGet, s.Progs[(gi+1)%len(s.Progs)].URL+"/v1/jobs/"+j.ID, j.Token, nil, nil, 10*time.Second)
			return strings.Contains(string(a.Body), `"succeeded"`)
		}); err != nil {
			return err
		}
		var whole []byte
		for _, p := range s.Progs {
			u := p.URL + "/v1/jobs/" + j.ID + "/result"
			a := c.do(ctx, "GET /v1/jobs/{id}/result", http.MethodGet, u, j.Token, nil, nil, 30*time.Second)
			if a.Status != http.StatusOK || len(a.Body) < 100 {
				return fmt.Errorf("%s: result of a job submitted through %s: %d (%d bytes)", p.Name, g.Name, a.Status, len(a.Body))
			}
			if whole == nil {
				whole = a.Body
			} else if string(a.Body) != string(whole) {
				return fmt.Errorf("%s served different bytes for job %s", p.Name, j.ID)
			}
			rng := c.do(ctx, "GET /v1/jobs/{id}/result (range)", http.MethodGet, u, j.Token, nil, map[string]string{"Range": "bytes=10-49"}, 30*time.Second)
			if rng.Status != http.StatusPartialContent || string(rng.Body) != string(whole[10:50]) {
				return fmt.Errorf("%s: Range bytes=10-49: %d, %d bytes, same as the whole's: %v", p.Name, rng.Status, len(rng.Body), string(rng.Body) == string(whole[10:50]))
			}
			if st, a := c.eventsOn(ctx, p.URL, j); st != "succeeded" {
				return fmt.Errorf("%s: event stream ended %q (%d)", p.Name, st, a.Status)
			}
		}
		o.Downloaded++
	}
	return nil
}

// eventsOn is Events against one progress instance.
func (c *Client) eventsOn(ctx context.Context, base string, j *Submitted) (string, Answer) {
	ids, a, err := c.stream(ctx, base, j, "", -1)
	if err != nil || len(ids) == 0 {
		return "", a
	}
	last := ids[len(ids)-1]
	if last.event != "done" {
		return "", a
	}
	var d struct{ State string }
	_ = json.Unmarshal([]byte(last.data), &d)
	return d.State, a
}

type sseEvent struct{ id, event, data string }

// stream reads j's event stream on base, resuming after lastID when set,
// and returns its events (heartbeats and log lines left out) once it has
// stop of them (-1: until the stream ends).
func (c *Client) stream(ctx context.Context, base string, j *Submitted, lastID string, stop int) ([]sseEvent, Answer, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/jobs/"+j.ID+"/events", nil)
	if err != nil {
		return nil, Answer{}, err
	}
	req.Header.Set("Authorization", "Bearer "+j.Token)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	start := time.Now()
	resp, err := c.http.Do(req)
	a := Answer{Route: "GET /v1/jobs/{id}/events", Latency: time.Since(start)}
	if err != nil {
		a.Err = err
		return nil, a, err
	}
	defer resp.Body.Close()
	a.Status = resp.StatusCode
	c.Seen.Add(a, start)
	if resp.StatusCode != http.StatusOK {
		return nil, a, fmt.Errorf("events: %d", resp.StatusCode)
	}
	var out []sseEvent
	var cur sseEvent
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			cur.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			cur.event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			cur.data = strings.TrimPrefix(line, "data: ")
		case line == "":
			if cur.event != "" && cur.event != "log" {
				out = append(out, cur)
				if stop > 0 && len(out) >= stop || cur.event == "done" || cur.event == "end" {
					return out, a, nil
				}
			}
			cur = sseEvent{}
		}
	}
	return out, a, sc.Err()
}

// resumeElsewhere reads part of a running job's stream on one progress
// instance, resumes it with Last-Event-ID on the other, and compares what
// the resumed stream sent with the job's event log replayed afterwards:
// nothing may be missing or doubled.
func (s *ScaleStack) resumeElsewhere(ctx context.Context, c *Client) error {
	spec := SleepSpec(3)
	a := c.do(ctx, "POST /v1/jobs", http.MethodPost, s.Gateways[1].URL+"/v1/jobs", s.APIKeys[0], spec.Body(), nil, 10*time.Second)
	if a.Status != http.StatusAccepted {
		return fmt.Errorf("submit: %d %s", a.Status, a.Body)
	}
	var sub struct{ ID, Token string }
	if err := json.Unmarshal(a.Body, &sub); err != nil {
		return err
	}
	j := &Submitted{ID: sub.ID, Token: sub.Token}
	first, _, err := c.stream(ctx, s.Progs[0].URL, j, "", 4)
	if err != nil {
		return err
	}
	if len(first) < 4 || first[len(first)-1].event == "done" {
		return fmt.Errorf("the job ended before the stream could be cut (%d events)", len(first))
	}
	cut := first[len(first)-1].id
	rest, _, err := c.stream(ctx, s.Progs[1].URL, j, cut, -1)
	if err != nil {
		return err
	}
	replay, _, err := c.stream(ctx, s.Progs[0].URL, j, cut, -1)
	if err != nil {
		return err
	}
	if len(rest) == 0 || rest[len(rest)-1].event != "done" {
		return fmt.Errorf("the resumed stream did not reach done (%d events)", len(rest))
	}
	ids := func(es []sseEvent) string {
		var b strings.Builder
		for _, e := range es {
			b.WriteString(e.event + "@" + e.id + " ")
		}
		return b.String()
	}
	if ids(rest) != ids(replay) {
		return fmt.Errorf("resumed after %s:\n got %s\nlog %s", cut, ids(rest), ids(replay))
	}
	return nil
}

// revocationWindows measures, trials times each, how long after a
// revocation returns every instance refuses the revoked credential: a job
// token after revoke-tokens (on each progress instance), a session after
// logout, a blocked user's API key, and an API key revoked for a new one
// (on each gateway, whose caches had just used them).
func (s *ScaleStack) revocationWindows(ctx context.Context, c *Client, trials int) ([]string, error) {
	var notes []string
	measure := func(what string, urls []string, cred string, revoke func() error) ([]time.Duration, error) {
		// Warm every instance: each has just accepted the credential.
		for _, u := range urls {
			if a := c.do(ctx, what+" (before)", http.MethodGet, u, cred, nil, nil, 10*time.Second); a.Status != http.StatusOK {
				return nil, fmt.Errorf("%s: %s refused the credential before its revocation: %d %s", what, u, a.Status, a.Body)
			}
		}
		if err := revoke(); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		t0 := time.Now()
		var out []time.Duration
		for _, u := range urls {
			err := waitFor(ctx, 30*time.Second, what+" refused at "+u, func() bool {
				a := c.do(ctx, what+" (after)", http.MethodGet, u, cred, nil, nil, 10*time.Second)
				return a.Status == http.StatusUnauthorized || a.Status == http.StatusForbidden
			})
			if err != nil {
				return nil, err
			}
			out = append(out, time.Since(t0))
		}
		return out, nil
	}
	report := func(what string, ds []time.Duration) {
		notes = append(notes, fmt.Sprintf("revocation window, %s: p50 %s, p99 %s over %d instance reads",
			what, ms(Percentile(ds, 50)), ms(Percentile(ds, 99)), len(ds)))
	}
	gateways := func(path string) []string {
		var us []string
		for _, g := range s.Gateways {
			us = append(us, g.URL+path)
		}
		return us
	}

	var tokens, logouts, blocks, rotations []time.Duration
	keySess, err := s.signIn(ctx, c, "scale2", s.Gateways[0].URL)
	if err != nil {
		return notes, err
	}
	for i := range trials {
		// revoke-tokens: a job token, read on every progress instance.
		spec := SleepSpec(0.5)
		a := c.do(ctx, "POST /v1/jobs", http.MethodPost, s.Gateways[i%2].URL+"/v1/jobs", s.APIKeys[0], spec.Body(), nil, 10*time.Second)
		var sub struct{ ID, Token string }
		if a.Status != http.StatusAccepted || json.Unmarshal(a.Body, &sub) != nil {
			return notes, fmt.Errorf("submit: %d %s", a.Status, a.Body)
		}
		var urls []string
		for _, p := range s.Progs {
			urls = append(urls, p.URL+"/v1/jobs/"+sub.ID)
		}
		ds, err := measure("job token after revoke-tokens", urls, sub.Token, func() error {
			a := c.do(ctx, "POST /v1/jobs/{id}/revoke-tokens", http.MethodPost, s.Gateways[(i+1)%2].URL+"/v1/jobs/"+sub.ID+"/revoke-tokens", s.APIKeys[0], nil, nil, 10*time.Second)
			if a.Status != http.StatusCreated {
				return fmt.Errorf("revoke-tokens: %d %s", a.Status, a.Body)
			}
			return nil
		})
		if err != nil {
			return notes, err
		}
		tokens = append(tokens, ds...)

		// logout: a session, used on every gateway (two users in turn:
		// sign-ins are rate-limited per user and address).
		sess, err := s.signIn(ctx, c, fmt.Sprintf("scale%d", i%2), s.Gateways[i%2].URL)
		if err != nil {
			return notes, err
		}
		ds, err = measure("session after logout", gateways("/v1/jobs?limit=1"), sess, func() error {
			a := c.do(ctx, "DELETE /v1/sessions/current", http.MethodDelete, s.Gateways[(i+1)%2].URL+"/v1/sessions/current", sess, nil, nil, 10*time.Second)
			if a.Status != http.StatusNoContent {
				return fmt.Errorf("logout: %d %s", a.Status, a.Body)
			}
			return nil
		})
		if err != nil {
			return notes, err
		}
		logouts = append(logouts, ds...)

		// API key rotation: a new key, then the old one revoked, both
		// with a session (creating and listing keys need one).
		old := s.APIKeys[2]
		a = c.do(ctx, "POST /v1/api-keys", http.MethodPost, s.Gateways[i%2].URL+"/v1/api-keys", keySess, []byte(`{"name":"rotated"}`), nil, 10*time.Second)
		var created struct{ Key string }
		if a.Status != http.StatusCreated || json.Unmarshal(a.Body, &created) != nil || created.Key == "" {
			return notes, fmt.Errorf("create API key: %d %s", a.Status, a.Body)
		}
		oldID, err := s.keyID(ctx, c, keySess, old)
		if err != nil {
			return notes, err
		}
		ds, err = measure("API key after rotation", gateways("/v1/jobs?limit=1"), old, func() error {
			a := c.do(ctx, "DELETE /v1/api-keys/{id}", http.MethodDelete, s.Gateways[(i+1)%2].URL+"/v1/api-keys/"+oldID, keySess, nil, nil, 10*time.Second)
			if a.Status != http.StatusNoContent {
				return fmt.Errorf("revoke the old key: %d %s", a.Status, a.Body)
			}
			return nil
		})
		if err != nil {
			return notes, err
		}
		rotations = append(rotations, ds...)
		s.APIKeys[2] = created.Key
		for _, u := range gateways("/v1/jobs?limit=1") {
			if a := c.do(ctx, "new key", http.MethodGet, u, created.Key, nil, nil, 10*time.Second); a.Status != http.StatusOK {
				return notes, fmt.Errorf("the rotated-in key is refused at %s: %d", u, a.Status)
			}
		}

		// block: a user's API key, used on every gateway; then unblock
		// and a fresh key for the next trial.
		ds, err = measure("API key after users block", gateways("/v1/jobs?limit=1"), s.APIKeys[3], func() error {
			_, err := s.admin(ctx, s.adminEnv(), "", "users", "block", "scale3")
			return err
		})
		if err != nil {
			return notes, err
		}
		blocks = append(blocks, ds...)
		if _, err := s.admin(ctx, s.adminEnv(), "", "users", "unblock", "scale3"); err != nil {
			return notes, err
		}
		out, err := s.admin(ctx, s.adminEnv(), "", "apikeys", "create", "--user", "scale3", "--name", "scale")
		if err != nil {
			return notes, err
		}
		s.APIKeys[3] = findKey(out)
	}
	report("job token after revoke-tokens (each progress)", tokens)
	report("session after logout (each gateway)", logouts)
	report("API key after rotation (each gateway)", rotations)
	report("API key after users block, CLI exit to refusal (each gateway)", blocks)
	return notes, nil
}

func (s *ScaleStack) adminEnv() []string {
	return append([]string{"CLAIMCHECK_DATA_DIR=" + filepath.Join(s.Dir, "admin")}, s.env...)
}

// signIn opens a session for user through the gateway at base.
func (s *ScaleStack) signIn(ctx context.Context, c *Client, user, base string) (string, error) {
	body, _ := json.Marshal(map[string]string{"username": user, "password": s.users[user]})
	a := c.do(ctx, "POST /v1/sessions", http.MethodPost, base+"/v1/sessions", "", body, nil, 10*time.Second)
	for a.Status == http.StatusTooManyRequests && ctx.Err() == nil { // as a client would
		time.Sleep(retryWait(a))
		a = c.do(ctx, "POST /v1/sessions", http.MethodPost, base+"/v1/sessions", "", body, nil, 10*time.Second)
	}
	var out struct{ Session string }
	if a.Status != http.StatusCreated || json.Unmarshal(a.Body, &out) != nil || out.Session == "" {
		return "", fmt.Errorf("sign in as %s: %d %s", user, a.Status, a.Body)
	}
	return out.Session, nil
}

// keyID finds the id of the API key key, from its owner's key list (read
// with the owner's session).
func (s *ScaleStack) keyID(ctx context.Context, c *Client, session, key string) (string, error) {
	a := c.do(ctx, "GET /v1/api-keys", http.MethodGet, s.Gateways[0].URL+"/v1/api-keys", session, nil, nil, 10*time.Second)
	var out struct {
		Keys []struct {
			ID, Prefix string
		} `json:"api_keys"`
	}
	if a.Status != http.StatusOK || json.Unmarshal(a.Body, &out) != nil {
		return "", fmt.Errorf("list API keys: %d %s", a.Status, a.Body)
	}
	for _, k := range out.Keys {
		if k.Prefix != "" && strings.HasPrefix(key, k.Prefix) {
			return k.ID, nil
		}
	}
	return "", fmt.Errorf("the key is not in its owner's list (%d keys)", len(out.Keys))
}
