package jobs

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/claimcheck/claimcheck/internal/webhook"
)

// State is where a job is in its life.
type State string

// The job states, exactly as clients see them.
const (
	// StatePending is a job whose submission is not complete: its record
	// is written but its task may not be enqueued yet. No client sees it
	// (it is neither listed nor counted, and no token names it); it becomes
	// queued with Store.Confirm or expires on its own.
	StatePending   State = "pending"
	StateQueued    State = "queued"
	StateRunning   State = "running"
	StateRetrying  State = "retrying"
	StateSucceeded State = "succeeded"
	StateFailed    State = "failed"
	StateCanceled  State = "canceled"
)

// Final reports whether no further transition can happen.
func (s State) Final() bool {
	return s == StateSucceeded || s == StateFailed || s == StateCanceled
}

// Errors the store returns; the HTTP layer maps them to problem types.
var (
	ErrNotFound    = errors.New("job not found")
	ErrNotFinished = errors.New("job not finished")
	ErrFinished    = errors.New("job already finished")
	ErrExists      = errors.New("job already exists")
	ErrQuota       = errors.New("active job quota reached")
	// ErrNotConfirmed is a confirm that failed before its commit: the job
	// is still pending, and will never run unless confirmed again.
	ErrNotConfirmed = errors.New("job not confirmed")
	// ErrOwnerBlocked refuses a job whose owner was blocked (NewJob.OwnerGate).
	ErrOwnerBlocked = errors.New("job owner is blocked")
	// ErrTokenRevoked means the job token's epoch is below the job's: its
	// tokens were revoked after it was minted.
	ErrTokenRevoked = errors.New("job token revoked")
)

// Job is a job record as clients see it.
type Job struct {
	ID         string     `json:"id"`
	Type       string     `json:"type"`
	State      State      `json:"state"`
	Progress   Progress   `json:"progress"`
	Attempts   int        `json:"attempts"`
	MaxRetry   int        `json:"max_retry"`
	Queue      string     `json:"queue"`
	CreatedAt  time.Time  `json:"created_at"`
	StartedAt  *time.Time `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
	Error      *string    `json:"error"`
	Result     *Result    `json:"result"`
	// HoldReason, while the job waits because its owner already has as
	// many jobs running as the fleet allows one owner, says so; the job
	// keeps its state (queued, or retrying between attempts) meanwhile.
	HoldReason *string `json:"hold_reason"`

	// Owner is the user id of whoever submitted the job. The progress
	// service never shows or uses it.
	Owner string `json:"-"`
	// Timeout is the per-attempt time limit.
	Timeout time.Duration `json:"-"`
	// Version increments with every change; it is the ETag.
	Version int64 `json:"-"`
	// CancelRequested is set from the cancel request until the job ends.
	CancelRequested bool `json:"-"`
	// TokenEpoch is the lowest epoch a job token must carry; raising it
	// revokes every token minted before (see Store.RevokeTokens).
	TokenEpoch int64 `json:"-"`
	// Webhook is the job's webhook subscription (nil: none). Its URL may
	// hold the receiver's own secret, so the record's JSON never shows it.
	Webhook *webhook.Spec `json:"-"`
}

// Progress is how far a job says it is.
type Progress struct {
	Percent   float64    `json:"percent"`
	Message   string     `json:"message"`
	UpdatedAt *time.Time `json:"updated_at"`
}

// Result summarises a finished job's output, which lives in the blob store.
type Result struct {
	ContentType string `json:"content_type"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"`
}

