package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Client is the harness's HTTP client. It records every answer it gets,
// per route, so the table can show what clients saw.
type Client struct {
	s    *Stack
	http *http.Client
	// Seen counts statuses per route for the whole scenario.
	Seen *StatusLog
}

func newClient(s *Stack) *Client {
	tr := &http.Transport{MaxIdleConns: 4096, MaxIdleConnsPerHost: 4096, IdleConnTimeout: 30 * time.Second}
	return &Client{s: s, http: &http.Client{Transport: tr, Timeout: 90 * time.Second}, Seen: NewStatusLog()}
}

// JobView is the part of a job record the harness reads.
type JobView struct {
	ID       string `json:"id"`
	State    string `json:"state"`
	Attempts int    `json:"attempts"`
	MaxRetry int    `json:"max_retry"`
	Queue    string `json:"queue"`
	Progress struct {
		Percent   float64    `json:"percent"`
		UpdatedAt *time.Time `json:"updated_at"`
	} `json:"progress"`
	FinishedAt *time.Time `json:"finished_at"`
	Error      *string    `json:"error"`
	Result     *struct {
		Size   int64  `json:"size"`
		SHA256 string `json:"sha256"`
	} `json:"result"`
}

// Terminal reports whether state is final.
func Terminal(state string) bool {
	return state == "succeeded" || state == "failed" || state == "canceled"
}

// Answer is one HTTP exchange as the harness saw it.
type Answer struct {
	Route      string
	Status     int // 0: no answer (connection error or timeout)
	RetryAfter string
	Latency    time.Duration
	Body       []byte
	Header     http.Header
	Err        error
}

func (c *Client) do(ctx context.Context, route, method, url, cred string, body []byte, hdr map[string]string, timeout time.Duration) Answer {
	parent := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return Answer{Route: route, Err: err}
	}
	if cred != "" {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	start := time.Now()
	resp, err := c.http.Do(req)
	a := Answer{Route: route}
	if err != nil {
		a.Latency, a.Err = time.Since(start), err
		// A request the harness itself gave up (the scenario ended) is
		// not something a client saw.
		if parent.Err() == nil {
			c.Seen.Add(a, start)
		}
		return a
	}
	a.Body, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	a.Latency = time.Since(start)
	a.Status, a.Header, a.RetryAfter = resp.StatusCode, resp.Header, resp.Header.Get("Retry-After")
	if err != nil && ctx.Err() == nil {
		a.Err = err
	}
	c.Seen.Add(a, start)
	return a
}

// Submitted is an accepted job.
type Submitted struct {
	Spec     Spec
	ID       string
	Token    string
	Accepted time.Time
}

// retryWait is how long to wait after a refusal that names a Retry-After.
func retryWait(a Answer) time.Duration {
	if n, err := strconv.Atoi(a.RetryAfter); err == nil && n > 0 {
		return min(time.Duration(n)*time.Second, 5*time.Second)
	}
	return 500 * time.Millisecond
}

