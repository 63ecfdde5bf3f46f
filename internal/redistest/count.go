package redistest

import (
	"context"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Counter is a go-redis hook that records every command its client sends,
// pipelined ones included: what a test or benchmark needs to count one
// client's Redis work when other clients share the server. Add it with
// client.AddHook(counter).
type Counter struct {
	mu   sync.Mutex
	cmds []string
}

// Count is how many commands were sent.
func (c *Counter) Count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cmds)
}

// Commands returns each command sent, as its arguments joined by spaces.
func (c *Counter) Commands() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.cmds...)
}

// Reset forgets what was counted.
func (c *Counter) Reset() {
	c.mu.Lock()
	c.cmds = nil
	c.mu.Unlock()
}

func (c *Counter) record(cmds ...redis.Cmder) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cmd := range cmds {
		parts := make([]string, 0, len(cmd.Args()))
		for _, a := range cmd.Args() {
			if s, ok := a.(string); ok {
				parts = append(parts, s)
			} else {
				parts = append(parts, "?")
			}
		}
		c.cmds = append(c.cmds, strings.Join(parts, " "))
	}
}

// DialHook implements redis.Hook.
func (c *Counter) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook implements redis.Hook.
func (c *Counter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.record(cmd)
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook implements redis.Hook.
func (c *Counter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.record(cmds...)
		return next(ctx, cmds)
	}
}

var _ redis.Hook = (*Counter)(nil)
