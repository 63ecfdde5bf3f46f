package jobs

import "encoding/json"

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

// Queues returns the Asynq queues claimcheck uses with their weights; a
// request's "priority" or "queue" picks one.
func Queues() map[string]int { return map[string]int{"critical": 6, "default": 3, "low": 1} }
