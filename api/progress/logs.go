package progress

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/claimcheck/claimcheck/api/problem"
	"github.com/claimcheck/claimcheck/internal/jobs"
)

// Job logs (see package jobs for what is kept) are served two ways:
//
//   - GET /v1/jobs/{id}/logs?after=N: text/plain, one line per log line,
//     "<time RFC 3339, ms, UTC> <line>", the lines after line number N (0 or
//     absent: from the first kept). Where lines are not kept (trimmed by
//     the caps, or dropped by a worker that could not keep up), a line
//     "[… K earlier lines dropped]" says how many. Log-Next-After is
//     the N to resume with; Log-Dropped counts every line the log did not
//     keep. The same token checks as the status route, in the same order.
//   - "log" events on the event stream, data {"line","time"} (plus
//     "dropped" on the same note about lines not kept). An event's id
//     resumes both streams at once: "<event id>/<line number>" once a log
//     line was sent, the plain event id before. A Last-Event-ID resumes
//     job events after its first part (the usual rules: from the record
//     when the event log no longer reaches back) and log lines after its
//     second. Every log line is sent before "done".
//
// Live lines reach a stream as a wake-up on the hub's subscription ("job X
// has lines up to N", a few bytes per batch whatever the lines); the stream
// then reads the lines after the last it sent from the log. Only event
// streams are woken (a long-poll is not: a log line is no change to the
// record), and the record cache is not touched, so a job writing logs costs
// the status route nothing.
//
// A process keeps the logs it read (logcache.go) and reads from Redis only
// the lines it lacks: a full log is ~15 ms of Redis's core per read, and a
// client looping on its own job's log (with any ?after=, or reconnecting a
// stream) must not be able to pin the Redis everyone shares.

// logCacheBytes bounds the log pages a progress process keeps (logcache.go):
// about a dozen full logs.
const logCacheBytes = 16 << 20

// logTimeFormat is the time of a line in the text output.
const logTimeFormat = "2006-01-02T15:04:05.000Z07:00"

func (s *Service) logs(c *gin.Context) {
	after, err := parseAfter(c.Query("after"))
	if err != nil {
		problem.Abort(c, err)
		return
	}
	j, err := s.job(c) // 404 for a gone record; the token's epoch
	if err != nil {
		problem.Abort(c, err)
		return
	}
	page, err := s.logCache.get(c, s.cfg.Store, j.ID, after)
	if err != nil {
		problem.Abort(c, err)
		return
	}
	h := c.Writer.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Log-Next-After", strconv.FormatInt(page.Next(after), 10))
	h.Set("Log-Dropped", strconv.FormatInt(page.Dropped, 10))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.FormatInt(logTextSize(page, after), 10))
	c.Status(http.StatusOK)
	// Written as it is made, from the shared page, each write bounded in
	// time: a client that asks for a full log and never reads holds no
	// copy of it, and not for long (the server has no write timeout). The
	// deadline is lifted once everything is out, so that it does not
	// linger on a kept-alive connection.
	rc := http.NewResponseController(c.Writer)
	defer func() { _ = rc.SetWriteDeadline(time.Time{}) }()
	bw := bufio.NewWriterSize(deadlineWriter{w: c.Writer, rc: rc}, 32<<10)
	prev := after
	for _, l := range page.Lines {
		if gap := l.N - prev - 1; gap > 0 {
			bw.WriteString(droppedNote(gap))
			bw.WriteByte('\n')
		}
		prev = l.N
		var ts [len(logTimeFormat) + 8]byte
		bw.Write(l.Time.UTC().AppendFormat(ts[:0], logTimeFormat))
		bw.WriteByte(' ')
		bw.WriteString(l.Text)
		if err := bw.WriteByte('\n'); err != nil {
			return // the client went away or stopped reading
		}
	}
	if bw.Flush() == nil {
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		_ = rc.Flush()
	}
}

