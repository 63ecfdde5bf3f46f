package pubsub

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
)

// recorder is a Handler that remembers what it was told.
type recorder struct {
	mu         sync.Mutex
	subscribed map[string]int
	lost       map[string]int
	messages   []string
}

func newRecorder() *recorder {
	return &recorder{subscribed: map[string]int{}, lost: map[string]int{}}
}

func (r *recorder) handler() Handler {
	return Handler{
		Subscribed: func(ch string) { r.mu.Lock(); r.subscribed[ch]++; r.mu.Unlock() },
		Lost:       func(ch string) { r.mu.Lock(); r.lost[ch]++; r.mu.Unlock() },
		Message:    func(ch, p string) { r.mu.Lock(); r.messages = append(r.messages, ch+" "+p); r.mu.Unlock() },
	}
}

func (r *recorder) count(ch string) int { r.mu.Lock(); defer r.mu.Unlock(); return r.subscribed[ch] }

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.messages...)
}

// TestChannelsSubscribeAgainRightAfterUnsubscribe: a channel dropped and
// asked for again at once is confirmed only by the reply to the second
// SSUBSCRIBE (the first's reply, still in flight, is not taken for it),
// and its messages arrive; a dropped channel's do not.
func TestChannelsSubscribeAgainRightAfterUnsubscribe(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Client(t)
	r := newRecorder()
	c := NewChannels(rdb, r.handler(), nil)
	defer c.Close()
	const a, b = "cc:job:{a}:ch", "cc:job:{b}:ch"
	c.Subscribe(a)
	c.Subscribe(b)
	waitfor.True(t, 5*time.Second, func() bool { return r.count(a) == 1 && r.count(b) == 1 })
	c.Unsubscribe(a)
	c.Subscribe(a)
	c.Unsubscribe(b)
	waitfor.True(t, 5*time.Second, func() bool { return r.count(a) == 2 })
	for _, ch := range []string{b, a} {
		if err := rdb.SPublish(ctx, ch, "x").Err(); err != nil {
			t.Fatal(err)
		}
	}
	waitfor.True(t, 5*time.Second, func() bool { return len(r.got()) > 0 })
	if got := r.got(); len(got) != 1 || got[0] != a+" x" || c.Received() != 1 {
		t.Fatalf("messages %q (received %d), want only %q", got, c.Received(), a+" x")
	}
	if r.count(b) != 1 {
		t.Fatalf("the dropped channel was confirmed %d times", r.count(b))
	}
}

// TestChannelsEndWhenTheClientCloses: closing the Redis client ends the
// Channels' goroutines instead of resubscribing on a closed client forever.
func TestChannelsEndWhenTheClientCloses(t *testing.T) {
	rdb := redistest.NewClient(t)
	r := newRecorder()
	c := NewChannels(rdb, r.handler(), nil)
	defer c.Close()
	c.Subscribe("cc:job:{a}:ch")
	waitfor.True(t, 5*time.Second, func() bool { return r.count("cc:job:{a}:ch") == 1 })
	_ = rdb.Close()
	select {
	case <-c.ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Channels still running on a closed client")
	}
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Channels' goroutines did not end")
	}
}
