package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Wait follows a job until it ends and returns its final record, calling
// onUpdate (which may be nil) with the record after every change it sees.
// It follows the event stream, reconnecting with Last-Event-ID after a
// dropped connection so nothing is missed, and falls back to long-polling
// (Prefer: wait) where the stream is not available.
//
// When the server ends the stream because the token expired or was revoked
// (an "end" event), Wait returns a *StreamEndError (errors.Is
// ErrTokenExpired or ErrTokenRevoked): only a new token can go on. A 429
// (too many streams open, perhaps a dropped connection the server has not
// noticed yet) is retried after its Retry-After; other refusals are
// returned.
func (c *Client) Wait(ctx context.Context, id, token string, onUpdate func(*Job)) (*Job, error) {
	j, err := c.wait(ctx, id, token, onUpdate, nil)
	if errors.Is(err, errNoStream) {
		return c.poll(ctx, id, token, onUpdate)
	}
	return j, err
}

// wait is Wait on the event stream only (errNoStream where there is none),
// handing each "log" event's data to onLog when it is not nil.
func (c *Client) wait(ctx context.Context, id, token string, onUpdate func(*Job), onLog func(data string)) (*Job, error) {
	job := &Job{ID: id}
	last := ""
	for attempt := 0; ; attempt++ {
		done, err := c.follow(ctx, id, token, &last, job, onUpdate, onLog)
		switch {
		case done:
			// The done event carries a summary; return the whole record.
			return c.Get(ctx, id, token)
		case errors.Is(err, errNoStream):
			return nil, err
		case ctx.Err() != nil:
			return nil, ctx.Err()
		}
		var apiErr *Error
		var end *StreamEndError
		pause := min(time.Duration(attempt+1)*200*time.Millisecond, 2*time.Second)
		switch {
		case errors.As(err, &end) && errors.Is(end, ErrUnauthorized):
			return nil, err // the token is spent: reconnecting will not help
		case errors.As(err, &apiErr) && apiErr.Status == http.StatusTooManyRequests:
			pause = max(pause, apiErr.RetryAfter)
		case errors.As(err, &apiErr):
			return nil, err // refused: reconnecting will not help
		}
		// The connection dropped: reconnect, resuming after the last event.
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(pause):
		}
	}
}

// errNoStream means the server has no event stream for us.
var errNoStream = errors.New("no event stream")

// follow reads the event stream until the done event (true) or an error.
func (c *Client) follow(ctx context.Context, id, token string, last *string, job *Job, onUpdate func(*Job), onLog func(string)) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.jobURL(id, "/events"), nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	if *last != "" {
		req.Header.Set("Last-Event-ID", *last)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return false, fmt.Errorf("events: %w", err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed ||
		resp.StatusCode == http.StatusNotAcceptable || resp.StatusCode == http.StatusNotImplemented:
		return false, errNoStream // poll instead; a job that does not exist says so there
	case resp.StatusCode != http.StatusOK:
		return false, errorFrom(resp)
	case !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream"):
		return false, errNoStream
	}
	r := bufio.NewReader(resp.Body)
	var evID, evType, data string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return false, fmt.Errorf("events: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
			if evType == "" {
				continue
			}
			if evID != "" {
				*last = evID
			}
			if evType == "log" && onLog != nil {
				onLog(data)
			}
			if apply(job, evType, data) && onUpdate != nil {
				cp := *job
				onUpdate(&cp)
			}
			switch evType {
			case "done":
				return true, nil
			case "end":
				var e struct{ Reason string }
				_ = json.Unmarshal([]byte(data), &e)
				return false, &StreamEndError{Reason: e.Reason}
			}
			evID, evType, data = "", "", ""
		case strings.HasPrefix(line, "id: "):
			evID = line[4:]
		case strings.HasPrefix(line, "event: "):
			evType = line[7:]
		case strings.HasPrefix(line, "data: "):
			data = line[6:]
		}
	}
}

// apply folds one event into job and reports whether it changed anything.
func apply(job *Job, typ, data string) bool {
	switch typ {
	case "progress":
		return json.Unmarshal([]byte(data), &job.Progress) == nil
	case "state", "done":
		var m map[string]json.RawMessage
		if json.Unmarshal([]byte(data), &m) != nil {
			return false
		}
		if _, full := m["id"]; full {
			return json.Unmarshal([]byte(data), job) == nil // a whole record
		}
		var ev struct {
			State    string  `json:"state"`
			Attempts int     `json:"attempts"`
			Error    *string `json:"error"`
			Result   *Result `json:"result"`
		}
		if json.Unmarshal([]byte(data), &ev) != nil {
			return false
		}
		job.State = ev.State
		if ev.Attempts > 0 {
			job.Attempts = ev.Attempts
		}
		if ev.Error != nil {
			job.Error = ev.Error
		}
		if ev.Result != nil {
			job.Result = ev.Result
		}
		return true
	}
	return false
}

// poll long-polls the job until it ends.
func (c *Client) poll(ctx context.Context, id, token string, onUpdate func(*Job)) (*Job, error) {
	etag := ""
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.jobURL(id, ""), nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
			req.Header.Set("Prefer", "wait=30")
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return nil, fmt.Errorf("poll: %w", err)
		}
		switch resp.StatusCode {
		case http.StatusNotModified:
			resp.Body.Close()
			continue
		case http.StatusOK:
			var j Job
			err := json.NewDecoder(resp.Body).Decode(&j)
			resp.Body.Close()
			if err != nil {
				return nil, fmt.Errorf("poll: %w", err)
			}
			etag = resp.Header.Get("ETag")
			if onUpdate != nil {
				cp := j
				onUpdate(&cp)
			}
			if j.Final() {
				return &j, nil
			}
		default:
			err := errorFrom(resp)
			resp.Body.Close()
			return nil, err
		}
	}
}
