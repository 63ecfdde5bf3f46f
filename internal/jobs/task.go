package jobs

import "encoding/json"

// TaskPayload is what the API puts in an Asynq task and a worker reads back:
// the job id and its input. The job type is the Asynq task type and the job
// id is the Asynq TaskID.
type TaskPayload struct {
	Job   string          `json:"job"`
	Input json.RawMessage `json:"input,omitempty"`
}

// Queues returns the Asynq queues claimcheck uses with their weights; a
// request's "priority" or "queue" picks one.
func Queues() map[string]int { return map[string]int{"critical": 6, "default": 3, "low": 1} }
