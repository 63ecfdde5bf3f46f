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
// # Running: starts, ends, the running-job cap and the reconciler
//
// (This section is the running path's; the submit path has its own.)
//
// On Redis Cluster no script may touch keys of two hash slots, and an
// attempt's start concerns three: the owner's (cc:owner-running:{ann},
// cc:owner-held:{ann}: the cap), the job's (cc:job:{id} and its events
// and checkpoint: the record) and the heartbeat set's (KeyHeartbeats and
// KeyHeartbeatRuns: the reconciler's). So each operation is a sequence of
// one-slot scripts, and whatever one needs to know of another slot's keys
// (the state of the jobs holding an owner's slots, of the jobs held back)
// is read in Go between two of them, pipelined. The order of the steps is
// what keeps the guarantees:
//
//	start (StartAttempt)
//	  1. owner slot: take a slot (or hold the job back)   ┐ one round
//	     heartbeat slot: the run's first heartbeat         ┘ trip, pipelined
//	     (owner at the cap: read the slot holders' records; an ended
//	     one's slot is free, and step 1 runs again without it)
//	  2. job slot: the record, which has the last word: running, or held
//	     with its reason; or, if it was cancelled, ended or is not
//	     confirmed yet, it is not started
//	  3. only if it does not run: the heartbeat entry and the slot are
//	     given back, and a held job may take the slot (Started.Next)
//	end (SucceedReleasing, FailReleasing, CancelReleasing, HandBack)
//	  1. job slot: the record (a superseded attempt's write changes
//	     nothing and keeps the slot for the current one; a final state
//	     stays final)
//	  2. owner slot: the slot is freed and the owner's held members    ┐ one
//	     listed                                                         │ round
//	     heartbeat slot: the run's entry is removed (Slot.Run)          ┘ trip
//	     (held members listed: Go reads their records; owner slot
//	     again: the startable ones are taken off the held set, as many
//	     as slots are free now)
//
// Why each interleaving is safe:
//
//   - The cap is decided in one owner-slot script: two starts of one
//     owner serialize there, so no more than the cap hold slots (a slot is
//     taken before the record says running, and freed after it stops
//     saying so). A release counts the free slots again in its second
//     half, so a start that took the freed slot in between is not given a
//     second job; and only a held member that this release itself takes
//     off the held set is handed on, so two releases never hand on the
//     same job.
//   - A cancel landing between start steps 1 and 2 is seen by step 2 (the
//     cancel flag is in the record): the job never starts, and step 3
//     gives its slot to the next held job. A job that ended meanwhile is
//     not started either: step 2 checks the state, so final stays final.
//   - The first heartbeat is written before the record says running, so
//     a worker that dies at any point after step 2 leaves a running
//     record with an entry: the reconciler finds it. One that dies
//     between 1 and 2 leaves an entry whose record is not running this
//     run (the reconciler drops it) and a slot the job's re-run is let in
//     on, which otherwise frees at its lease end.
//   - An end records the job first and frees the slot after: a worker that
//     dies in between leaves the slot of an ended job, which the owner's
//     next start at the cap reads as ended and takes, and which frees at
//     its lease end in any case. Freeing first would let a held job start
//     while this one still counts as running.
//   - Heartbeat entries name their run (KeyHeartbeatRuns), and every
//     heartbeat script is conditional on it: the end of a superseded run,
//     or of a start that did not run, removes only its own entry, and a
//     superseded run's heartbeats do not keep the current run's entry
//     looking alive. So these steps need not read the record.
//
// Checkpoints (SaveRunCheckpoint) and log appends are one job-slot script
// each: only the record's current run may save, and every script that
// ends a job (finish, reconcile, a cancelled start) deletes the checkpoint
// in the same script that ends it.
//
// The reconciler's steps, and why its order with Asynq's task (in the
// queue's own slot, asynq:{queue}) can neither lose nor double-run a job,
// are described beside it (reconcile.go, and package worker's reconciler):
// in short, heartbeat slot (still stale, still this run), then Asynq's
// queue slot (the task put back, if Asynq would not run it again), then
// the job slot (the record, if it still runs that attempt and run), then
// the heartbeat entry and the owner's slot.
//
// Cost: a start is two round trips (three commands) where it was one
// script, and an end, with its heartbeat entry, two (three commands) as
// before (the end's script, then the entry's). Only the rarer paths pay
// more: a release that hands held jobs on two more (their records, the
// hand-on), a start at the cap whose slot holders include an ended job two
// more (their records, the slot again), a start that does not run one
// more (its slot and entry given back). TestRunningPathRoundTrips pins the
// common case.
package jobs
