package pubsub

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Channels holds a changing set of shard channel subscriptions (SSUBSCRIBE),
// each made when asked for and dropped when no longer wanted, for a
// listener whose interest is a few channels out of many (a progress
// process: the jobs it has watchers for).
//
// A shard channel lives on the primary of its slot, so a subscription
// connection serves only the channels of one node: on a *redis.ClusterClient
// channels are grouped by the primary that serves their slot
// (ClusterClient.MasterForKey), one connection per primary; on any other
// client one connection holds them all.
//
//	Subscribe(ch) ──▶ unplaced ──place──▶ on a node's connection ──reply──▶ confirmed
//	                     ▲                        │                          │
//	                     └──── lost: error, MOVED, server's sunsubscribe ◀───┘
//
// Each SSUBSCRIBE names one channel (a cluster refuses one command naming
// channels of several slots). A confirmed channel is reported to
// Handler.Subscribed: from then on every message published on it reaches
// Handler.Message, until Unsubscribe, or until it is lost, which
// Handler.Lost reports: the connection failed (or timed out: it is pinged
// while idle), the server refused a command (MOVED after a slot moved,
// NOPERM), or the server dropped the channel itself (it sends sunsubscribe
// when the channel's slot migrates). A lost channel's connection is closed
// and every channel it held is placed again, on the node that now serves
// its slot, and reported Subscribed again once confirmed: messages
// published meanwhile are lost, so a listener resynchronises on every
// Subscribed after a Lost.
//
// A server without shard channels (before Redis 7, or the embedded dev
// server) refuses SSUBSCRIBE as an unknown command; Channels then uses
// SUBSCRIBE on the same channel names for good, which is what the
// publishing scripts fall back to as well (package jobs).
//
// Handler functions run on Channels' goroutines, possibly concurrently
// (one per connection), and must not block.
type Channels struct {
	rdb redis.UniversalClient
	h   Handler
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{} // placement to do

	received atomic.Int64

	mu       sync.Mutex
	want     map[string]*conn    // wanted channel → its connection (nil: unplaced)
	unplaced map[string]struct{} // wanted channels not on a connection
	conns    map[string]*conn    // by node address
	plain    bool                // the server has no shard channels: SUBSCRIBE
	failures int                 // lost connections in a row, for backoff
	closed   bool
}

// Handler receives a Channels' news.
type Handler struct {
	// Subscribed reports that channel's subscription is confirmed.
	Subscribed func(channel string)
	// Lost reports that channel's subscription was cut: messages may be
	// lost until it is Subscribed again.
	Lost func(channel string)
	// Message delivers one message.
	Message func(channel, payload string)
}

// pingEvery is how often an idle connection is pinged, and idleTimeout how
// long it may stay silent before it is taken for dead.
const (
	pingEvery   = 15 * time.Second
	idleTimeout = 3 * pingEvery
)

// NewChannels returns a Channels on rdb with no subscription; Close it when
// done. log, if not nil, hears of lost connections.
func NewChannels(rdb redis.UniversalClient, h Handler, log *slog.Logger) *Channels {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Channels{rdb: rdb, h: h, log: log, ctx: ctx, cancel: cancel, kick: make(chan struct{}, 1),
		want: map[string]*conn{}, unplaced: map[string]struct{}{}, conns: map[string]*conn{}}
	c.wg.Add(1)
	go c.placer()
	return c
}

// Received counts the messages received, on every connection.
func (c *Channels) Received() int64 { return c.received.Load() }

// Subscribe asks for channel; Handler.Subscribed tells when it is confirmed.
// Asking again for a wanted channel does nothing.
func (c *Channels) Subscribe(channel string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.want[channel]; ok || c.closed {
		return
	}
	c.want[channel] = nil
	c.unplaced[channel] = struct{}{}
	signal(c.kick)
}

