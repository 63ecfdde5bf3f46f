// Package worker is claimcheck's SDK for job types, and the runtime that
// runs them on Asynq. Another Go module can import it: no internal/ type
// appears in its exported API (a test in package archtest holds it to that).
//
// # Writing a job type
//
// A Type is what the API validates a submission against and what a worker
// runs: Name, Description, InputSchema (JSON Schema 2020-12), ContentType of
// the result, Timeout/MaxTimeout, MaxRetry, MaxResultBytes, Pool and the
// Handler. A Handler runs one attempt with a *Task:
//
//   - Task.Decode(&in) unmarshals the input (already schema-checked by the
//     API; unknown fields are refused again here);
//   - Task.Progress(percent, message) reports how far it is (one Redis
//     write each: per step, not per loop iteration);
//   - Task.Result(contentType) opens the result as an io.Writer that
//     streams to the result store; it becomes visible when the handler
//     returns nil;
//   - Task.Logf / Task.Logger() add lines to the job's log, which the
//     job-token holder reads from the progress service;
//   - Task.SaveCheckpoint(b) keeps where the job got to, and
//     Task.Checkpoint() reads it back in the next attempt.
//
// The handler's ctx ends on cancel, timeout, or the worker's shutdown: at
// its start, with context.Cause(ctx) == ErrShuttingDown, so that the
// handler can save a checkpoint and return; the job is then queued again
// with no retry spent, and goes on from the checkpoint. An error fails the attempt
// and is retried with backoff up to MaxRetry; wrap ErrPermanent to fail at
// once. A panic fails the job and leaves the worker running. Type.Validate
// and RunLocal let a type's own tests run it without Redis.
//
// # Running it
//
// Main(types...) is a whole worker process: it reads the same flags and
// environment as `claimcheck worker` (BindFlags: REDIS_URL, --results-dir or --results-url,
// --concurrency, --pools, --types FILE, --metrics-addr, …; -h lists them),
// serves until SIGINT or SIGTERM and shuts down gracefully. A main.go is
// one line: func main() { worker.Main(myType()) }. New(cfg, rdb, types...)
// is the lower level, for embedding a worker in a program of your own:
// Start it and Shutdown it yourself.
//
// # Result receipts
//
// A worker with receipt keys (Main and `claimcheck worker` load them from
// --receipt-key-dir, DATA_DIR/keys/workers by default, creating them on
// first use; with New, Config.ReceiptKeys) signs a receipt for every job
// it runs to success (tokens.ReceiptClaims: type, spec digest, input and
// result digests, attempt times, worker id), stored with the success in
// one script and served at GET /v1/jobs/{id}/receipt. Start publishes the
// keys' public halves for the api's JWKS. A worker made with New and no
// ReceiptKeys runs jobs the same and signs no receipts.
//
// # Pools
//
// Each Type names a Pool ("default" when empty). Workers serving different
// hardware share one Redis: a job goes to the queues of its type's pool,
// and a worker listens only to the queues of its pools (Config.Pools;
// default the pools of its types), so a GPU box serving "render" never
// dequeues a CPU box's "primes".
//
// # Job states
//
// The runtime moves a job record through its states:
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
