package identity

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/pubsub"
)

// ChannelRevocations is the Redis pub/sub channel on which every revocation
// is announced, so that anything caching what a credential is worth (the
// gateway's internal tokens, a key set) can forget it within moments on
// every instance.
const ChannelRevocations = "cc:revocations"

// Revocation kinds.
const (
	// RevokedSession: ID is a session id.
	RevokedSession = "session"
	// RevokedAPIKey: ID is an API key id.
	RevokedAPIKey = "apikey"
	// RevokedUser: every credential of user ID (log out everywhere, block).
	RevokedUser = "user"
	// RevokedAll: forget everything (a signing key changed, or a listener
	// may have missed messages while disconnected).
	RevokedAll = "all"
)

// Revocation names credentials that just stopped working.
type Revocation struct {
	Kind string
	ID   string
}

// String is the message's wire form, "kind id".
func (r Revocation) String() string { return r.Kind + " " + r.ID }

// ParseRevocation reads a message's wire form.
func ParseRevocation(msg string) (Revocation, bool) {
	kind, id, _ := strings.Cut(msg, " ")
	switch kind {
	case RevokedSession, RevokedAPIKey, RevokedUser:
		return Revocation{Kind: kind, ID: id}, id != ""
	case RevokedAll:
		return Revocation{Kind: kind}, true
	}
	return Revocation{}, false
}

// Revocations announces revocations: first to listeners in this process,
// synchronously, so the very next request here already sees them; then on
// ChannelRevocations for every other process. The PUBLISH is a command of
// its own, sent after the revocation's writes and never from a script: on
// a cluster it enters at any node and the cluster bus carries it to every
// other node's subscribers, so no announcement is tied to a slot, and two
// announcements may be heard in either order.
type Revocations struct {
	rdb redis.Cmdable

	mu        sync.RWMutex
	listeners []func(Revocation)
}

// NewRevocations returns an announcer publishing on rdb.
func NewRevocations(rdb redis.Cmdable) *Revocations { return &Revocations{rdb: rdb} }

// OnRevoke adds a listener in this process. Listeners must be quick and
// must not block: they run on the revoking request's goroutine.
func (r *Revocations) OnRevoke(fn func(Revocation)) {
	r.mu.Lock()
	r.listeners = append(r.listeners, fn)
	r.mu.Unlock()
}

// Announce tells local listeners and publishes rev. The revocation itself
// has already happened in Redis; an error here means other processes may
// keep a cached token until it expires (at most a minute).
func (r *Revocations) Announce(ctx context.Context, rev Revocation) error {
	r.mu.RLock()
	ls := r.listeners
	r.mu.RUnlock()
	for _, fn := range ls {
		fn(rev)
	}
	if err := r.rdb.Publish(ctx, ChannelRevocations, rev.String()).Err(); err != nil {
		return fmt.Errorf("announce revocation: %w", err)
	}
	return nil
}

// ListenRevocations subscribes to ChannelRevocations and calls fn for each
// revocation until ctx ends. Each time the subscription is (re)established
// fn first gets RevokedAll: messages sent while disconnected are lost, so a
// listener must assume it missed some. ready, if not nil, is closed once
// the first subscription is confirmed.
func ListenRevocations(ctx context.Context, rdb redis.UniversalClient, fn func(Revocation), ready chan<- struct{}) error {
	pubsub.Listen(ctx, rdb, ChannelRevocations, func() {
		fn(Revocation{Kind: RevokedAll})
		if ready != nil {
			close(ready)
			ready = nil
		}
	}, func(payload string) {
		if rev, ok := ParseRevocation(payload); ok {
			fn(rev)
		}
	})
	return nil
}
