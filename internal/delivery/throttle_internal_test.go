package delivery

import (
	"sync"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
)

// TestThrottle: the first event goes at once, those within the interval
// become one trailing send, close flushes what is left and then nothing
// more goes.
func TestThrottle(t *testing.T) {
	var mu sync.Mutex
	sends := 0
	th := newThrottle(50*time.Millisecond, time.Now, func() { mu.Lock(); sends++; mu.Unlock() })
	count := func() int { mu.Lock(); defer mu.Unlock(); return sends }

	th.event() // leading edge
	if count() != 1 {
		t.Fatalf("leading edge: %d sends", count())
	}
	for range 100 {
		th.event() // all folded into the trailing edge
	}
	waitfor.True(t, 5*time.Second, func() bool { return count() == 2 })
	th.mu.Lock()
	timer := th.timer
	th.mu.Unlock()
	if timer != nil {
		t.Fatal("a timer is left after the trailing edge")
	}
	th.event() // within the interval of the trailing send: pending
	th.close() // flushed now
	if count() != 3 {
		t.Fatalf("close did not flush: %d sends", count())
	}
	th.event()
	th.close()
	if count() != 3 {
		t.Fatalf("an event after close was sent: %d sends", count())
	}
}

func TestDefaultRetryDelay(t *testing.T) {
	var total time.Duration
	for n := 1; n < MaxAttempts; n++ {
		d, base := DefaultRetryDelay(n), RetrySchedule[n-1]
		if d < base*4/5 || d > base*6/5 {
			t.Fatalf("delay after attempt %d: %v, want %v ±20%%", n, d, base)
		}
		total += base
	}
	if total < 2*time.Hour || total > 2*time.Hour+5*time.Minute {
		t.Fatalf("the window is %v, want about 2 h", total)
	}
	if len(RetrySchedule) != MaxAttempts-1 {
		t.Fatalf("%d waits for %d attempts", len(RetrySchedule), MaxAttempts)
	}
}
