package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// LogLine is one line of a job's log: what the job wrote, when. A line
// with Dropped > 0 is the service's note that that many lines before the
// next one are not kept (the log keeps a job's newest 10,000 lines and 1 MiB).
type LogLine struct {
	Time    time.Time `json:"time"`
	Line    string    `json:"line"`
	Dropped int64     `json:"dropped,omitempty"`
}

// LogPage is one read of a job's log.
type LogPage struct {
	Lines []LogLine
	// Next is the line number to pass as after to read only newer lines.
	Next int64
	// Dropped counts every line the log did not keep.
	Dropped int64
}

// Logs reads job id's log after line number after (0: from the first line
// kept), with the job's token.
func (c *Client) Logs(ctx context.Context, id, token string, after int64) (*LogPage, error) {
	u := c.jobURL(id, "/logs")
	if after > 0 {
		u += "?after=" + strconv.FormatInt(after, 10)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("logs: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, errorFrom(resp)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("logs: %w", err)
	}
	p := &LogPage{}
	p.Next, _ = strconv.ParseInt(resp.Header.Get("Log-Next-After"), 10, 64)
	p.Dropped, _ = strconv.ParseInt(resp.Header.Get("Log-Dropped"), 10, 64)
	for _, l := range strings.Split(strings.TrimSuffix(string(body), "\n"), "\n") {
		if l == "" {
			continue
		}
		p.Lines = append(p.Lines, parseLogLine(l))
	}
	return p, nil
}

// parseLogLine reads "<time> <line>" or a "[… N earlier lines dropped]" note.
func parseLogLine(l string) LogLine {
	if rest, ok := strings.CutPrefix(l, "[… "); ok {
		if n, tail, ok := strings.Cut(rest, " "); ok && strings.HasPrefix(tail, "earlier lines dropped]") {
			if d, err := strconv.ParseInt(n, 10, 64); err == nil {
				return LogLine{Line: l, Dropped: d}
			}
		}
	}
	ts, text, _ := strings.Cut(l, " ")
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return LogLine{Line: l}
	}
	return LogLine{Time: t, Line: text}
}

// FollowLogs calls onLine with every line of job id's log, first those kept
// so far and then each as the job writes it, until the job ends; it returns
// the job's final record. Like Wait it follows the event stream, resuming
// after a dropped connection with no line missed or repeated, and ends with
// a *StreamEndError when the token expires or is revoked. onUpdate, which
// may be nil, sees the record change as Wait's does.
func (c *Client) FollowLogs(ctx context.Context, id, token string, onLine func(LogLine), onUpdate func(*Job)) (*Job, error) {
	j, err := c.wait(ctx, id, token, onUpdate, func(data string) {
		var l LogLine
		if json.Unmarshal([]byte(data), &l) == nil {
			onLine(l)
		}
	})
	if errors.Is(err, errNoStream) {
		return c.pollLogs(ctx, id, token, onLine)
	}
	return j, err
}

// pollLogs is FollowLogs without an event stream: it reads the log every
// second until the job has ended, then once more.
func (c *Client) pollLogs(ctx context.Context, id, token string, onLine func(LogLine)) (*Job, error) {
	var after int64
	for {
		j, err := c.Get(ctx, id, token)
		if err != nil {
			return nil, err
		}
		p, err := c.Logs(ctx, id, token, after)
		if err != nil {
			return nil, err
		}
		for _, l := range p.Lines {
			onLine(l)
		}
		after = p.Next
		if j.Final() {
			return j, nil // read after the end: every line was there
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
