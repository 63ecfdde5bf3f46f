// Package client is the Go SDK for claimcheck: submit a job, follow it to
// the end, download its result, with typed errors.
//
//	c := client.New("http://127.0.0.1:8080", client.WithCredential(apiKey))
//	job, err := c.Submit(ctx, client.SubmitRequest{Type: "primes", Input: json.RawMessage(`{"n":1000000}`)})
//	final, err := c.Wait(ctx, job.ID, job.Token, func(j *client.Job) { fmt.Println(j.Progress.Percent) })
//	_, err = c.Download(ctx, job.ID, job.Token, os.Stdout)
//
// The job token returned by Submit is all the job routes need: share it, and
// whoever holds it can follow, cancel and download that one job.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client talks to a claimcheck api (and its progress service).
type Client struct {
	base, progress string
	credential     string
	http           *http.Client
}

// Option configures a Client.
type Option func(*Client)

// WithCredential sets the API key (cck_…) or session (ccs_…) sent to the
// api's routes.
func WithCredential(s string) Option { return func(c *Client) { c.credential = s } }

// WithProgressURL sets the progress service's base URL, when it is not the
// api's (links in responses are relative to it).
func WithProgressURL(u string) Option {
	return func(c *Client) { c.progress = strings.TrimRight(u, "/") }
}

// WithHTTPClient replaces http.DefaultClient. Event streams are long: give
// it no overall Timeout; contexts bound each call instead.
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// New returns a client for the api at baseURL.
func New(baseURL string, opts ...Option) *Client {
	c := &Client{base: strings.TrimRight(baseURL, "/"), http: http.DefaultClient}
	for _, o := range opts {
		o(c)
	}
	if c.progress == "" {
		c.progress = c.base
	}
	return c
}

// SubmitRequest is a job to submit.
type SubmitRequest struct {
	Type  string          `json:"type"`
	Input json.RawMessage `json:"input,omitempty"`
	// Timeout per attempt, as a Go duration ("90s").
	Timeout  string `json:"timeout,omitempty"`
	Priority string `json:"priority,omitempty"`
	MaxRetry *int   `json:"max_retry,omitempty"`
	// Webhook, when set, has the job's events POSTed to a URL of yours.
	Webhook *Webhook `json:"webhook,omitempty"`
	// IdempotencyKey makes retrying the submission safe: the same key and
	// body give the same job.
	IdempotencyKey string `json:"-"`
}

// Webhook subscribes a URL to a job's events. The server refuses (422) a
// URL that is not http or https, carries user info, or leads to a
// loopback, private or other non-public address unless its operator
// allows those.
type Webhook struct {
	URL string `json:"url"`
	// Events are any of "started", "progress", "log" and "completed"
	// (empty: "completed" only).
	Events []string `json:"events,omitempty"`
}

// Submitted is the answer to a submission: the job and its token.
type Submitted struct {
	ID             string    `json:"id"`
	Type           string    `json:"type"`
	State          string    `json:"state"`
	Token          string    `json:"token"`
	TokenExpiresAt time.Time `json:"token_expires_at"`
	Links          Links     `json:"links"`
	// Webhook, for a job with one, is what the server subscribed: the
	// events, normalized; the URL is never sent back.
	Webhook *WebhookEvents `json:"webhook,omitempty"`
}

// WebhookEvents are the events a job's webhook is subscribed to.
type WebhookEvents struct {
	Events []string `json:"events"`
}

// Links are a job's routes on the progress service.
type Links struct {
	Self   string `json:"self"`
	Events string `json:"events"`
	Result string `json:"result"`
	Cancel string `json:"cancel"`
	Logs   string `json:"logs"`
}

// Job is a job's record.
type Job struct {
	ID         string     `json:"id"`
	Type       string     `json:"type"`
	State      string     `json:"state"`
	Progress   Progress   `json:"progress"`
	Attempts   int        `json:"attempts"`
	CreatedAt  time.Time  `json:"created_at"`
	StartedAt  *time.Time `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
	Error      *string    `json:"error"`
	Result     *Result    `json:"result"`
}

// Final reports whether the job has ended.
func (j *Job) Final() bool {
	return j.State == "succeeded" || j.State == "failed" || j.State == "canceled"
}

// Progress is how far a job says it is.
type Progress struct {
	Percent float64 `json:"percent"`
	Message string  `json:"message"`
}

// Result describes a succeeded job's output.
type Result struct {
	ContentType string `json:"content_type"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"`
}

