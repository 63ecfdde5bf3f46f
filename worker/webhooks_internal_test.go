package worker

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/claimcheck/claimcheck/internal/config"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
)

// TestNoDeliveryWarnsOfWaitingOutbox: a worker that delivers no webhooks
// (--webhook-concurrency 0) says so when canceled jobs' completed events
// wait in the outbox for one that does, and says nothing when none wait.
func TestNoDeliveryWarnsOfWaitingOutbox(t *testing.T) {
	rdb := redistest.Client(t)
	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	start := func() {
		stop, err := startWebhooks(&config.Worker{WebhookConcurrency: 0}, rdb, logger)
		if err != nil {
			t.Fatal(err)
		}
		stop()
	}
	start()
	if got := logs.String(); got != "" {
		t.Fatalf("logged with an empty outbox: %s", got)
	}
	if _, err := jobs.NewStore(rdb, nil).PushWebhookOutbox(context.Background(), "j1"); err != nil {
		t.Fatal(err)
	}
	start()
	if got := logs.String(); !strings.Contains(got, "level=WARN") || !strings.Contains(got, "waiting=1") {
		t.Fatalf("log: %s", got)
	}
	if n, _ := jobs.NewStore(rdb, nil).WebhookOutboxLen(context.Background()); n != 1 {
		t.Errorf("the outbox holds %d ids, want the 1 still waiting", n)
	}
}
