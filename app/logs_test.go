package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/tokens"
	"github.com/redis/go-redis/v9"
)

// logLineRE is one line of GET /logs: "<RFC 3339 ms UTC> <text>".
var logLineRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (.*)$`)

// getLogs reads GET /v1/jobs/{id}/logs?after=after and returns the lines'
// texts (the time checked and cut off; a dropped note kept whole), the
// next after and the dropped count.
func (s *stack) getLogs(t *testing.T, sub submitted, after int64) (texts []string, next, dropped int64) {
	t.Helper()
	u := s.progress.URL + "/v1/jobs/" + sub.ID + "/logs"
	if after >= 0 {
		u += "?after=" + strconv.FormatInt(after, 10)
	}
	resp := do(t, "GET", u, sub.Token, nil)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Fatalf("logs: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	next, err1 := strconv.ParseInt(resp.Header.Get("Log-Next-After"), 10, 64)
	dropped, err2 := strconv.ParseInt(resp.Header.Get("Log-Dropped"), 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("logs headers: %v", resp.Header)
	}
	for _, l := range strings.Split(strings.TrimSuffix(string(body), "\n"), "\n") {
		if l == "" {
			continue
		}
		if strings.HasPrefix(l, "[… ") {
			texts = append(texts, l)
			continue
		}
		m := logLineRE.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("log line %q is not \"<time> <text>\"", l)
		}
		texts = append(texts, m[1])
	}
	return texts, next, dropped
}

func wantLines(t *testing.T, got []string, from, to int) {
	t.Helper()
	if len(got) != to-from+1 {
		t.Fatalf("%d lines %q, want lines %d..%d", len(got), got, from, to)
	}
	for i, g := range got {
		if want := fmt.Sprintf("line %d", from+i); g != want {
			t.Fatalf("line %d = %q, want %q", i, g, want)
		}
	}
}

// TestJobLogsReadAndResume: a handler's Logf lines are served as text,
// resumable from Log-Next-After; every line is there once the job is seen
// to have succeeded; the status route says nothing of logs.
func TestJobLogsReadAndResume(t *testing.T) {
	s := newStack(t)
	sub := s.submit(t, `{"type":"logger","input":{"lines":3,"then":2}}`)
	var got []string
	var next int64
	waitfor.True(t, 10*time.Second, func() bool {
		got, next, _ = s.getLogs(t, sub, -1)
		return len(got) == 3
	})
	wantLines(t, got, 1, 3)
	if next != 3 {
		t.Fatalf("Log-Next-After = %d, want 3", next)
	}
	if got, n, _ := s.getLogs(t, sub, 3); len(got) != 0 || n != 3 {
		t.Fatalf("after 3 while nothing new: %q next %d", got, n)
	}
	s.step <- struct{}{}
	s.waitState(t, sub, jobs.StateSucceeded)
	// Seen succeeded: every line is readable now, no waiting.
	got, next, dropped := s.getLogs(t, sub, 3)
	wantLines(t, got, 4, 5)
	if next != 5 || dropped != 0 {
		t.Fatalf("next %d dropped %d, want 5 0", next, dropped)
	}
	got, _, _ = s.getLogs(t, sub, 0)
	wantLines(t, got, 1, 5)

	rec := decode[map[string]any](t, do(t, "GET", s.progress.URL+"/v1/jobs/"+sub.ID, sub.Token, nil))
	for k, v := range rec {
		if strings.Contains(k, "log") || strings.Contains(fmt.Sprint(v), "line 1") {
			t.Fatalf("status route mentions the log: %s = %v", k, v)
		}
	}
	// A bad offset is a 400 problem.
	resp := do(t, "GET", s.progress.URL+"/v1/jobs/"+sub.ID+"/logs?after=-1", sub.Token, nil)
	if p := decode[problemBody](t, resp); resp.StatusCode != http.StatusBadRequest || p.Status != 400 ||
		resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("after=-1: %d %+v", resp.StatusCode, p)
	}
}

// TestJobLogsCappedAndCut: over the line cap the oldest lines go and the
// output says how many; a line over 4 KiB is cut and marked.
func TestJobLogsCappedAndCut(t *testing.T) {
	s := newStack(t)
	sub := s.submit(t, `{"type":"logger","input":{"lines":12000}}`)
	s.waitState(t, sub, jobs.StateSucceeded)
	got, next, dropped := s.getLogs(t, sub, 0)
	if len(got) != jobs.MaxLogLines+1 || got[0] != "[… 2000 earlier lines dropped]" || dropped != 2000 || next != 12000 {
		t.Fatalf("%d lines, first %q, dropped %d, next %d", len(got), got[0], dropped, next)
	}
	wantLines(t, got[1:], 2001, 12000)
	// Resuming inside the dropped part: told how many of those are gone.
	if got, _, _ := s.getLogs(t, sub, 1500); got[0] != "[… 500 earlier lines dropped]" || got[1] != "line 2001" {
		t.Fatalf("after 1500: %q %q", got[0], got[1])
	}

	long := s.submit(t, `{"type":"logger","input":{"lines":1,"pad":10000}}`)
	s.waitState(t, long, jobs.StateSucceeded)
	got, _, _ = s.getLogs(t, long, 0)
	if len(got) != 1 || len(got[0]) > jobs.MaxLogLineBytes || !strings.HasPrefix(got[0], "line 1xxx") ||
		!regexp.MustCompile(`\[… \d+ bytes cut\]$`).MatchString(got[0]) {
		t.Fatalf("long line: %d bytes, %q…", len(got[0]), got[0][len(got[0])-30:])
	}
}

// TestJobLogsRefusedLikeStatus: the logs route refuses a token for another
// job exactly as the status route does (403 problem+json), a request with
// no or a bad token 401, and a job that is gone 404.
func TestJobLogsRefusedLikeStatus(t *testing.T) {
	s := newStack(t)
	a := s.submit(t, `{"type":"logger","input":{"lines":2}}`)
	b := s.submit(t, `{"type":"logger","input":{"lines":2}}`)
	s.waitState(t, b, jobs.StateSucceeded)
	for _, tc := range []struct {
		name, token string
		status      int
	}{
		{"another job's token", a.Token, http.StatusForbidden},
		{"no token", "", http.StatusUnauthorized},
		{"bad token", a.Token[:len(a.Token)-4] + "AAAA", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status := do(t, "GET", s.progress.URL+"/v1/jobs/"+b.ID, tc.token, nil)
			logs := do(t, "GET", s.progress.URL+"/v1/jobs/"+b.ID+"/logs", tc.token, nil)
			sp, lp := decode[problemBody](t, status), decode[problemBody](t, logs)
			if logs.StatusCode != tc.status || status.StatusCode != tc.status || lp.Type != sp.Type ||
				logs.Header.Get("Content-Type") != "application/problem+json" ||
				logs.Header.Get("WWW-Authenticate") != status.Header.Get("WWW-Authenticate") {
				t.Fatalf("logs %d %+v, status %d %+v; want %d alike", logs.StatusCode, lp, status.StatusCode, sp, tc.status)
			}
		})
	}
	// A job with no record (expired, or never made): 404 on both.
	gone, _, err := (&tokens.Minter{Keys: s.keys}).MintJob("01a23178-0000-7000-8000-000000000000", "ann", tokens.JobScopes, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"", "/logs"} {
		resp := do(t, "GET", s.progress.URL+"/v1/jobs/01a23178-0000-7000-8000-000000000000"+path, gone, nil)
		if p := decode[problemBody](t, resp); resp.StatusCode != http.StatusNotFound || p.Status != 404 {
			t.Fatalf("GET %q of a job with no record: %d %+v", path, resp.StatusCode, p)
		}
	}
}

type logData struct {
	Line    string    `json:"line"`
	Time    time.Time `json:"time"`
	Dropped int64     `json:"dropped"`
}

func logOf(t *testing.T, ev sseEvent) logData {
	t.Helper()
	var d logData
	if err := json.Unmarshal([]byte(ev.Data), &d); err != nil || d.Time.IsZero() {
		t.Fatalf("log event data %q: %v", ev.Data, err)
	}
	return d
}

// TestJobLogsStreamedWithResume: log lines arrive as "log" events while the
// job runs; reconnecting with the Last-Event-ID of one of them sends only
// the later lines (and the job events after its event part), all before
// done.
func TestJobLogsStreamedWithResume(t *testing.T) {
	s := newStack(t)
	sub := s.submit(t, `{"type":"logger","input":{"lines":3,"then":2}}`)
	url := s.progress.URL + sub.Links.Events
	st := openEvents(t, url, sub.Token)
	var logs []sseEvent
	for len(logs) < 3 {
		ev, err := st.next()
		if err != nil {
			t.Fatal(err)
		}
		switch ev.Type {
		case "log":
			logs = append(logs, ev)
		case "done":
			t.Fatalf("done before the job's lines")
		}
	}
	for i, ev := range logs {
		if d := logOf(t, ev); d.Line != fmt.Sprintf("line %d", i+1) || !strings.HasSuffix(ev.ID, fmt.Sprintf("/%d", i+1)) {
			t.Fatalf("log event %d: id %q data %q", i, ev.ID, ev.Data)
		}
	}
	st.resp.Body.Close()
	s.step <- struct{}{}
	s.waitState(t, sub, jobs.StateSucceeded)

	// Resume after line 2: lines 3..5, then done, nothing before.
	st2 := openEvents(t, url, sub.Token, "Last-Event-ID", logs[1].ID)
	var lines []string
	for {
		ev, err := st2.next()
		if err != nil {
			t.Fatalf("stream ended before done: %v", err)
		}
		if ev.Type == "log" {
			lines = append(lines, logOf(t, ev).Line)
			continue
		}
		if ev.Type == "done" {
			if !strings.HasSuffix(ev.ID, "/5") || !strings.Contains(ev.Data, `"succeeded"`) {
				t.Fatalf("done %q %q", ev.ID, ev.Data)
			}
			break
		}
		if ev.Type == "state" && strings.Contains(ev.Data, `"queued"`) {
			t.Fatalf("resent an event from before Last-Event-ID: %+v", ev)
		}
	}
	wantLines(t, lines, 3, 5)
	if _, err := st2.next(); err != io.EOF {
		t.Fatalf("stream not closed after done: %v", err)
	}

	// A new stream on the finished job: every line, then done.
	st3 := openEvents(t, url, sub.Token)
	lines = nil
	for {
		ev := must2(t, st3)
		if ev.Type == "done" {
			break
		}
		if ev.Type == "log" {
			lines = append(lines, logOf(t, ev).Line)
		}
	}
	wantLines(t, lines, 1, 5)
}

// TestJobLogsStreamSaysWhatWasDropped: a stream resuming after lines the
// log no longer keeps is told how many with a "log" event carrying
// "dropped".
func TestJobLogsStreamSaysWhatWasDropped(t *testing.T) {
	s := newStack(t)
	sub := s.submit(t, `{"type":"logger","input":{"lines":10500}}`)
	s.waitState(t, sub, jobs.StateSucceeded)
	st := openEvents(t, s.progress.URL+sub.Links.Events, sub.Token, "Last-Event-ID", "0-0/100")
	first := must2(t, st)
	for first.Type != "log" {
		first = must2(t, st)
	}
	if d := logOf(t, first); d.Dropped != 400 || d.Line != "[… 400 earlier lines dropped]" {
		t.Fatalf("first log event %+v", d)
	}
	n := 0
	for ev := must2(t, st); ev.Type != "done"; ev = must2(t, st) {
		if ev.Type == "log" {
			if n++; n == 1 && logOf(t, ev).Line != "line 501" {
				t.Fatalf("first line after the note: %q", ev.Data)
			}
		}
	}
	if n != jobs.MaxLogLines {
		t.Fatalf("%d lines streamed, want %d", n, jobs.MaxLogLines)
	}
}

func must2(t *testing.T, st *sseStream) sseEvent {
	t.Helper()
	ev, err := st.next()
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	return ev
}

// xrangeCalls is how many XRANGE commands the stack's Redis has run, on
// every primary of a cluster (INFO through a cluster client asks any one).
func xrangeCalls(t *testing.T, s *stack) int64 {
	t.Helper()
	var total atomic.Int64
	redistest.EachPrimary(t, s.rdb, func(ctx context.Context, c *redis.Client) error {
		info, err := c.Info(ctx, "commandstats").Result()
		if err != nil {
			return err
		}
		if m := regexp.MustCompile(`cmdstat_xrange:calls=(\d+)`).FindStringSubmatch(info); m != nil {
			n, _ := strconv.ParseInt(m[1], 10, 64)
			total.Add(n)
		}
		return nil
	})
	return total.Load()
}

// TestRedteamFullLogReadsAreShared: one full read of a 10,000-line log
// costs Redis ~15 ms of its one core, and any job-token holder could loop
// GET /logs on their own job to pin the shared Redis (every worker, api
// and progress process with it). While the log has not changed, its
// readers share one read: many GETs, sequential and concurrent, cost
// Redis one full read, whatever their ?after=, and each still gets its
// lines; a new line is seen at once.
func TestRedteamFullLogReadsAreShared(t *testing.T) {
	s := newStack(t)
	sub := s.submit(t, `{"type":"logger","input":{"lines":10000}}`)
	s.waitState(t, sub, jobs.StateSucceeded)
	s.getLogs(t, sub, 0) // the read the others share
	before := xrangeCalls(t, s)
	const n = 20
	for i := range int64(n / 2) {
		// A different ?after= is no way around the sharing.
		if got, next, _ := s.getLogs(t, sub, i*997); len(got) != int(10000-i*997) || next != 10000 {
			t.Fatalf("after %d: %d lines, next %d", i*997, len(got), next)
		}
	}
	var wg sync.WaitGroup
	for range n / 2 {
		wg.Go(func() {
			resp := do(t, "GET", s.progress.URL+"/v1/jobs/"+sub.ID+"/logs", sub.Token, nil)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || strings.Count(string(body), "\n") != 10000 {
				t.Errorf("concurrent read: %d, %d lines", resp.StatusCode, strings.Count(string(body), "\n"))
			}
		})
	}
	wg.Wait()
	if got := xrangeCalls(t, s) - before; got > 2 {
		t.Fatalf("%d reads of an unchanged 10,000-line log cost %d XRANGEs, want them shared", n, got)
	}
	if got, _, _ := s.getLogs(t, sub, 9998); len(got) != 2 || got[1] != "line 10000" {
		t.Fatalf("after 9998: %q", got)
	}
	if _, err := jobs.NewStore(s.rdb, nil).AppendLog(context.Background(), sub.ID, []jobs.LogLine{{Time: time.Now(), Text: "late"}}, 0); err != nil {
		t.Fatal(err)
	}
	if got, next, _ := s.getLogs(t, sub, 0); len(got) != 10001 || got[10000] != "late" || next != 10001 {
		t.Fatalf("after a new line: %d lines, next %d", len(got), next)
	}
}

// TestRedteamLogReadHoldsNoCopyOfTheLog: GET /logs of a full log (1 MiB of
// text) must not build the whole body per request: the server has no
// write timeout (downloads are long), so a client that asks and never
// reads would hold that copy for as long as it keeps the connection, and
// a few thousand such requests, which no stream cap counts, would hold
// gigabytes. The body is written as it is made, from the shared page.
func TestRedteamLogReadHoldsNoCopyOfTheLog(t *testing.T) {
	s := newStack(t)
	sub := s.submit(t, `{"type":"logger","input":{"lines":10000,"pad":90}}`)
	s.waitState(t, sub, jobs.StateSucceeded)
	read := func() int64 {
		resp := do(t, "GET", s.progress.URL+"/v1/jobs/"+sub.ID+"/logs", sub.Token, nil)
		defer resp.Body.Close()
		n, err := io.CopyBuffer(io.Discard, resp.Body, make([]byte, 32<<10))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("logs: %d %v", resp.StatusCode, err)
		}
		return n
	}
	size := read() // fills the shared page
	if size < 900<<10 {
		t.Fatalf("the log is %d bytes, want about 1 MiB", size)
	}
	// Allocation is the measure; the race detector's runtime allocates its
	// own way (.ci/run runs this test again without -race).
	if raceDetector {
		t.Skip("allocation under the race detector is not the program's; .ci/run measures this without -race")
	}
	const n = 20
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		if got := read(); got != size {
			t.Fatalf("read %d bytes, then %d", size, got)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / n; per > uint64(size)/2 {
		t.Fatalf("each read of a %d-byte log allocated %d bytes: the body is built whole", size, per)
	}
}

// TestRedteamLogStreamHoldsNoCopyOfTheLog: an event stream opened on a
// job with a full log sends every line first. Built whole before the
// first write, that was ~2 MiB for a 1 MiB log (up to ~7 MiB when lines
// are '<' and JSON escapes them), held up to the 30 s write timeout by a
// client that does not read: 64 streams from one address held ~0.5 GiB.
// The lines are written as they are read, a page at a time.
func TestRedteamLogStreamHoldsNoCopyOfTheLog(t *testing.T) {
	s := newStack(t)
	sub := s.submit(t, `{"type":"logger","input":{"lines":10000,"pad":90}}`)
	s.waitState(t, sub, jobs.StateSucceeded)
	read := func() (int64, string) {
		resp := do(t, "GET", s.progress.URL+"/v1/jobs/"+sub.ID+"/events", sub.Token, nil)
		defer resp.Body.Close()
		var tail strings.Builder
		n, err := io.CopyBuffer(io.MultiWriter(io.Discard, &lastBytes{b: &tail, max: 200}), resp.Body, make([]byte, 32<<10))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("events: %d %v", resp.StatusCode, err)
		}
		return n, tail.String()
	}
	size, tail := read() // fills the shared pages
	if size < 1<<20 || !strings.Contains(tail, `"finished_at":"`) {
		t.Fatalf("the stream is %d bytes, ending %q; want over 1 MiB, ending with done", size, tail)
	}
	// Allocation per stream is a proxy for what a stream builds before it
	// writes (a built-whole stream allocated ~7x the log); the race
	// detector's runtime allocates its own way, so the measure is taken
	// without it (.ci/run runs this test again without -race).
	if raceDetector {
		t.Skip("allocation under the race detector is not the program's; .ci/run measures this without -race")
	}
	const n = 10
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		if got, _ := read(); got != size {
			t.Fatalf("read %d bytes, then %d", size, got)
		}
	}
	runtime.ReadMemStats(&after)
	// Encoding each line allocates about the stream's size once (and the
	// client's reading some more): twice the size is the allowance.
	if per := (after.TotalAlloc - before.TotalAlloc) / n; per > 2*uint64(size) {
		t.Fatalf("each stream of a %d-byte log allocated %d bytes: the stream is built whole", size, per)
	}
}

// lastBytes keeps the last max bytes written to it.
type lastBytes struct {
	b   *strings.Builder
	max int
}

func (l *lastBytes) Write(p []byte) (int, error) {
	s := l.b.String() + string(p[max(0, len(p)-l.max):])
	l.b.Reset()
	l.b.WriteString(s[max(0, len(s)-l.max):])
	return len(p), nil
}
