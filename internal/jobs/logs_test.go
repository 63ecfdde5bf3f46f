package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
)

func lines(from, n, size int) []jobs.LogLine {
	out := make([]jobs.LogLine, n)
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	for i := range out {
		text := fmt.Sprintf("line %d", from+i)
		if size > len(text) {
			text += strings.Repeat(".", size-len(text))
		}
		out[i] = jobs.LogLine{Time: t0.Add(time.Duration(from+i) * time.Millisecond), Text: text}
	}
	return out
}

func readAll(t *testing.T, s *jobs.Store, id string, after int64) *jobs.LogPage {
	t.Helper()
	p, err := s.LogAfter(context.Background(), id, after, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLogAppendAndResume(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	queuedJob(t, s, "j1")
	if p := readAll(t, s, "j1", 0); len(p.Lines) != 0 || p.Last != 0 || p.Skipped != 0 {
		t.Fatalf("empty log: %+v", p)
	}
	if n, err := s.AppendLog(ctx, "j1", lines(1, 3, 0), 0); err != nil || n != 3 {
		t.Fatalf("append = %d, %v; want 3", n, err)
	}
	if n, err := s.AppendLog(ctx, "j1", lines(4, 2, 0), 0); err != nil || n != 5 {
		t.Fatalf("second append = %d, %v; want 5", n, err)
	}
	p := readAll(t, s, "j1", 0)
	if len(p.Lines) != 5 || p.Last != 5 || p.Dropped != 0 || p.Skipped != 0 {
		t.Fatalf("page = %+v", p)
	}
	for i, l := range p.Lines {
		if l.N != int64(i+1) || l.Text != fmt.Sprintf("line %d", i+1) ||
			!l.Time.Equal(time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC).Add(time.Duration(i+1)*time.Millisecond)) {
			t.Fatalf("line %d = %+v", i, l)
		}
	}
	p = readAll(t, s, "j1", 3)
	if len(p.Lines) != 2 || p.Lines[0].N != 4 || p.Next(3) != 5 {
		t.Fatalf("after 3: %+v", p)
	}
	p = readAll(t, s, "j1", 5)
	if len(p.Lines) != 0 || p.Next(5) != 5 {
		t.Fatalf("after 5: %+v", p)
	}
	if p, _ := s.LogAfter(ctx, "j1", 0, 2); len(p.Lines) != 2 || p.Next(0) != 2 {
		t.Fatalf("limit 2: %+v", p)
	}
}

func TestLogCappedByLines(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	queuedJob(t, s, "j1")
	total := jobs.MaxLogLines + 1234
	for i := 1; i <= total; i += 1000 {
		if _, err := s.AppendLog(ctx, "j1", lines(i, min(1000, total-i+1), 0), 0); err != nil {
			t.Fatal(err)
		}
	}
	p := readAll(t, s, "j1", 0)
	if len(p.Lines) != jobs.MaxLogLines || p.Last != int64(total) || p.Dropped != 1234 || p.Skipped != 1234 {
		t.Fatalf("lines %d last %d dropped %d skipped %d; want %d %d 1234 1234", len(p.Lines), p.Last, p.Dropped, p.Skipped, jobs.MaxLogLines, total)
	}
	if p.Lines[0].N != 1235 || p.Lines[0].Text != "line 1235" || p.Lines[len(p.Lines)-1].Text != fmt.Sprintf("line %d", total) {
		t.Fatalf("kept %q … %q", p.Lines[0].Text, p.Lines[len(p.Lines)-1].Text)
	}
	// A reader resuming inside the dropped range learns how many it missed.
	if p := readAll(t, s, "j1", 1000); p.Skipped != 234 || p.Lines[0].N != 1235 {
		t.Fatalf("after 1000: skipped %d first %d", p.Skipped, p.Lines[0].N)
	}
}

func TestLogCappedByBytes(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	queuedJob(t, s, "j1")
	// 600 lines of 4000 bytes: 2.4 MB, over the byte cap long before the line cap.
	for i := 1; i <= 600; i += 50 {
		if _, err := s.AppendLog(ctx, "j1", lines(i, 50, 4000), 0); err != nil {
			t.Fatal(err)
		}
	}
	p := readAll(t, s, "j1", 0)
	bytes := 0
	for _, l := range p.Lines {
		bytes += len(l.Text)
	}
	want := jobs.MaxLogBytes / 4000 // 262 lines fit
	if bytes > jobs.MaxLogBytes || len(p.Lines) != want || p.Dropped != int64(600-want) || p.Last != 600 {
		t.Fatalf("kept %d lines (%d bytes), dropped %d, last %d; want %d lines ≤ %d bytes", len(p.Lines), bytes, p.Dropped, p.Last, want, jobs.MaxLogBytes)
	}
	if p.Lines[len(p.Lines)-1].N != 600 || p.Lines[0].N != int64(600-want+1) {
		t.Fatalf("kept lines %d..%d", p.Lines[0].N, p.Lines[len(p.Lines)-1].N)
	}
}

func TestLogWriterDropsLeaveAGap(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	queuedJob(t, s, "j1")
	if _, err := s.AppendLog(ctx, "j1", lines(1, 1, 0), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendLog(ctx, "j1", lines(100, 1, 0), 98); err != nil {
		t.Fatal(err)
	}
	p := readAll(t, s, "j1", 0)
	if len(p.Lines) != 2 || p.Lines[1].N != 100 || p.Lines[1].Text != "line 100" || p.Dropped != 98 || p.Last != 100 {
		t.Fatalf("page = %+v", p)
	}
	if p := readAll(t, s, "j1", 1); p.Skipped != 98 || p.Lines[0].N != 100 {
		t.Fatalf("after 1: %+v", p)
	}
}

func TestLogLongLineCut(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	queuedJob(t, s, "j1")
	long := strings.Repeat("é", 5000) // 10000 bytes
	if _, err := s.AppendLog(ctx, "j1", []jobs.LogLine{{Time: time.Now(), Text: long}, {Time: time.Now(), Text: "a\nb\xff"}}, 0); err != nil {
		t.Fatal(err)
	}
	p := readAll(t, s, "j1", 0)
	got := p.Lines[0].Text
	if len(got) > jobs.MaxLogLineBytes || !strings.HasPrefix(got, strings.Repeat("é", 1000)) || !strings.HasSuffix(got, " bytes cut]") {
		t.Fatalf("cut line: %d bytes, ends %q", len(got), got[len(got)-40:])
	}
	if !strings.Contains(got, fmt.Sprintf("%d bytes cut", 10000-len(strings.Split(got, "[…")[0]))) {
		t.Fatalf("cut mark does not count the cut bytes: %q", got[len(got)-40:])
	}
	if p.Lines[1].Text != "a b\uFFFD" {
		t.Fatalf("sanitized line = %q", p.Lines[1].Text)
	}
}

func TestLogExpiresWithRecord(t *testing.T) {
	rdb := redistest.Client(t)
	ctx := context.Background()
	s := jobs.NewStore(rdb, nil)
	queuedJob(t, s, "j1") // TTL 1h
	if _, err := s.AppendLog(ctx, "j1", lines(1, 2, 0), 0); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"cc:job:{j1}:log", "cc:job:{j1}:log-meta"} {
		if d := rdb.PTTL(ctx, k).Val(); d < 59*time.Minute || d > time.Hour {
			t.Fatalf("%s ttl = %v, want the record's (1h)", k, d)
		}
	}
	// Finishing sets the record's retention; the log follows, longer or shorter.
	if _, err := s.StartAttempt(ctx, jobs.Attempt{ID: "j1", Owner: "ann", Queue: "default", Number: 1, Lease: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Succeed(ctx, "j1", 1, jobs.Result{ContentType: "text/plain"}, 3*time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"cc:job:{j1}:log", "cc:job:{j1}:log-meta"} {
		if d := rdb.PTTL(ctx, k).Val(); d < 179*time.Minute || d > 3*time.Hour {
			t.Fatalf("%s ttl after finish = %v, want the retention (3h)", k, d)
		}
	}
	queuedJob(t, s, "j2")
	if _, err := s.AppendLog(ctx, "j2", lines(1, 2, 0), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Cancel(ctx, "j2", 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, 5*time.Second, func() bool {
		return rdb.Exists(ctx, "cc:job:{j2}", "cc:job:{j2}:log", "cc:job:{j2}:log-meta").Val() == 0
	})
	// A record that is gone keeps no log.
	if _, err := s.AppendLog(ctx, "j2", lines(3, 1, 0), 0); !errors.Is(err, jobs.ErrGone) {
		t.Fatalf("append to a gone job: %v, want ErrGone", err)
	}
	if n := rdb.Exists(ctx, "cc:job:{j2}:log", "cc:job:{j2}:log-meta").Val(); n != 0 {
		t.Fatalf("a gone job's log was made (%d keys)", n)
	}
}

func TestLogAppendAnnounces(t *testing.T) {
	rdb := redistest.Client(t)
	s := jobs.NewStore(rdb, nil)
	ctx := context.Background()
	sub := rdb.SSubscribe(ctx, jobs.JobChannel("j1"))
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	queuedJob(t, s, "j1")
	if _, err := s.AppendLog(ctx, "j1", lines(1, 7, 0), 0); err != nil {
		t.Fatal(err)
	}
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id, ev, ok := jobs.ParseEventMessage(msg.Payload)
	if !ok || id != "j1" || ev.Type != jobs.EventLog || ev.Data != "7" {
		t.Fatalf("announcement %q", msg.Payload)
	}
}
