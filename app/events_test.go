package app_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/testutil/syncbuf"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
)

type sseEvent struct{ ID, Type, Data string }

// sseStream reads a text/event-stream; heartbeats counts comment lines.
type sseStream struct {
	resp       *http.Response
	r          *bufio.Reader
	heartbeats int
	retry      string
}

func openEvents(t *testing.T, url, token string, hdr ...string) *sseStream {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("events: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	return &sseStream{resp: resp, r: bufio.NewReader(resp.Body)}
}

// next returns the next event, or io.EOF when the server closed the stream.
func (s *sseStream) next() (sseEvent, error) {
	var ev sseEvent
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if ev.Type != "" {
				return ev, nil
			}
		case strings.HasPrefix(line, ":"):
			s.heartbeats++
		case strings.HasPrefix(line, "retry: "):
			s.retry = strings.TrimPrefix(line, "retry: ")
		case strings.HasPrefix(line, "id: "):
			ev.ID = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			ev.Type = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.Data = strings.TrimPrefix(line, "data: ")
		}
	}
}

func (s *sseStream) must(t *testing.T, typ string) sseEvent {
	t.Helper()
	ev, err := s.next()
	if err != nil || ev.Type != typ {
		t.Fatalf("want a %s event, got %+v %v", typ, ev, err)
	}
	return ev
}

func percentOf(t *testing.T, ev sseEvent) float64 {
	t.Helper()
	var p struct{ Percent float64 }
	if err := json.Unmarshal([]byte(ev.Data), &p); err != nil {
		t.Fatalf("progress data %q: %v", ev.Data, err)
	}
	return p.Percent
}

func TestEventStreamResumesWithoutGapsOrDuplicates(t *testing.T) {
	s := newStack(t, func(c *app.Config) { c.EventHeartbeat = 20 * time.Millisecond })
	sub := s.submit(t, `{"type":"stepper","input":{"steps":6}}`)
	url := s.progress.URL + sub.Links.Events

	st := openEvents(t, url, sub.Token)
	first := st.must(t, "state") // the record as it is now
	if st.retry == "" {
		t.Fatal("no retry: hint")
	}
	var j jobs.Job
	if err := json.Unmarshal([]byte(first.Data), &j); err != nil || j.ID != sub.ID {
		t.Fatalf("first event is not the job record: %q", first.Data)
	}
	if j.State == jobs.StateQueued {
		st.must(t, "state") // running
	}
	s.step <- struct{}{}
	s.step <- struct{}{}
	// Two steps released; coalescing may merge them, but the last seen is 2/6.
	var last sseEvent
	for pct := 0.0; pct < 33; {
		last = st.must(t, "progress")
		pct = percentOf(t, last)
	}
	st.resp.Body.Close() // a forced disconnect

	// While disconnected, the job moves on.
	for range 2 {
		s.step <- struct{}{}
	}
	waitfor.True(t, 5*time.Second, func() bool { return s.get(t, sub).Progress.Percent >= 66 })

	// Reconnect with Last-Event-ID: exactly the missed events, in order.
	st2 := openEvents(t, url, sub.Token, "Last-Event-ID", last.ID)
	var got []float64
	prev := last.ID
	for len(got) < 2 {
		ev := st2.must(t, "progress")
		if jobs.CompareEventIDs(ev.ID, prev) <= 0 {
			t.Fatalf("event %s not after %s", ev.ID, prev)
		}
		prev = ev.ID
		got = append(got, percentOf(t, ev))
	}
	if len(got) != 2 || got[0] != 50 || math.Abs(got[1]-100.0*4/6) > 1e-9 {
		t.Fatalf("resumed progress %v, want the two missed steps", got)
	}
	s.step <- struct{}{}
	s.step <- struct{}{}
	for {
		ev, err := st2.next()
		if err != nil {
			t.Fatalf("stream ended before done: %v", err)
		}
		if ev.Type == "done" {
			if !strings.Contains(ev.Data, `"state":"succeeded"`) {
				t.Fatalf("done event %q", ev.Data)
			}
			break
		}
	}
	if _, err := st2.next(); err != io.EOF {
		t.Fatalf("stream not closed after done: %v", err)
	}
}

func TestEventStreamHeartbeatAndFinishedJob(t *testing.T) {
	s := newStack(t, func(c *app.Config) { c.EventHeartbeat = 10 * time.Millisecond })
	sub := s.submit(t, `{"type":"stepper","input":{"steps":1}}`)
	st := openEvents(t, s.progress.URL+sub.Links.Events, sub.Token)
	st.must(t, "state")
	// Nothing is released: only heartbeats flow until the test reads some.
	for st.heartbeats < 3 {
		line, err := st.r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, ":") {
			st.heartbeats++
		}
	}
	s.step <- struct{}{}
	s.waitState(t, sub, jobs.StateSucceeded)
	// A stream opened on a finished job is one done event, then closed.
	st2 := openEvents(t, s.progress.URL+sub.Links.Events, sub.Token)
	if ev := st2.must(t, "done"); !strings.Contains(ev.Data, `"state":"succeeded"`) {
		t.Fatalf("done: %q", ev.Data)
	}
	if _, err := st2.next(); err != io.EOF {
		t.Fatalf("not closed: %v", err)
	}
}

