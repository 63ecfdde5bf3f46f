package worker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/worker"
)

// TestTaskLogfStoredBeforeOutcome: every line a handler logs (Logf, its
// Logger, several lines in one call) is in the job's log by the time the
// job is seen to have ended, in order, across attempts.
func TestTaskLogfStoredBeforeOutcome(t *testing.T) {
	h := start(t, worker.Type{
		Name: "chatty", Timeout: time.Minute, InputSchema: anyObject, MaxRetry: 1,
		Handle: func(ctx context.Context, task *worker.Task) error {
			for i := range 2500 {
				task.Logf("attempt %d line %d", task.Attempt(), i)
			}
			task.Logf("two\nlines")
			task.Logger().Info("via slog", "k", "v")
			if task.Attempt() == 1 {
				return fmt.Errorf("first attempt fails")
			}
			return nil
		},
	})
	h.submit(t, "chatty", "c1", 1)
	j := h.waitFinal(t, "c1")
	if j.State != jobs.StateSucceeded {
		t.Fatalf("job = %+v", j)
	}
	p, err := h.store.LogAfter(context.Background(), "c1", 0, 100_000)
	if err != nil {
		t.Fatal(err)
	}
	const perAttempt = 2500 + 2 + 1
	if len(p.Lines) != 2*perAttempt || p.Dropped != 0 {
		t.Fatalf("%d lines (%d dropped), want %d", len(p.Lines), p.Dropped, 2*perAttempt)
	}
	for i, want := range map[int]string{0: "attempt 1 line 0", 2499: "attempt 1 line 2499", 2500: "two", 2501: "lines",
		perAttempt: "attempt 2 line 0", 2*perAttempt - 1: `level=INFO msg="via slog" k=v`} {
		if p.Lines[i].Text != want || p.Lines[i].N != int64(i+1) {
			t.Fatalf("line %d = %+v, want %q", i+1, p.Lines[i], want)
		}
	}
	if p.Lines[0].Time.IsZero() || p.Lines[0].Time.After(p.Lines[len(p.Lines)-1].Time) {
		t.Fatalf("times %v .. %v", p.Lines[0].Time, p.Lines[len(p.Lines)-1].Time)
	}
}

// TestTaskLogSpewBounded: a handler writing far more than the log keeps
// ends with the newest lines kept, the rest counted, and the outcome
// recorded.
func TestTaskLogSpewBounded(t *testing.T) {
	h := start(t, worker.Type{
		Name: "spew", Timeout: time.Minute, InputSchema: anyObject,
		Handle: func(ctx context.Context, task *worker.Task) error {
			for i := range 50_000 {
				task.Logf("spew %d %s", i, strings.Repeat("x", 100))
			}
			task.Logf("last")
			return nil
		},
	})
	h.submit(t, "spew", "s1", 0)
	j := h.waitFinal(t, "s1")
	if j.State != jobs.StateSucceeded {
		t.Fatalf("job = %+v", j)
	}
	p, err := h.store.LogAfter(context.Background(), "s1", 0, 100_000)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Lines) > jobs.MaxLogLines || p.Lines[len(p.Lines)-1].Text != "last" || p.Dropped == 0 {
		t.Fatalf("%d lines, last %q, dropped %d", len(p.Lines), p.Lines[len(p.Lines)-1].Text, p.Dropped)
	}
	// Every line written is kept or counted as dropped.
	if kept := int64(len(p.Lines) - countMarked(p)); kept+p.Dropped < 50_001 {
		t.Fatalf("kept %d + dropped %d < 50001 written", kept, p.Dropped)
	}
}

func countMarked(p *jobs.LogPage) int {
	n := 0
	for _, l := range p.Lines {
		if strings.Contains(l.Text, "lines dropped") {
			n++
		}
	}
	return n
}
