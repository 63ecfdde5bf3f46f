// Package waitfor lets tests wait for a condition instead of for time: it
// polls a predicate until it holds or a deadline passes.
package waitfor

import (
	"testing"
	"time"
)

// True polls cond every few milliseconds until it returns true, failing the
// test if that takes longer than within.
func True(tb testing.TB, within time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("condition not met within %v", within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