// Submit submits a job with the client's credential.
func (c *Client) Submit(ctx context.Context, r SubmitRequest) (*Submitted, error) {
	hdr := http.Header{}
	if r.IdempotencyKey != "" {
		hdr.Set("Idempotency-Key", r.IdempotencyKey)
	}
	var out Submitted
	return &out, c.do(ctx, http.MethodPost, c.base+"/v1/jobs", c.credential, r, hdr, &out, http.StatusAccepted)
}

// Get reads a job with its token.
func (c *Client) Get(ctx context.Context, id, token string) (*Job, error) {
	var out Job
	return &out, c.do(ctx, http.MethodGet, c.jobURL(id, ""), token, nil, nil, &out, http.StatusOK)
}

// Cancel cancels a job with its token; the job may take a moment to reach
// canceled (Wait for it).
func (c *Client) Cancel(ctx context.Context, id, token string) (*Job, error) {
	var out Job
	return &out, c.do(ctx, http.MethodPost, c.jobURL(id, "/cancel"), token, nil, nil, &out, http.StatusOK, http.StatusAccepted)
}

// LinkOptions shape a download link; every field is optional.
type LinkOptions struct {
	Filename    string `json:"filename,omitempty"`
	Disposition string `json:"disposition,omitempty"` // "attachment" or "inline"
	ExpiresIn   string `json:"expires_in,omitempty"`  // a Go duration, at most 24h
	// Once asks for a one-time link: each byte of the result is served at
	// most once through it (the first GET gets it; later ones are 410,
	// and one during a download 409). An interrupted download may be
	// resumed for 60 s with Range: bytes=<what it served>-.
	Once bool `json:"once,omitempty"`
}

// Link is a download URL that needs no header.
type Link struct {
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expires_at"`
	Once      bool      `json:"once,omitempty"` // a one-time link
}

// Link makes a download link for a succeeded job's result. A relative URL
// is made absolute against the progress service.
func (c *Client) Link(ctx context.Context, id, token string, o LinkOptions) (*Link, error) {
	var out Link
	if err := c.do(ctx, http.MethodPost, c.jobURL(id, "/links"), token, o, nil, &out, http.StatusCreated); err != nil {
		return nil, err
	}
	if strings.HasPrefix(out.URL, "/") {
		out.URL = c.progress + out.URL
	}
	return &out, nil
}

// ListOptions filter and page GET /v1/jobs.
type ListOptions struct {
	State  string
	Cursor string
	Limit  int
}

// JobList is one page of the caller's jobs, newest first.
type JobList struct {
	Jobs       []Job  `json:"jobs"`
	NextCursor string `json:"next_cursor"`
}

// List lists the caller's jobs.
func (c *Client) List(ctx context.Context, o ListOptions) (*JobList, error) {
	q := url.Values{}
	if o.State != "" {
		q.Set("state", o.State)
	}
	if o.Cursor != "" {
		q.Set("cursor", o.Cursor)
	}
	if o.Limit > 0 {
		q.Set("limit", fmt.Sprint(o.Limit))
	}
	u := c.base + "/v1/jobs"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var out JobList
	return &out, c.do(ctx, http.MethodGet, u, c.credential, nil, nil, &out, http.StatusOK)
}

func (c *Client) jobURL(id, suffix string) string {
	return c.progress + "/v1/jobs/" + url.PathEscape(id) + suffix
}

// do sends a JSON request and decodes a JSON answer whose status is one of
// ok; any other answer is an *Error.
func (c *Client) do(ctx context.Context, method, u, bearer string, body any, hdr http.Header, out any, ok ...int) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	for _, code := range ok {
		if resp.StatusCode == code {
			if out == nil {
				return nil
			}
			if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
				return fmt.Errorf("%s %s: decode: %w", method, req.URL.Path, err)
			}
			return nil
		}
	}
	return errorFrom(resp)
}