func TestStalledReaderDoesNotDelayOthers(t *testing.T) {
	s := newStack(t)
	// 4 KiB messages, 400 steps: ~1.6 MB of events, more than the stalled
	// connection's socket buffers hold.
	sub := s.submit(t, `{"type":"stepper","input":{"steps":400,"pad":4096}}`)
	u := strings.TrimPrefix(s.progress.URL, "http://")
	stalled, err := net.Dial("tcp", u)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	fmt.Fprintf(stalled, "GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", sub.Links.Events, u, sub.Token)
	// …and never reads.

	fast := openEvents(t, s.progress.URL+sub.Links.Events, sub.Token)
	fast.must(t, "state")
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 400 {
			s.step <- struct{}{}
		}
	}()
	for {
		ev, err := fast.next()
		if err != nil {
			t.Fatalf("fast reader: %v", err)
		}
		if ev.Type == "done" {
			break
		}
	}
	wg.Wait()
}

func TestQueryTokenNeverLogged(t *testing.T) {
	var logs syncbuf.Buffer // the services write it while the test reads
	s := newStack(t, func(c *app.Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	sub := s.submit(t, `{"type":"stepper","input":{"steps":1}}`)
	st := openEvents(t, s.progress.URL+sub.Links.Events+"?token="+sub.Token, "")
	st.must(t, "state")
	// A bad query token: refused, and not echoed.
	bad := flip(sub.Token)
	r := do(t, "GET", s.progress.URL+sub.Links.Events+"?token="+bad, "", nil)
	body, _ := io.ReadAll(r.Body)
	if r.StatusCode != 401 || strings.Contains(string(body), bad) {
		t.Fatalf("bad query token: %d %s", r.StatusCode, body)
	}
	// Other routes do not take a query token at all.
	if r := do(t, "GET", s.progress.URL+sub.Links.Self+"?token="+sub.Token, "", nil); r.StatusCode != 401 {
		t.Fatalf("query token on the status route: %d", r.StatusCode)
	}
	s.step <- struct{}{}
	s.waitState(t, sub, jobs.StateSucceeded)
	st.resp.Body.Close()
	waitfor.True(t, 5*time.Second, func() bool { return strings.Contains(logs.String(), "/events") })
	sig := sub.Token[strings.LastIndexByte(sub.Token, '.')+1:]
	if strings.Contains(logs.String(), sig) || strings.Contains(logs.String(), bad[strings.LastIndexByte(bad, '.')+1:]) {
		t.Fatalf("a token reached the log:\n%s", logs.String())
	}
}

func TestLongPoll(t *testing.T) {
	s := newStack(t)
	sub := s.submit(t, `{"type":"stepper","input":{"steps":2}}`)
	s.waitState(t, sub, jobs.StateRunning)
	etag := etagOf(t, s, sub)

	// No change within the wait: 304, preference applied.
	r := do(t, "GET", s.progress.URL+sub.Links.Self, sub.Token, nil, "If-None-Match", etag, "Prefer", "wait=1")
	if r.StatusCode != 304 || r.Header.Get("Preference-Applied") != "wait=1" {
		t.Fatalf("idle long-poll: %d %q", r.StatusCode, r.Header.Get("Preference-Applied"))
	}
	// A change during the wait answers at once with the new state.
	done := make(chan *http.Response)
	go func() {
		req, _ := http.NewRequest("GET", s.progress.URL+sub.Links.Self, nil)
		req.Header.Set("Authorization", "Bearer "+sub.Token)
		req.Header.Set("If-None-Match", etag)
		req.Header.Set("Prefer", "wait=60")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			resp = nil
		}
		done <- resp
	}()
	waitfor.True(t, 5*time.Second, func() bool { return s.prog.Watchers() == 1 })
	s.step <- struct{}{}
	select {
	case resp := <-done:
		if resp == nil {
			t.Fatal("long-poll failed")
		}
		defer resp.Body.Close()
		var got jobs.Job
		_ = json.NewDecoder(resp.Body).Decode(&got)
		if resp.StatusCode != 200 || resp.Header.Get("ETag") == etag || got.Progress.Percent != 50 {
			t.Fatalf("long-poll after a change: %d %q %+v", resp.StatusCode, resp.Header.Get("ETag"), got.Progress)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("long-poll did not return on a change")
	}
	s.step <- struct{}{} // let the job finish, so the worker stops at once
	s.waitState(t, sub, jobs.StateSucceeded)
}

func etagOf(t *testing.T, s *stack, sub submitted) string {
	t.Helper()
	r := do(t, "GET", s.progress.URL+sub.Links.Self, sub.Token, nil)
	return r.Header.Get("ETag")
}

// TestEventStreamOverHTTP2 covers the path where the connection cannot be
// taken over (HTTP/2 multiplexes it): the stream is served in the handler.
func TestEventStreamOverHTTP2(t *testing.T) {
	s := newStack(t)
	srv := httptest.NewUnstartedServer(app.Handler(s.cfg, s.prog))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	sub := s.submit(t, `{"type":"stepper","input":{"steps":1}}`)
	req, _ := http.NewRequest("GET", srv.URL+sub.Links.Events, nil)
	req.Header.Set("Authorization", "Bearer "+sub.Token)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s %q %s", resp.Proto, resp.Header.Get("Content-Type"), b)
	}
	st := &sseStream{resp: resp, r: bufio.NewReader(resp.Body)}
	st.must(t, "state")
	s.step <- struct{}{}
	for {
		ev, err := st.next()
		if err != nil {
			t.Fatalf("before done: %v", err)
		}
		if ev.Type == "done" {
			break
		}
	}
	if _, err := st.next(); err != io.EOF {
		t.Fatalf("not closed after done: %v", err)
	}
}
