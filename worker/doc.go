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
package worker
