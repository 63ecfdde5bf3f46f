package progress

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/claimcheck/claimcheck/api/problem"
	"github.com/claimcheck/claimcheck/internal/metrics"
)

// StreamLimits caps the event streams and waiting long-polls ("watchers")
// this process holds open at once. Zero fields take the defaults below; a
// negative field means no cap.
//
// A watcher costs a connection (a file descriptor) and a little memory for
// as long as it is open, so one token holder could otherwise exhaust the
// process's file limit. The counts are per process, in memory: the resource
// they protect is per process, and a count shared in Redis would cost round
// trips on every open and close and leases to survive a crashed process. A
// fleet of N progress processes therefore allows N times each cap.
//
// A closed stream is noticed at its next write (a heartbeat at the latest),
// so a client that reconnects at once may briefly count twice; the caps
// leave room for that.
type StreamLimits struct {
	// PerToken caps watchers per job token (its jti): 4, enough for a
	// client, a browser tab and a reconnect racing the old connection,
	// while stopping one token from holding hundreds. (Tokens without a
	// jti, which the api never mints, all share one count.)
	PerToken int
	// PerJob caps watchers of one job, whatever their tokens: 32, for a
	// job whose read-only token is shared with a team or a dashboard.
	PerJob int
	// PerAddress caps watchers per client address (gin's ClientIP, which
	// believes forwarded headers only from --trusted-proxy): 64, for a
	// whole office behind one NAT watching its jobs. Behind a proxy that is
	// not trusted every client shares the proxy's address, and this cap.
	PerAddress int
}

// Default stream limits.
const (
	DefaultStreamsPerToken   = 4
	DefaultStreamsPerJob     = 32
	DefaultStreamsPerAddress = 64
)

func (l StreamLimits) withDefaults() StreamLimits {
	if l.PerToken == 0 {
		l.PerToken = DefaultStreamsPerToken
	}
	if l.PerJob == 0 {
		l.PerJob = DefaultStreamsPerJob
	}
	if l.PerAddress == 0 {
		l.PerAddress = DefaultStreamsPerAddress
	}
	return l
}

// streamCaps counts open watchers by token, job and address.
type streamCaps struct {
	limits     StreamLimits
	retryAfter string

	mu     sync.Mutex
	counts [3]map[string]int // by token, job, address
}

var capReasons = [3]string{"token", "job", "address"}

func newStreamCaps(l StreamLimits, heartbeat time.Duration) *streamCaps {
	c := &streamCaps{limits: l.withDefaults(), retryAfter: strconv.Itoa(max(1, int(heartbeat.Round(time.Second)/time.Second)))}
	for i := range c.counts {
		c.counts[i] = map[string]int{}
	}
	return c
}

// acquire takes a slot for a watcher of job by token jti from addr, or
// answers the 429 to send. release gives the slot back; calling it more
// than once is harmless.
func (c *streamCaps) acquire(jti, job, addr string) (release func(), refused error) {
	keys := [3]string{jti, job, addr}
	caps := [3]int{c.limits.PerToken, c.limits.PerJob, c.limits.PerAddress}
	c.mu.Lock()
	for i, k := range keys {
		if caps[i] >= 0 && c.counts[i][k] >= caps[i] {
			c.mu.Unlock()
			metrics.StreamsRefused.WithLabelValues(capReasons[i]).Inc()
			return nil, problem.New(http.StatusTooManyRequests, "too-many-streams", "Too many event streams",
				"at most "+strconv.Itoa(caps[i])+" event streams and waiting long-polls per "+capReasons[i]+
					" are open at once; close one, or retry after Retry-After seconds").
				With("limit", caps[i]).With("cap", capReasons[i]).WithHeader("Retry-After", c.retryAfter)
		}
	}
	for i, k := range keys {
		c.counts[i][k]++
	}
	c.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			for i, k := range keys {
				if c.counts[i][k]--; c.counts[i][k] <= 0 {
					delete(c.counts[i], k)
				}
			}
			c.mu.Unlock()
		})
	}, nil
}
