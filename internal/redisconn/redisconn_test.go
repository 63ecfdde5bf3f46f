package redisconn_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/redisconn"
)

// replyErr is a Redis error reply, as go-redis returns it.
type replyErr string

func (e replyErr) Error() string { return string(e) }
func (replyErr) RedisError()     {}

// TestUnavailable classifies the errors a Redis client returns: what means
// Redis did not answer is Unavailable (503 at the edge), what shows it
// answered or that the caller left is not.
func TestUnavailable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"missing key", redis.Nil, false},
		{"wrong type reply", replyErr("WRONGTYPE Operation against a key holding the wrong kind of value"), false},
		{"script error", replyErr("ERR user_script:1: boom"), false},
		{"caller cancelled", fmt.Errorf("look up: %w", context.Canceled), false},
		{"plain error", errors.New("disk on fire"), false},
		{"sentinel", fmt.Errorf("x: %w", redisconn.ErrUnavailable), true},
		{"loading", fmt.Errorf("look up api key: %w", replyErr("LOADING Redis is loading the dataset in memory")), true},
		{"masterdown", replyErr("MASTERDOWN Link with MASTER is down"), true},
		{"deadline", fmt.Errorf("get: %w", context.DeadlineExceeded), true},
		{"pool timeout", fmt.Errorf("get: %w", redis.ErrPoolTimeout), true},
		{"closed client", redis.ErrClosed, true},
		{"eof", fmt.Errorf("get: %w", io.EOF), true},
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{"reset", fmt.Errorf("read: %w", syscall.ECONNRESET), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := redisconn.Unavailable(tc.err); got != tc.want {
				t.Fatalf("Unavailable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
