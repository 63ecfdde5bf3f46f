package progress

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/claimcheck/claimcheck/api/problem"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/metrics"
)

// retryHint is the reconnection delay the stream suggests to EventSource.
const retryHint = 2 * time.Second

// writeTimeout bounds each write to a stream: a client that stops reading
// is dropped instead of holding its goroutine forever.
const writeTimeout = 30 * time.Second

// events serves GET /v1/jobs/{id}/events, a Server-Sent Events stream:
//
//   - without Last-Event-ID it starts with a "state" event holding the whole
//     job record, whose id is the job's latest event id;
//   - with Last-Event-ID it resends exactly the events after it from the
//     job's event log, or starts with the record when the log no longer
//     reaches back that far;
//   - then "progress", "state" and finally "done" (with the result summary)
//     as they happen, and the stream closes after "done". A comment line is
//     sent every Heartbeat while nothing happens;
//   - the job's log lines are "log" events (logs.go), from the first kept
//     (or after the line a Last-Event-ID names) and then as they are
//     written, every one before "done";
//   - a stream never outlives its token: at the token's exp, or as soon as
//     its job's tokens are revoked, it sends a last "end" event (no id, data
//     {"reason":"token_expired"} or {"reason":"token_revoked"}) and closes.
//     Reconnecting with the same token is then pointless: a client needs a
//     new token.
//
// Revocation reaches a stream as a message on the hub's subscription. That
// message can be lost (a subscription cut between the epoch's rise and the
// publish), and a watcher that fell behind drops messages, so whenever a
// stream must catch up from the event log — after the hub resubscribed, or
// after its queue overflowed — it first re-reads the record's token epoch
// and ends with token_revoked if its token is below it, before sending
// anything more.
//
// Events reach this process once, on the hub's subscription; a slow client
// gets only the latest progress and never delays another. Open streams
// count under the stream caps (429 beyond them).
func (s *Service) events(c *gin.Context) {
	id := c.Param("id")
	w, stop, err := s.watchJob(c, true) // before the snapshot: nothing falls between
	if err != nil {
		problem.Abort(c, err)
		return
	}
	j, last, err := s.cfg.Store.Snapshot(c, id)
	if err == nil {
		err = j.CheckEpoch(jobClaims(c).Epoch)
	}
	var backlog []jobs.Event
	// A Last-Event-ID names the last job event and the last log line sent
	// (logs.go); each part resumes its own stream.
	resume, logLine := splitResumeID(c.GetHeader("Last-Event-ID"))
	sentEvent := "" // the job event id the client has
	if err == nil && resume != "" {
		backlog, err = s.cfg.Store.EventsAfter(c, id, resume)
		switch {
		case err == nil:
			last, sentEvent = resume, resume // send advances it past the backlog
		case errors.Is(err, jobs.ErrEventsTrimmed):
			backlog, err = nil, nil // start over from the snapshot
		}
	}
	if err != nil {
		stop()
		problem.Abort(c, err)
		return
	}
	st := &stream{svc: s, w: w, job: id, epoch: jobClaims(c).Epoch, expires: jobClaims(c).Expires(), last: last, logLine: logLine}
	var first bytes.Buffer
	fmt.Fprintf(&first, "retry: %d\n\n", retryHint.Milliseconds())
	// rest writes what follows first: the log lines kept so far (and, for
	// a job already done, done after them). It runs on the connection,
	// through a small buffer, a page of the log at a time: a stream of a
	// full log holds no copy of it. Its error closes the stream; the
	// client resumes.
	rest := func(io.Writer) error { return nil }
	if !s.cfg.Now().Before(st.expires) {
		// Accepted within the verifier's leeway, but already past exp:
		// nothing but the end.
		st.end(&first, endTokenExpired)
	} else if backlog == nil {
		rec, _ := json.Marshal(j)
		if st.done = j.State.Final(); st.done {
			// Every log line before done: their ids name the event the
			// client had, so a resume among them sends the record again.
			rest = func(w io.Writer) error {
				if err := st.writeLogs(w, sentEvent); err != nil {
					return err
				}
				writeEvent(w, jobs.Event{ID: eventID(last, st.logLine), Type: jobs.EventDone, Data: string(rec)})
				return nil
			}
		} else {
			writeEvent(&first, jobs.Event{ID: eventID(last, st.logLine), Type: jobs.EventState, Data: string(rec)})
			rest = func(w io.Writer) error { return st.writeLogs(w, last) }
		}
	} else {
		rest = func(w io.Writer) error { return st.send(w, backlog, true) }
	}
	writeRest := func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, 32<<10)
		if err := rest(bw); err != nil {
			return err
		}
		return bw.Flush()
	}

	// Over HTTP/1.1 the stream leaves net/http: the connection is taken
	// over and served by one small goroutine writing straight to the
	// socket, so an idle stream holds no request goroutine, no background
	// reader and no buffers (memory per stream is in docs/BENCHMARKS.md).
	// The body is delimited by closing the connection. A client that goes
	// away is noticed at the next write (a heartbeat at the latest).
	// (Only HTTP/1 connections can be taken over; asking an HTTP/2 writer
	// would panic inside Gin.)
	if conn, _, err := hijack(c); err == nil {
		sink := &connSink{conn: conn}
		head := "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n" +
			"X-Accel-Buffering: no\r\nConnection: close\r\n\r\n"
		go func() {
			defer conn.Close()
			defer stop()
			if _, err := sink.Write(append([]byte(head), first.Bytes()...)); err != nil {
				return
			}
			if err := writeRest(sink); err != nil || st.done {
				return
			}
			st.loop(s.cfg.Hub.Done(), sink, func() bool { return true })
		}()
		return
	}
	// HTTP/2 (or a test recorder): serve the stream in the handler.
	defer stop()
	h := c.Writer.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	c.Status(http.StatusOK)
	rc := http.NewResponseController(c.Writer)
	flush := func() bool {
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		return rc.Flush() == nil
	}
	if _, err := c.Writer.Write(first.Bytes()); err != nil || !flush() {
		return
	}
	if err := writeRest(deadlineWriter{w: c.Writer, rc: rc}); err != nil || !flush() || st.done {
		return
	}
	st.loop(c.Request.Context().Done(), c.Writer, flush)
}