// logTextSize is the length of the text logs writes for page.
func logTextSize(page *jobs.LogPage, after int64) int64 {
	var n int64
	var ts [len(logTimeFormat) + 8]byte
	prev := after
	for _, l := range page.Lines {
		if gap := l.N - prev - 1; gap > 0 {
			n += int64(len(droppedNote(gap))) + 1
		}
		prev = l.N
		n += int64(len(l.Time.UTC().AppendFormat(ts[:0], logTimeFormat))) + 1 + int64(len(l.Text)) + 1
	}
	return n
}

// deadlineWriter gives each write to w writeTimeout to complete.
type deadlineWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (d deadlineWriter) Write(p []byte) (int, error) {
	_ = d.rc.SetWriteDeadline(time.Now().Add(writeTimeout))
	return d.w.Write(p)
}

func droppedNote(n int64) string {
	return "[… " + strconv.FormatInt(n, 10) + " earlier lines dropped]"
}

// parseAfter reads ?after=: a line number, 0 when absent.
func parseAfter(v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, problem.BadRequest("after must be a line number (a non-negative integer), as Log-Next-After gives it")
	}
	return n, nil
}

// splitResumeID splits a Last-Event-ID into its job event id and the line
// number of the last log line sent (0 when none).
func splitResumeID(id string) (event string, line int64) {
	event, l, ok := strings.Cut(id, "/")
	if ok {
		if n, err := strconv.ParseInt(l, 10, 64); err == nil && n > 0 {
			line = n
		}
	}
	return event, line
}

// eventID is the id of an event sent after event id ev and log line line.
func eventID(ev string, line int64) string {
	if line == 0 {
		return ev
	}
	return ev + "/" + strconv.FormatInt(line, 10)
}

// logEvent is the data of a "log" event.
type logEvent struct {
	Line    string    `json:"line"`
	Time    time.Time `json:"time"`
	Dropped int64     `json:"dropped,omitempty"`
}

// writeLogs writes, as "log" events, the job's log lines after the last
// one this stream sent, their ids resuming job events after evID.
func (st *stream) writeLogs(bw io.Writer, evID string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// One buffer for every event's data: a full log is 10,000 events.
	var data bytes.Buffer
	enc := json.NewEncoder(&data)
	event := func(n int64, ev logEvent) {
		data.Reset()
		_ = enc.Encode(ev)
		io.WriteString(bw, "id: "+eventID(evID, n)+"\nevent: "+jobs.EventLog+"\ndata: ")
		bw.Write(bytes.TrimSuffix(data.Bytes(), []byte("\n")))
		io.WriteString(bw, "\n\n")
	}
	page, err := st.svc.logCache.get(ctx, st.svc.cfg.Store, st.job, st.logLine)
	if err != nil {
		return err
	}
	for _, l := range page.Lines {
		if gap := l.N - st.logLine - 1; gap > 0 {
			st.logLine = l.N - 1
			event(st.logLine, logEvent{Line: droppedNote(gap), Time: l.Time, Dropped: gap})
		}
		st.logLine = l.N
		event(l.N, logEvent{Line: l.Text, Time: l.Time})
	}
	return nil
}

// send writes the events of evs newer than the last one sent and, when
// logs is set or the job is done, the log lines after the last one sent:
// always before "done", which it reports.
func (st *stream) send(bw io.Writer, evs []jobs.Event, logs bool) error {
	for _, ev := range evs {
		if ev.Type == jobs.EventRevoked || ev.Type == jobs.EventLog || jobs.CompareEventIDs(ev.ID, st.last) <= 0 {
			continue // already sent (from the log, or before a resync)
		}
		if ev.Type == jobs.EventDone {
			if err := st.writeLogs(bw, st.last); err != nil {
				return err
			}
			logs = false
		}
		st.last = ev.ID
		writeEvent(bw, jobs.Event{ID: eventID(ev.ID, st.logLine), Type: ev.Type, Data: ev.Data})
		if ev.Type == jobs.EventDone {
			st.done = true
			return nil
		}
	}
	if logs {
		return st.writeLogs(bw, st.last)
	}
	return nil
}
