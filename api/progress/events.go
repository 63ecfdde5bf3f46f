package progress

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/claimcheck/claimcheck/api/problem"
	"github.com/claimcheck/claimcheck/internal/jobs"
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
//     sent every Heartbeat while nothing happens.
//
// Events reach this process once, on the hub's subscription; a slow client
// gets only the latest progress and never delays another.
func (s *Service) events(c *gin.Context) {
	id := c.Param("id")
	w := s.cfg.Hub.Watch(id) // before the snapshot: nothing falls between
	defer w.Close()
	j, last, err := s.cfg.Store.Snapshot(c, id)
	if err == nil {
		err = j.CheckEpoch(jobClaims(c).Epoch)
	}
	if err != nil {
		problem.Abort(c, err)
		return
	}
	var backlog []jobs.Event
	if resume := c.GetHeader("Last-Event-ID"); resume != "" {
		backlog, err = s.cfg.Store.EventsAfter(c, id, resume)
		switch {
		case err == nil:
			last = resume // writeAll advances it past the backlog
		case errors.Is(err, jobs.ErrEventsTrimmed):
			backlog = nil // start over from the snapshot
		default:
			problem.Abort(c, err)
			return
		}
	}

	h := c.Writer.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	c.Status(http.StatusOK)
	rc := http.NewResponseController(c.Writer)
	bw := bufio.NewWriterSize(c.Writer, 1024)
	flush := func() bool {
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if bw.Flush() != nil {
			return false
		}
		return rc.Flush() == nil
	}
	fmt.Fprintf(bw, "retry: %d\n\n", retryHint.Milliseconds())
	done := false
	if backlog == nil {
		rec, _ := json.Marshal(j)
		kind := jobs.EventState
		if done = j.State.Final(); done {
			kind = jobs.EventDone
		}
		writeEvent(bw, jobs.Event{ID: last, Type: kind, Data: string(rec)})
	} else {
		done = writeAll(bw, backlog, &last)
	}
	if !flush() || done {
		return
	}

	heartbeat := time.NewTicker(s.cfg.Heartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case <-c.Request.Context().Done():
			return
		case <-heartbeat.C:
			fmt.Fprint(bw, ": keep-alive\n\n")
		case <-w.Ready():
			evs, behind := w.Take()
			if revokedBelow(evs, jobClaims(c).Epoch) {
				return // this stream's token was just revoked
			}
			if behind {
				// Some events were dropped: re-read them from the log.
				if evs, err = s.cfg.Store.EventsAfter(c, id, last); err != nil {
					return // the client reconnects and starts over
				}
			}
			done = writeAll(bw, evs, &last)
		}
		if !flush() || done {
			return
		}
	}
}

// writeAll writes the events newer than *last, advancing it, and reports
// whether the final one was written.
func writeAll(bw *bufio.Writer, evs []jobs.Event, last *string) bool {
	for _, ev := range evs {
		if ev.Type == jobs.EventRevoked || jobs.CompareEventIDs(ev.ID, *last) <= 0 {
			continue // already sent (from the log, or before a resync)
		}
		writeEvent(bw, ev)
		*last = ev.ID
		if ev.Type == jobs.EventDone {
			return true
		}
	}
	return false
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

func writeEvent(bw *bufio.Writer, ev jobs.Event) {
	// Data is JSON from json.Marshal or cjson: one line, no raw newlines.
	fmt.Fprintf(bw, "id: %s\nevent: %s\ndata: %s\n\n", ev.ID, ev.Type, ev.Data)
}