// Unsubscribe drops channel; no Handler function hears of it afterwards
// (unless it is asked for again).
func (c *Channels) Unsubscribe(channel string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cn, ok := c.want[channel]
	if !ok {
		return
	}
	delete(c.want, channel)
	delete(c.unplaced, channel)
	if cn != nil && !cn.dead {
		delete(cn.chans, channel)
		cn.queueLocked(channel, false)
	}
}

// Close drops every subscription and waits for Channels' goroutines.
func (c *Channels) Close() {
	c.mu.Lock()
	c.closed = true
	conns := make([]*conn, 0, len(c.conns))
	for _, cn := range c.conns {
		conns = append(conns, cn)
	}
	c.mu.Unlock()
	c.cancel()
	for _, cn := range conns {
		_ = cn.ps.Close()
	}
	c.wg.Wait()
}

// placer puts unplaced channels on the connection of their node.
func (c *Channels) placer() {
	defer c.wg.Done()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.kick:
		}
		c.mu.Lock()
		backoff := time.Duration(min(c.failures, 20)) * 100 * time.Millisecond
		c.mu.Unlock()
		if backoff > 0 {
			// A server that is down, or a slot that moves, is not hammered.
			select {
			case <-c.ctx.Done():
				return
			case <-time.After(backoff):
			}
		}
		c.mu.Lock()
		todo := make([]string, 0, len(c.unplaced))
		for ch := range c.unplaced {
			todo = append(todo, ch)
		}
		c.mu.Unlock()
		retry := false
		for _, ch := range todo {
			node, key, err := c.node(ch)
			if err != nil {
				retry = true
				continue
			}
			c.mu.Lock()
			if _, ok := c.unplaced[ch]; ok && !c.closed {
				cn := c.conns[key]
				if cn == nil {
					cn = c.newConnLocked(node, key)
				}
				delete(c.unplaced, ch)
				c.want[ch] = cn
				cn.chans[ch] = true
				cn.queueLocked(ch, true)
			}
			c.mu.Unlock()
		}
		if retry {
			c.mu.Lock()
			c.failures++
			c.mu.Unlock()
			signal(c.kick)
		}
	}
}

// node is the client of the node serving channel's slot, and its key.
func (c *Channels) node(channel string) (redis.UniversalClient, string, error) {
	cc, ok := c.rdb.(*redis.ClusterClient)
	if !ok {
		return c.rdb, "", nil
	}
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	n, err := cc.MasterForKey(ctx, channel)
	if err != nil {
		return nil, "", err
	}
	return n, n.Options().Addr, nil
}

// conn is one subscription connection, to one node.
type conn struct {
	c    *Channels
	key  string
	ps   *redis.PubSub
	kick chan struct{}

	// Guarded by Channels.mu.
	chans    map[string]bool // the wanted channels placed here
	inflight map[string]int  // commands sent whose reply has not come
	ops      []op
	dead     bool
}

type op struct {
	channel string
	sub     bool
}

func (c *Channels) newConnLocked(node redis.UniversalClient, key string) *conn {
	var ps *redis.PubSub
	if c.plain {
		ps = node.Subscribe(c.ctx)
	} else {
		ps = node.SSubscribe(c.ctx)
	}
	cn := &conn{c: c, key: key, ps: ps, kick: make(chan struct{}, 1), chans: map[string]bool{}, inflight: map[string]int{}}
	c.conns[key] = cn
	c.wg.Add(2)
	go cn.writer()
	go cn.reader()
	return cn
}

func (cn *conn) queueLocked(channel string, sub bool) {
	cn.inflight[channel]++
	cn.ops = append(cn.ops, op{channel, sub})
	signal(cn.kick)
}

