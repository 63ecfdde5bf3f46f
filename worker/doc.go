// Package worker runs claimcheck jobs on Asynq. It owns the job-type
// registry, the handler API (Progress, a streaming result writer, a context
// that is cancelled on cancel or timeout), and the bookkeeping that moves a
// job record through its states:
//
//	queued ──▶ running ──▶ succeeded
//	              │  ▲
//	              ▼  │ (backoff)
//	           retrying ──▶ failed
//	queued/running/retrying ──▶ canceled
//
// The job record in Redis (package jobs) is authoritative for clients;
// Asynq's own task state is an implementation detail of delivery.
//
// Fairness: no owner runs more than Config.MaxRunningJobs jobs at once
// across the fleet. A worker that dequeues a job over its owner's cap hands
// the task straight back to Asynq (not a failure, so no retry is spent; see
// jobs.DeliveryRetries for why Asynq's budget has a spare) and takes the
// next task, so a user with a hundred queued jobs occupies a slot only for
// the moment of each check. The job's record stays queued with a
// hold_reason; when one of the owner's jobs ends, its worker moves the
// owner's oldest held jobs forward (package jobs documents the scripts).
package worker