// Field names of the record hash. Short and fixed: they are read on every poll.
const (
	fID         = "id"
	fType       = "type"
	fOwner      = "owner"
	fQueue      = "queue"
	fState      = "state"
	fCreated    = "created"
	fStarted    = "started"
	fFinished   = "finished"
	fAttempts   = "attempts"
	fMaxRetry   = "max_retry"
	fTimeout    = "timeout_ms"
	fPercent    = "pct"
	fMessage    = "msg"
	fProgressAt = "progress_at"
	fError      = "error"
	fResultType = "result_type"
	fResultSize = "result_size"
	fResultSHA  = "result_sha"
	fVersion    = "version"
	fCancel     = "cancel"
	fEpoch      = "epoch"
	fHeld       = "held"
	// fVoid marks a pending record refused after it was written (its
	// owner blocked, or over quota): a canceled tombstone that is no job.
	fVoid = "void"
	// fClaim is the key of the idempotency claim a pending record was
	// created under, so whoever refuses it can release the claim.
	fClaim = "claim"
	// fWebhook holds the job's webhook.Spec as JSON.
	fWebhook = "wh"
	// fOnceLinks counts the one-time links minted for the job (CountOnceLink).
	fOnceLinks = "once_links"
)

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

func parseMS(s string) *time.Time {
	if s == "" {
		return nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return nil
	}
	t := time.UnixMilli(n).UTC()
	return &t
}

// fromHash builds a Job from HGETALL output.
func fromHash(h map[string]string) (*Job, error) {
	if len(h) == 0 || h[fID] == "" || h[fVoid] != "" {
		return nil, ErrNotFound
	}
	j := &Job{
		ID:              h[fID],
		Type:            h[fType],
		Owner:           h[fOwner],
		Queue:           h[fQueue],
		State:           State(h[fState]),
		StartedAt:       parseMS(h[fStarted]),
		FinishedAt:      parseMS(h[fFinished]),
		CancelRequested: h[fCancel] == "1",
		TokenEpoch:      atoi64(h[fEpoch]),
	}
	if c := parseMS(h[fCreated]); c != nil {
		j.CreatedAt = *c
	}
	var err error
	atoi := func(field string) int64 {
		s := h[field]
		if s == "" || err != nil {
			return 0
		}
		var n int64
		n, err = strconv.ParseInt(s, 10, 64)
		return n
	}
	j.Attempts = int(atoi(fAttempts))
	j.MaxRetry = int(atoi(fMaxRetry))
	j.Timeout = time.Duration(atoi(fTimeout)) * time.Millisecond
	j.Version = atoi(fVersion)
	if err != nil {
		return nil, fmt.Errorf("job %s: corrupt record: %w", j.ID, err)
	}
	if s := h[fPercent]; s != "" {
		j.Progress.Percent, _ = strconv.ParseFloat(s, 64)
	}
	j.Progress.Message = h[fMessage]
	j.Progress.UpdatedAt = parseMS(h[fProgressAt])
	if e, ok := h[fError]; ok && e != "" {
		j.Error = &e
	}
	if r := h[fHeld]; r != "" {
		j.HoldReason = &r
	}
	if ct := h[fResultType]; ct != "" {
		size, _ := strconv.ParseInt(h[fResultSize], 10, 64)
		j.Result = &Result{ContentType: ct, Size: size, SHA256: h[fResultSHA]}
	}
	if w := h[fWebhook]; w != "" {
		j.Webhook = &webhook.Spec{}
		if err := json.Unmarshal([]byte(w), j.Webhook); err != nil {
			return nil, fmt.Errorf("job %s: corrupt webhook: %w", j.ID, err)
		}
	}
	return j, nil
}

// ETag is the record's entity tag: it changes exactly when the record does.
func (j *Job) ETag() string { return ETag(j.ID, j.Version) }

// ETag formats the entity tag of job id at version v.
func ETag(id string, v int64) string {
	return `"` + id + "." + strconv.FormatInt(v, 10) + `"`
}

func atoi64(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// CheckEpoch refuses a token minted at tokenEpoch for this job if the job's
// tokens were revoked since.
func (j *Job) CheckEpoch(tokenEpoch int64) error {
	if tokenEpoch < j.TokenEpoch {
		return ErrTokenRevoked
	}
	return nil
}
