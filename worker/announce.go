package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/registry"
)

// Routing and announcing. A worker takes jobs only from the Asynq queues of
// its pools (jobs.PoolQueues), so it never dequeues a job of a type it
// cannot run; and it announces its own types, and only those, in the live
// registry the api validates submissions against (package
// internal/registry documents the protocol). Start announces before it
// takes a job, and refuses to start when a live worker announces one of its
// type names with a different spec; Shutdown withdraws the worker at once.

// ErrTypeConflict is wrapped by Start's error when a live worker announces
// one of this worker's type names with a different spec. The message names
// the type, both spec digests and the live worker.
var ErrTypeConflict = errors.New("job type announced with a different spec")

// pools resolves the pools a worker serves: Config.Pools when set (every
// type's pool must be among them), else the pools of its types. Each is
// a valid pool name; the result is sorted.
func pools(configured []string, types []Type) ([]string, error) {
	var typePools []string
	for _, t := range types {
		p := t.Pool
		if p == "" {
			p = DefaultPool
		}
		if err := jobs.ValidPool(p); err != nil {
			return nil, fmt.Errorf("worker: job type %q: %w", t.Name, err)
		}
		typePools = append(typePools, p)
	}
	out := configured
	if len(out) == 0 {
		out = typePools
	}
	for _, p := range configured {
		if err := jobs.ValidPool(p); err != nil {
			return nil, fmt.Errorf("worker: Config.Pools: %w", err)
		}
	}
	for _, p := range configured {
		// Its queues would hold jobs of types this worker has no handler
		// for: it would dequeue work it cannot run.
		if !slices.Contains(typePools, p) {
			return nil, fmt.Errorf("worker: pool %q has none of this worker's types; serving it would dequeue jobs this worker cannot run", p)
		}
	}
	for i, p := range typePools {
		if !slices.Contains(out, p) {
			return nil, fmt.Errorf("worker: job type %q is in pool %q, which this worker does not serve (pools: %v)", types[i].Name, p, configured)
		}
	}
	out = slices.Clone(out)
	slices.Sort(out)
	return slices.Compact(out), nil
}

// queues is what the Asynq server listens to: the queues of every pool.
func queues(pools []string) map[string]int {
	qs := map[string]int{}
	for _, p := range pools {
		for q, w := range jobs.PoolQueues(p) {
			qs[q] = w
		}
	}
	return qs
}

// newAnnouncer prepares the announcement of the worker's types.
func (s *Server) newAnnouncer(rdb redis.UniversalClient, specs []jobs.TypeSpec) error {
	a, err := registry.NewAnnouncer(rdb, registry.Config{Logger: s.log, RedisAway: s.redisAway}, specs...)
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	s.announcer = a
	return nil
}

// announce puts the worker's types in the registry, or says why it may not.
func (s *Server) announce() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.announcer.Start(ctx); err != nil {
		if errors.Is(err, registry.ErrConflict) {
			// The registry's message says it all; ErrTypeConflict is
			// the public name callers test for.
			return fmt.Errorf("worker %s refuses to start: %w", s.announcer.WorkerID(), typeConflict{err})
		}
		return fmt.Errorf("worker: %w", err)
	}
	return nil
}

// typeConflict is a registry conflict as the public ErrTypeConflict.
type typeConflict struct{ error }

func (e typeConflict) Is(target error) bool { return target == ErrTypeConflict }
func (e typeConflict) Unwrap() error        { return e.error }

// withdraw takes the worker out of the registry's counts; best effort: if
// Redis is unreachable, its heartbeat runs out instead.
func (s *Server) withdraw() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.announcer.Stop(ctx); err != nil {
		s.log.Warn("job types not withdrawn; they drop out when their heartbeat runs out", "err", err)
	}
}

// ID is the worker's id in the registry (hostname-pid-random), as a
// conflicting worker's error names it.
func (s *Server) ID() string { return s.announcer.WorkerID() }

// Pools lists the pools whose queues the worker takes jobs from.
func (s *Server) Pools() []string { return slices.Clone(s.pools) }

// onlyServed hands a task of a type this worker does not run back to its
// queue instead of failing it: a pool's workers that serve different type
// sets (a misconfiguration, or a rolling deploy adding a type) share its
// queues, and the job should wait for a worker that runs it, not fail.
// Handing back is not a failure, so no retry is spent (see heldError).
func (s *Server) onlyServed(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		if _, ok := s.types[t.Type()]; !ok {
			s.log.Warn("dequeued a job type this worker does not run; handed back (every worker of a pool should serve all its types)",
				"type", t.Type(), "pools", s.pools)
			return &heldError{delay: s.cfg.HoldDelay(0)}
		}
		return next.ProcessTask(ctx, t)
	})
}