// Submit posts spec until it is accepted (202), refused for good (4xx other
// than 429), or the deadline passes; 429 and 503 are retried after their
// Retry-After with the same Idempotency-Key, so a "submission-unknown"
// resolves to one job.
func (c *Client) Submit(ctx context.Context, spec Spec, key string, user int, deadline time.Time) (*Submitted, error) {
	body := spec.Body()
	apiKey := c.s.APIKeys[user%len(c.s.APIKeys)]
	for {
		a := c.do(ctx, "POST /v1/jobs", http.MethodPost, c.s.apiURL()+"/v1/jobs", apiKey, body,
			map[string]string{"Idempotency-Key": key}, 10*time.Second)
		switch {
		case a.Status == http.StatusAccepted || a.Status == http.StatusOK:
			var out struct{ ID, Token string }
			if err := json.Unmarshal(a.Body, &out); err != nil || out.ID == "" {
				return nil, fmt.Errorf("submit: bad answer %q", a.Body)
			}
			return &Submitted{Spec: spec, ID: out.ID, Token: out.Token, Accepted: time.Now()}, nil
		case a.Status >= 400 && a.Status < 500 && a.Status != http.StatusTooManyRequests:
			return nil, fmt.Errorf("submit refused: %d %s", a.Status, a.Body)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("submit: gave up (last: %d %v)", a.Status, a.Err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(retryWait(a)):
		}
	}
}

func (c *Client) jobURL(id, suffix string) string { return c.s.progURL() + "/v1/jobs/" + id + suffix }

// Get reads a job's record once.
func (c *Client) Get(ctx context.Context, j *Submitted) (*JobView, Answer) {
	a := c.do(ctx, "GET /v1/jobs/{id}", http.MethodGet, c.jobURL(j.ID, ""), j.Token, nil, nil, 10*time.Second)
	if a.Status != http.StatusOK {
		return nil, a
	}
	var v JobView
	if err := json.Unmarshal(a.Body, &v); err != nil {
		a.Err = err
		return nil, a
	}
	return &v, a
}

// LongPoll waits (up to wait) for j's record to change from etag.
func (c *Client) LongPoll(ctx context.Context, j *Submitted, etag string, wait int) (*JobView, Answer) {
	hdr := map[string]string{"Prefer": "wait=" + strconv.Itoa(wait)}
	if etag != "" {
		hdr["If-None-Match"] = etag
	}
	a := c.do(ctx, "GET /v1/jobs/{id} (wait)", http.MethodGet, c.jobURL(j.ID, ""), j.Token, nil, hdr, time.Duration(wait+10)*time.Second)
	if a.Status != http.StatusOK {
		return nil, a
	}
	var v JobView
	if err := json.Unmarshal(a.Body, &v); err != nil {
		a.Err = err
		return nil, a
	}
	return &v, a
}

// Cancel asks for j to be cancelled.
func (c *Client) Cancel(ctx context.Context, j *Submitted) Answer {
	return c.do(ctx, "POST /v1/jobs/{id}/cancel", http.MethodPost, c.jobURL(j.ID, "/cancel"), j.Token, nil, nil, 10*time.Second)
}

// Download fetches j's result and returns its sha256 and size.
func (c *Client) Download(ctx context.Context, j *Submitted) (string, int64, Answer) {
	a := c.do(ctx, "GET /v1/jobs/{id}/result", http.MethodGet, c.jobURL(j.ID, "/result"), j.Token, nil, nil, 30*time.Second)
	if a.Status != http.StatusOK {
		return "", 0, a
	}
	sum := sha256.Sum256(a.Body)
	n := int64(len(a.Body))
	a.Body = nil
	return hex.EncodeToString(sum[:]), n, a
}

// Events follows j's event stream until its done event (or an end, or the
// timeout) and returns the state the done event names.
func (c *Client) Events(ctx context.Context, j *Submitted, timeout time.Duration) (string, Answer) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.jobURL(j.ID, "/events"), nil)
	if err != nil {
		return "", Answer{Err: err}
	}
	req.Header.Set("Authorization", "Bearer "+j.Token)
	req.Header.Set("Accept", "text/event-stream")
	start := time.Now()
	resp, err := c.http.Do(req)
	a := Answer{Route: "GET /v1/jobs/{id}/events", Latency: time.Since(start)}
	if err != nil {
		a.Err = err
		if ctx.Err() == nil {
			c.Seen.Add(a, start)
		}
		return "", a
	}
	defer resp.Body.Close()
	a.Status, a.Header, a.RetryAfter = resp.StatusCode, resp.Header, resp.Header.Get("Retry-After")
	c.Seen.Add(a, start)
	if resp.StatusCode != http.StatusOK {
		return "", a
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	event := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: ") && (event == "done" || event == "end"):
			var d struct{ State, Reason string }
			_ = json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &d)
			if event == "end" {
				return "end:" + d.Reason, a
			}
			return d.State, a
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, context.Canceled) {
		a.Err = err
	}
	return "", a
}

// StatusLog counts the answers of each route, and keeps each answer's time
// and latency so a fault window can be cut out of it.
type StatusLog struct {
	mu  sync.Mutex
	all []Seen
}

// Seen is one recorded answer.
type Seen struct {
	Route      string
	Start      time.Time
	Status     int
	RetryAfter bool
	Latency    time.Duration
	Problem    string
}

// NewStatusLog returns an empty log.
func NewStatusLog() *StatusLog { return &StatusLog{} }

// Add records a.
func (l *StatusLog) Add(a Answer, start time.Time) {
	s := Seen{Route: a.Route, Start: start, Status: a.Status, RetryAfter: a.RetryAfter != "", Latency: a.Latency}
	if a.Status >= 400 && len(a.Body) > 0 {
		var p struct{ Type string }
		if json.Unmarshal(a.Body, &p) == nil {
			s.Problem = strings.TrimPrefix(p.Type, "urn:claimcheck:problem:")
		}
	}
	l.mu.Lock()
	l.all = append(l.all, s)
	l.mu.Unlock()
}

// Window returns the answers to requests started in [from, to).
func (l *StatusLog) Window(from, to time.Time) []Seen {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Seen
	for _, s := range l.all {
		if !s.Start.Before(from) && s.Start.Before(to) {
			out = append(out, s)
		}
	}
	return out
}
