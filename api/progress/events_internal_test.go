package progress

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
)

// stalledClient is a client that stops reading: its first write blocks
// until released, as a write to a full socket does. Later writes are kept.
type stalledClient struct {
	entered, release chan struct{}
	once             sync.Once

	mu  sync.Mutex
	got bytes.Buffer
}

func (c *stalledClient) Write(p []byte) (int, error) {
	first := false
	c.once.Do(func() { first = true })
	if first {
		close(c.entered)
		<-c.release
		return len(p), nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got.Write(p)
}

func (c *stalledClient) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got.String()
}

// TestFinding7OverflowRechecksEpoch: a stream whose client stalls while its
// job changes many times overflows its queue and must catch up from the
// log. If the job's tokens were revoked meanwhile and the revocation
// message is among what it missed (here it was never published), the
// stream must notice from the record and end, sending nothing more.
func TestFinding7OverflowRechecksEpoch(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Client(t)
	store := jobs.NewStore(rdb, nil)
	const id = "01a23000-0000-7000-8000-000000000001"
	if _, err := store.Create(ctx, jobs.NewJob{ID: id, Type: "t", Owner: "ann", Queue: "default", MaxRetry: 100,
		Timeout: time.Minute, TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	hub := NewHub(rdb, slog.New(slog.DiscardHandler))
	ready := make(chan struct{})
	hub.Start(ready)
	t.Cleanup(hub.Close)
	<-ready

	_, last, err := store.Snapshot(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	svc := &Service{cfg: Config{Store: store, Heartbeat: time.Hour, Now: time.Now}}
	w := hub.Watch(id)
	defer w.Close()
	st := &stream{svc: svc, w: w, job: id, epoch: 0, expires: time.Now().Add(time.Hour), last: last}
	client := &stalledClient{entered: make(chan struct{}), release: make(chan struct{})}
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		st.loop(hub.Done(), client, func() bool { return true })
	}()

	// The first event reaches the client's socket, which is full.
	if _, err := store.Start(ctx, id, 1); err != nil {
		t.Fatal(err)
	}
	<-client.entered
	// The job changes more often than the watcher's queue holds.
	for attempt := 1; attempt <= maxPending; attempt++ {
		if _, err := store.Fail(ctx, id, attempt, "again", false, time.Hour); err != nil {
			t.Fatal(err)
		}
		if _, err := store.Start(ctx, id, attempt+1); err != nil {
			t.Fatal(err)
		}
	}
	waitfor.True(t, 5*time.Second, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.behind
	})
	// Its tokens are revoked, and the message is lost.
	if err := rdb.HIncrBy(ctx, jobs.JobKey(id), "epoch", 1).Err(); err != nil {
		t.Fatal(err)
	}

	close(client.release)
	waitfor.True(t, 5*time.Second, func() bool { return client.String() != "" })
	if got, want := client.String(), "event: end\ndata: {\"reason\":\"token_revoked\"}\n\n"; got != want {
		t.Fatalf("after the overflow the stream sent\n%.300s\nwant only\n%s", strings.TrimSpace(got), want)
	}
	waitfor.True(t, 5*time.Second, func() bool {
		select {
		case <-ended:
			return true
		default:
			return false
		}
	})
}
