// Package pubsub holds claimcheck's Redis subscription loops: Listen, the
// one subscription to a fixed channel that listeners of broadcasts share
// (revocations), and Channels, a changing set of shard channel
// subscriptions made on demand and grouped by cluster node (job events,
// per job). Both resubscribe after a lost connection and tell the listener
// each time they (re)subscribed — messages sent meanwhile are lost, so
// listeners resynchronise then — and end promptly when closed.
package pubsub

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// Listen subscribes to channel and calls onSubscribed after every
// (re)subscription and onMessage for every message, until ctx ends or rdb
// is closed. Both run on Listen's goroutine and must not block.
func Listen(ctx context.Context, rdb redis.UniversalClient, channel string, onSubscribed func(), onMessage func(payload string)) {
	ps := rdb.Subscribe(ctx, channel)
	defer ps.Close()
	// A blocked Receive does not watch ctx; closing the subscription ends it.
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer stop()
	for {
		msg, err := ps.Receive(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, redis.ErrClosed) {
				return
			}
			// go-redis reconnects and resubscribes on the next Receive;
			// pause so a Redis that is down is not hammered.
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				onSubscribed()
			}
		case *redis.Message:
			onMessage(m.Payload)
		}
	}
}
