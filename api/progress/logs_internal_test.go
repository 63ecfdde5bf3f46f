package progress

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
)

// TestLogWakeUpsSpareStatusPath: a job's new log lines wake its event
// streams, but neither drop its cached record (the status route keeps
// answering from memory) nor wake a waiting long-poll (its record did not
// change). A real change does both, in the same setup.
func TestLogWakeUpsSpareStatusPath(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Client(t)
	store := jobs.NewStore(rdb, nil)
	const id = "01a23000-0000-7000-8000-000000000002"
	if _, err := store.Create(ctx, jobs.NewJob{ID: id, Type: "t", Owner: "ann", Queue: "default", Timeout: time.Minute, TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Start(ctx, id, 1); err != nil {
		t.Fatal(err)
	}
	hub := NewHub(rdb, slog.New(slog.DiscardHandler))
	rc := newRecordCache(100, time.Hour)
	hub.records.Store(rc)
	ready := make(chan struct{})
	hub.Start(ready)
	t.Cleanup(hub.Close)
	<-ready
	j, err := store.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	_, gen := rc.get(id)
	rc.fill(id, gen, j)
	longPoll, stream := hub.Watch(id), hub.watch(ctx, id, true)
	defer longPoll.Close()
	defer stream.Close()

	if _, err := store.AppendLog(ctx, id, []jobs.LogLine{{Time: time.Now(), Text: "hello"}}, 0); err != nil {
		t.Fatal(err)
	}
	// Both watchers are served by the same delivery: once the stream has
	// heard, the long-poll would have too.
	waitfor.True(t, 5*time.Second, func() bool { stream.mu.Lock(); defer stream.mu.Unlock(); return stream.newLogs })
	select {
	case <-longPoll.Ready():
		t.Fatal("a log line woke a long-poll")
	default:
	}
	if cached, _ := rc.get(id); cached == nil {
		t.Fatal("a log line dropped the job's cached record")
	}
	if evs, behind := stream.Take(); len(evs) != 0 || behind || !stream.takeLogs() || stream.takeLogs() {
		t.Fatalf("stream watcher: events %v behind %v, want one log wake-up only", evs, behind)
	}

	// A change to the record: both woken, cache dropped.
	if _, err := store.Progress(ctx, id, 50, "half"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-longPoll.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("a progress event did not wake the long-poll")
	}
	if cached, _ := rc.get(id); cached != nil {
		t.Fatal("a progress event left the cached record")
	}
}