// writer sends the queued commands, and pings while idle.
func (cn *conn) writer() {
	defer cn.c.wg.Done()
	ping := time.NewTicker(pingEvery)
	defer ping.Stop()
	for {
		select {
		case <-cn.c.ctx.Done():
			return
		case <-ping.C:
			if err := cn.ps.Ping(cn.c.ctx); err != nil {
				cn.fail(err)
				return
			}
			continue
		case <-cn.kick:
		}
		cn.c.mu.Lock()
		ops, dead, plain := cn.ops, cn.dead, cn.c.plain
		cn.ops = nil
		cn.c.mu.Unlock()
		if dead {
			return
		}
		for _, o := range ops {
			var err error
			switch {
			case o.sub && plain:
				err = cn.ps.Subscribe(cn.c.ctx, o.channel)
			case o.sub:
				err = cn.ps.SSubscribe(cn.c.ctx, o.channel)
			case plain:
				err = cn.ps.Unsubscribe(cn.c.ctx, o.channel)
			default:
				err = cn.ps.SUnsubscribe(cn.c.ctx, o.channel)
			}
			if err != nil {
				cn.fail(err)
				return
			}
		}
	}
}

// reader receives replies and messages until the connection fails.
func (cn *conn) reader() {
	defer cn.c.wg.Done()
	for {
		msg, err := cn.ps.ReceiveTimeout(cn.c.ctx, idleTimeout)
		if err != nil {
			cn.fail(err)
			return
		}
		switch m := msg.(type) {
		case *redis.Message:
			cn.c.received.Add(1)
			cn.c.h.Message(m.Channel, m.Payload)
		case *redis.Subscription:
			cn.reply(m)
		}
	}
}

// reply handles a (un)subscription reply, or a server's own sunsubscribe.
func (cn *conn) reply(m *redis.Subscription) {
	c := cn.c
	c.mu.Lock()
	if cn.dead {
		c.mu.Unlock()
		return
	}
	ours := cn.inflight[m.Channel] > 0
	if ours {
		if cn.inflight[m.Channel]--; cn.inflight[m.Channel] == 0 {
			delete(cn.inflight, m.Channel)
		}
	}
	settled := cn.inflight[m.Channel] == 0 && cn.chans[m.Channel]
	switch m.Kind {
	case "ssubscribe", "subscribe":
		if settled {
			c.failures = 0
			c.mu.Unlock()
			c.h.Subscribed(m.Channel)
			return
		}
	case "sunsubscribe", "unsubscribe":
		if !ours && settled {
			// The server dropped a channel we want: its slot moved away.
			delete(cn.chans, m.Channel)
			c.want[m.Channel] = nil
			c.unplaced[m.Channel] = struct{}{}
			c.reloadState()
			signal(c.kick)
			c.mu.Unlock()
			c.h.Lost(m.Channel)
			return
		}
	}
	c.mu.Unlock()
}

// fail retires the connection after err and places its channels again.
func (cn *conn) fail(err error) {
	c := cn.c
	c.mu.Lock()
	if cn.dead || c.closed {
		c.mu.Unlock()
		return
	}
	cn.dead = true
	delete(c.conns, cn.key)
	if errors.Is(err, redis.ErrClosed) {
		// Not our Close (that marks the connection dead first): the
		// client itself was closed, and with it every subscription.
		c.closed = true
		c.mu.Unlock()
		c.cancel()
		return
	}
	if isUnknownCommand(err) && !c.plain {
		c.plain = true
		c.log.Info("redis has no shard channels: job events use SUBSCRIBE")
	} else {
		c.failures++
		c.log.Warn("job event subscription lost; resubscribing", "node", cn.key, "err", err)
	}
	lost := make([]string, 0, len(cn.chans))
	for ch := range cn.chans {
		c.want[ch] = nil
		c.unplaced[ch] = struct{}{}
		lost = append(lost, ch)
	}
	c.reloadState()
	signal(c.kick)
	c.mu.Unlock()
	_ = cn.ps.Close()
	signal(cn.kick) // the writer sees dead
	for _, ch := range lost {
		c.h.Lost(ch)
	}
}

// reloadState asks a cluster client to re-read the slot map: a channel was
// lost perhaps because its slot moved.
func (c *Channels) reloadState() {
	if cc, ok := c.rdb.(*redis.ClusterClient); ok {
		cc.ReloadState(c.ctx)
	}
}

func isUnknownCommand(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.Contains(strings.ToLower(re.Error()), "unknown command")
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
