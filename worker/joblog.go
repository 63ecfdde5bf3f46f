package worker

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
)

// Job logs leave the worker in batches, one script per batch
// (jobs.Store.AppendLog), never a round trip per line. A handler's Logf
// only appends to the attempt's buffer; one goroutine per attempt flushes
// it:
//
//   - at most once per logFlushInterval, at most logBatchLines lines or
//     logBatchBytes bytes per flush: however fast a job writes, it costs
//     Redis at most five scripts a second (5 000 lines, 320 KiB: about 5 %
//     of a Redis core at the most, docs/BENCHMARKS.md) and the progress
//     fleet five tiny wake-ups a second (followers read the lines
//     themselves);
//   - the buffer holds at most the log's own caps (jobs.MaxLogLines lines,
//     jobs.MaxLogBytes bytes): when a job writes faster than that drains
//     (or Redis is slow or away), the oldest unsent lines are dropped and
//     counted, and the next batch starts with a line saying how many. The
//     log keeps its newest lines either way, a worker's memory per attempt
//     stays bounded, and Logf never blocks the handler;
//   - the attempt's end flushes everything left, at once, before the
//     attempt's outcome is recorded, so a client that sees the job end can
//     read every line it kept.
const (
	logFlushInterval = 200 * time.Millisecond
	logBatchLines    = 1000
	logBatchBytes    = 64 << 10
	// logCloseTimeout bounds the final flush: a job's outcome is not held
	// hostage by its log.
	logCloseTimeout = 5 * time.Second
)

// logAppender is the store's log write, for tests to stand in front of.
type logAppender interface {
	AppendLog(ctx context.Context, id string, lines []jobs.LogLine, dropped int) (int64, error)
}

// jobLog is one attempt's batching log writer.
type jobLog struct {
	store logAppender
	job   string
	log   *slog.Logger
	now   func() time.Time

	mu      sync.Mutex
	pending []jobs.LogLine
	bytes   int
	dropped int  // lines dropped from pending since the last flush
	closed  bool // no more lines

	wake    chan struct{}
	stop    chan struct{}
	stopped chan struct{}
	warned  bool // one warning per attempt about failed flushes
}

// startJobLog starts the writer of one attempt's log; close it before the
// attempt's outcome is recorded.
func startJobLog(store logAppender, job string, log *slog.Logger) *jobLog {
	l := &jobLog{store: store, job: job, log: log, now: time.Now,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{})}
	go l.run()
	return l
}

// line keeps one line (Task.log). Safe for concurrent use; never blocks on
// Redis.
func (l *jobLog) line(text string) {
	text = jobs.CutLogLine(text)
	now := l.now()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.pending = append(l.pending, jobs.LogLine{Time: now, Text: text})
	l.bytes += len(text)
	for len(l.pending) > jobs.MaxLogLines || l.bytes > jobs.MaxLogBytes {
		l.bytes -= len(l.pending[0].Text)
		l.pending[0] = jobs.LogLine{}
		l.pending = l.pending[1:]
		l.dropped++
	}
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *jobLog) run() {
	defer close(l.stopped)
	tick := time.NewTimer(0)
	defer tick.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-l.wake:
		}
		// Wait out the interval since the last flush: lines written
		// meanwhile join this batch.
		select {
		case <-l.stop:
			return
		case <-tick.C:
		}
		// A batch on its way when close is called is let finish, not
		// cancelled: a cancelled write may still have reached Redis, and
		// sending it again from close would store its lines twice. The
		// Redis client's own call cap bounds how long close waits for it.
		ctx, cancel := context.WithTimeout(context.Background(), logCloseTimeout)
		more := l.flush(ctx, logBatchLines, logBatchBytes)
		cancel()
		if more {
			l.signal()
		}
		tick.Reset(logFlushInterval)
	}
}

func (l *jobLog) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// flush sends up to maxLines lines / maxBytes bytes; more reports lines
// left behind. A failed batch is put back (the buffer's caps still apply).
func (l *jobLog) flush(ctx context.Context, maxLines, maxBytes int) (more bool) {
	l.mu.Lock()
	n, size := 0, 0
	for n < len(l.pending) && n < maxLines && (n == 0 || size+len(l.pending[n].Text) <= maxBytes) {
		size += len(l.pending[n].Text)
		n++
	}
	batch := make([]jobs.LogLine, n)
	copy(batch, l.pending[:n])
	dropped := l.dropped
	l.pending = l.pending[n:]
	l.bytes -= size
	l.dropped = 0
	l.mu.Unlock()
	if n == 0 && dropped == 0 {
		return false
	}
	_, err := l.store.AppendLog(ctx, l.job, batch, dropped)
	if err != nil {
		if errors.Is(err, jobs.ErrGone) {
			return false // nobody will read it
		}
		if !l.warned && ctx.Err() == nil {
			l.warned = true
			l.log.Warn("job log lines not stored yet; retrying", "err", err)
		}
		l.mu.Lock()
		l.pending = append(batch, l.pending...)
		l.bytes += size
		l.dropped += dropped
		for len(l.pending) > jobs.MaxLogLines || l.bytes > jobs.MaxLogBytes {
			l.bytes -= len(l.pending[0].Text)
			l.pending = l.pending[1:]
			l.dropped++
		}
		l.mu.Unlock()
		return false // the next line, or close, tries again
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.pending) > 0 || l.dropped > 0
}

// close stops taking lines and flushes what is left, in batches with no
// pause between them, within logCloseTimeout.
func (l *jobLog) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	close(l.stop)
	<-l.stopped
	ctx, cancel := context.WithTimeout(context.Background(), logCloseTimeout)
	defer cancel()
	for ctx.Err() == nil {
		if !l.flush(ctx, logBatchLines, logBatchBytes) {
			l.mu.Lock()
			left := len(l.pending) + l.dropped
			l.mu.Unlock()
			if left == 0 {
				return
			}
			if err := sleepCtx(ctx, logFlushInterval); err != nil {
				break
			}
		}
	}
	l.mu.Lock()
	lost := len(l.pending) + l.dropped
	l.mu.Unlock()
	if lost > 0 {
		l.log.Warn("job log lines lost: Redis did not take them", "lines", lost)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
