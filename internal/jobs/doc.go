// Package jobs owns the job record: the small Redis hash that tells clients
// what a job is doing (state, progress, attempts, result summary) and the
// catalog of job types with their input schemas.
//
// The catalog checks an input against its type's InputLimits in its own
// linear pass before the schema library sees it (input.go): exact schema
// arithmetic on an unbounded number is what let one tiny body cost a
// second of CPU or crash the library.
//
// The record is authoritative for clients; Asynq's task state is a delivery
// detail. Every transition is one Lua script so that concurrent writers (a
// worker reporting progress, a client cancelling, Asynq retrying) cannot
// interleave into a state that never existed:
//
//	queued ──▶ running ──▶ succeeded
//	   │          │  ▲
//	   │          ▼  │
//	   │       retrying ──▶ failed
//	   └──────────┴──────────▶ canceled
//
// succeeded, failed and canceled are final: a late write from a worker that
// missed its cancellation cannot resurrect a job. A worker's report also
// names its attempt, and is dropped if a newer attempt has started. Every change bumps the
// record's version, which the progress service uses as its ETag, so a client
// that polls an unchanged job costs one HGETALL and no JSON encoding.
//
// A cancel request sets a flag first and is then carried out by whoever sees
// it: the API deletes a task still waiting in Asynq, a worker's next progress
// write (which returns the flag at no extra round trip) or Asynq's
// cancellation message stops a running one, and a worker about to start an
// attempt finds the flag and never runs it.
//
// The same start script enforces the per-owner running-job cap (running.go):
// a job over it keeps its state with a "held" reason instead of running.
package jobs
