package worker

import (
	"context"
	"errors"
	"sync"
)

// ErrShuttingDown is the cause of a handler's context (context.Cause) when
// the worker is shutting down (SIGTERM, Server.Shutdown). The context is
// cancelled at the start of the shutdown grace period
// (Config.ShutdownTimeout), not at its end, so that a handler can save its
// progress (Task.SaveCheckpoint) and return while there is time to: the job
// is then handed back to its queue, spends no retry, and its next attempt
// (on another worker, or this one restarted) starts from Task.Checkpoint.
// A handler that has nothing to save simply returns ctx.Err(). What a
// handler returns after the cancel is never taken as the job's result:
// the next attempt makes it.
var ErrShuttingDown = errors.New("worker shutting down")

// attempts are the handler contexts of the attempts this worker runs, so
// that Shutdown can cancel them all at once.
type attempts struct {
	mu       sync.Mutex
	cancels  map[string]context.CancelCauseFunc
	stopping bool
}

// add keeps an attempt's cancel; an attempt that starts once shutdown has
// begun is cancelled at once.
func (a *attempts) add(id string, cancel context.CancelCauseFunc) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopping {
		cancel(ErrShuttingDown)
		return
	}
	if a.cancels == nil {
		a.cancels = map[string]context.CancelCauseFunc{}
	}
	a.cancels[id] = cancel
}

func (a *attempts) remove(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.cancels, id)
}

// stop cancels every attempt with ErrShuttingDown, and every attempt added
// from now on.
func (a *attempts) stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stopping = true
	for _, cancel := range a.cancels {
		cancel(ErrShuttingDown)
	}
}