// stream is one event stream's state after its first write.
type stream struct {
	svc     *Service
	w       *Watcher
	job     string
	epoch   int64     // the token's
	expires time.Time // the token's exp
	last    string
	logLine int64 // the last log line sent
	done    bool
}

// Reasons of the end event.
const (
	endTokenExpired = "token_expired"
	endTokenRevoked = "token_revoked"
)

// end writes the last event of a stream ended before its job: the token
// expired or was revoked.
func (st *stream) end(bw io.Writer, reason string) {
	// No id: a client's Last-Event-ID stays at the last real event.
	fmt.Fprintf(bw, "event: end\ndata: {\"reason\":%q}\n\n", reason)
	metrics.StreamsEnded.WithLabelValues(reason).Inc()
	st.done = true
}

// loop writes heartbeats and events until the job is done, the token
// expires or is revoked, stop is closed or a write fails.
func (st *stream) loop(stop <-chan struct{}, out io.Writer, flush func() bool) {
	heartbeat := time.NewTicker(st.svc.cfg.Heartbeat)
	defer heartbeat.Stop()
	expiry := time.NewTimer(st.expires.Sub(st.svc.cfg.Now()))
	defer expiry.Stop()
	var buf bytes.Buffer
	for {
		buf.Reset()
		select {
		case <-stop:
			return
		case <-heartbeat.C:
			buf.WriteString(": keep-alive\n\n")
		case <-expiry.C:
			st.end(&buf, endTokenExpired)
		case <-st.w.Ready():
			evs, behind := st.w.Take()
			logs := st.w.takeLogs() || behind
			switch {
			case revokedBelow(evs, st.epoch):
				st.end(&buf, endTokenRevoked) // this stream's token was just revoked
			case behind:
				// Messages were lost (a resubscription) or dropped (an
				// overflow), a revocation perhaps among them: check the
				// epoch, then re-read the events from the log.
				var err error
				if evs, err = st.catchUp(); errors.Is(err, jobs.ErrTokenRevoked) {
					st.end(&buf, endTokenRevoked)
				} else if err != nil {
					return // the client reconnects and starts over
				}
			}
			if !st.done {
				if err := st.send(&buf, evs, logs); err != nil {
					return // the client reconnects and resumes
				}
			}
		}
		if buf.Len() > 0 {
			if _, err := out.Write(buf.Bytes()); err != nil {
				return
			}
		}
		if !flush() || st.done {
			return
		}
	}
}

// catchUp re-reads the job's token epoch from its record (never the cache)
// and, if this stream's token still stands, the events after the last one
// sent.
func (st *stream) catchUp() ([]jobs.Event, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	j, err := st.svc.cfg.Store.Get(ctx, st.job)
	if err != nil {
		return nil, err
	}
	if err := j.CheckEpoch(st.epoch); err != nil {
		return nil, err
	}
	return st.svc.cfg.Store.EventsAfter(ctx, st.job, st.last)
}

// connSink writes to a taken-over connection, each write bounded in time so
// a client that stops reading is dropped instead of holding its goroutine.
type connSink struct{ conn net.Conn }

func (s *connSink) Write(p []byte) (int, error) {
	_ = s.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	return s.conn.Write(p)
}

// revokedBelow reports whether evs revoke tokens of epoch tokenEpoch.
func revokedBelow(evs []jobs.Event, tokenEpoch int64) bool {
	for _, ev := range evs {
		if ev.Type != jobs.EventRevoked {
			continue
		}
		var r struct{ Epoch int64 }
		if json.Unmarshal([]byte(ev.Data), &r) == nil && r.Epoch > tokenEpoch {
			return true
		}
	}
	return false
}

func writeEvent(bw io.Writer, ev jobs.Event) {
	// Data is JSON from json.Marshal or cjson: one line, no raw newlines.
	fmt.Fprintf(bw, "id: %s\nevent: %s\ndata: %s\n\n", ev.ID, ev.Type, ev.Data)
}

func hijack(c *gin.Context) (net.Conn, *bufio.ReadWriter, error) {
	if c.Request.ProtoMajor != 1 {
		return nil, nil, http.ErrNotSupported
	}
	return http.NewResponseController(c.Writer).Hijack()
}
