package pubkeys_test

import (
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/tokens"
	"github.com/claimcheck/claimcheck/tokens/pubkeys"
)

// TestEmptyReadingIsKeptOnlyMinRefresh: a process that read before the
// first publisher started (the api before any worker) lists that
// publisher's keys once MinRefresh has passed, not only after MaxAge.
func TestEmptyReadingIsKeptOnlyMinRefresh(t *testing.T) {
	rdb := redistest.Client(t)
	now := time.Unix(1_800_000_000, 0)
	src := pubkeys.NewSource(rdb, tokens.KindWebhook)
	src.Now = func() time.Time { return now }
	if n := len(src.JWKS(t.Context()).Keys); n != 0 {
		t.Fatalf("%d keys before any was published", n)
	}
	ks := newSet(t)
	if err := pubkeys.Publish(t.Context(), rdb, tokens.KindWebhook, ks); err != nil {
		t.Fatal(err)
	}
	if n := len(src.JWKS(t.Context()).Keys); n != 0 {
		t.Fatalf("the empty reading was not kept for MinRefresh: %d keys", n)
	}
	now = now.Add(src.MinRefresh)
	if n := len(src.JWKS(t.Context()).Keys); n != 1 {
		t.Fatalf("%d keys a MinRefresh after the first was published, want 1", n)
	}
	// A reading with keys is kept for MaxAge, as before.
	if err := pubkeys.Publish(t.Context(), rdb, tokens.KindWebhook, newSet(t)); err != nil {
		t.Fatal(err)
	}
	now = now.Add(src.MinRefresh)
	if n := len(src.JWKS(t.Context()).Keys); n != 1 {
		t.Fatalf("a reading with keys was not kept for MaxAge: %d keys", n)
	}
}
