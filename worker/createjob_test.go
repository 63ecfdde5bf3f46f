package worker

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
)

// CreateJob writes nj's record as store.Create does. On a single server it
// is store.Create; on a cluster it writes the record straight into the
// job's slot (queued, or pending with nj.PendingTTL), so that the worker's
// running path is tested there on its own, whatever the create path's
// scripts do. It honours no idempotency key, quota or owner gate.
func CreateJob(ctx context.Context, store *jobs.Store, rdb redis.UniversalClient, nj jobs.NewJob) (*jobs.Job, error) {
	if !redistest.OnCluster() {
		return store.Create(ctx, nj)
	}
	state, ttl := jobs.StateQueued, nj.TTL
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	if nj.PendingTTL > 0 {
		state, ttl = jobs.StatePending, nj.PendingTTL
	}
	key := jobs.JobKey(nj.ID)
	_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, "id", nj.ID, "type", nj.Type, "owner", nj.Owner, "queue", nj.Queue, "state", string(state),
			"created", strconv.FormatInt(time.Now().UnixMilli(), 10), "attempts", 0, "max_retry", nj.MaxRetry,
			"timeout_ms", nj.Timeout.Milliseconds(), "version", 1)
		p.PExpire(ctx, key, ttl)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("create job %s: %w", nj.ID, err)
	}
	return store.Get(ctx, nj.ID)
}
