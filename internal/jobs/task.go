package jobs

import (
	"encoding/json"
	"fmt"
	"regexp"
)

// TaskPayload is what the API puts in an Asynq task and a worker reads back:
// the job id and its input. The job type is the Asynq task type and the job
// id is the Asynq TaskID.
type TaskPayload struct {
	Job string `json:"job"`
	// Owner is the job's owner, so that a worker can count the owner's
	// running jobs in the script that starts the attempt; tasks queued
	// before it was added have none, and the worker reads the record.
	Owner string          `json:"owner,omitempty"`
	Input json.RawMessage `json:"input,omitempty"`
}

// DeliveryRetries is the Asynq MaxRetry to enqueue a job with that may be
// retried maxRetry times: one more. Asynq archives a task whose retries are
// used up before it asks whether an error is a failure at all, so without
// the spare a job held back by the running-job cap on its last attempt (on
// its only one, with max_retry 0) would be archived instead of handed back.
// The spare is never spent on a failure: the worker counts attempts against
// the job's own MaxRetry and ends the job itself when they are used up.
func DeliveryRetries(maxRetry int) int { return maxRetry + 1 }

// Priorities are the queue classes a request picks with "queue" (or its
// friendlier spelling "priority": high, normal, low), with their weights:
// a worker serves critical six times as often as low, and never starves it.
var priorities = []struct {
	class  string
	weight int
}{{"critical", 6}, {"default", 3}, {"low", 1}}

// Queues returns the queue classes with their weights: "critical",
// "default", "low". They are the Asynq queues of DefaultPool; QueueName
// gives a class's queue in another pool.
func Queues() map[string]int { return PoolQueues(DefaultPool) }

// poolName is what a pool may be called: short, lower case, and free of
// the characters that would make a queue name ambiguous.
var poolName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// ValidPool reports why pool is not a valid pool name, or nil.
func ValidPool(pool string) error {
	if !poolName.MatchString(pool) {
		return fmt.Errorf("pool %q: want 1 to 32 of a-z, 0-9, '_' and '-', starting with a letter or digit", pool)
	}
	return nil
}

// QueueName is the Asynq queue of a pool's queue class (critical, default,
// low). Pool "default" keeps the bare class names, so tasks queued before
// pools existed keep running; any other pool's are "<pool>-<class>". No
// two (pool, class) pairs share a queue: the suffix names the class (no
// class name ends another), the rest the pool, and the bare names have no
// '-'. An empty pool is DefaultPool.
func QueueName(pool, class string) string {
	if pool == "" || pool == DefaultPool {
		return class
	}
	return pool + "-" + class
}

// PoolQueues returns the Asynq queues of pool with their weights, what a
// worker serving that pool listens to.
func PoolQueues(pool string) map[string]int {
	qs := make(map[string]int, len(priorities))
	for _, p := range priorities {
		qs[QueueName(pool, p.class)] = p.weight
	}
	return qs
}
