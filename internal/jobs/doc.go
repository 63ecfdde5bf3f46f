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
// # Submission, quota and block, one slot at a time
//
// Every script touches one Redis Cluster slot: the owner's (keyslot.Tag of
// the owner: the owner gate, which is the user record, the idempotency
// claims, the active set, the index) or the job's (its record). An
// operation that needs both is a sequence of such scripts whose order
// keeps its guarantee; what it must know of the other slot it reads in Go
// between scripts (pipelined: one round trip per node). The job's record
// is the single commit point of a submission.
//
//	owner slot   reserve ──────────────── admit ────────────────
//	               gate, claim, quota      gate, quota, +active, +index
//	job slot     write pending ─ (task) ─────────────── flip ─▶ queued
//	                                       void ◀── whoever needs it refused
//
// Submit (Create, then ConfirmJob). Reserve, in the owner's slot, refuses
// a blocked owner, answers an idempotency claim already made (replay), and
// makes the claim with the pending TTL; beside it, in the same pipelined
// round trip, write puts the record in the job's slot as pending (never
// listed, counted or run). Once the task is enqueued, admit, in the
// owner's slot, checks the gate again, checks the quota, adds the id to
// the active set and the index and extends the claim to the job's TTL;
// then flip, in the job's slot, turns a pending record queued: the
// commit, after which the job is accepted, and the only step whose lost
// reply leaves the outcome unknown. Any interleaving is safe because each
// guarantee is decided by one script that sees everything it depends on:
// the gate is read in admit, after the record and the task exist, so a
// block that lands before admit refuses the submission there and one that
// lands after admit finds the id in the active set (below); the quota is
// decided in admit, where every member counts unless Go showed it ended;
// the claim is made in reserve, in the slot where every other request
// with the same key looks for it. The index and the active set gain an id
// only in admit, after its record was written, so a member whose record is
// missing has expired or been refused, never "not written yet", and List
// may prune it. A claim can be seen before its record is (reserve and
// write go side by side): the api answers such a replay "in progress". A
// crash leaves at most: a claim and a pending record (both expire with
// the pending TTL; a retry with the key completes the submission); or an
// admitted, never flipped, tentative job, which is not listed (List shows
// no pending record), never runs (workers wait on pending), and is voided
// by the owner's next admission that would be over quota because of it,
// or expires. A refused or failed submission is discarded: record first
// (its slot decides whether it was confirmed), then its place in the
// owner's slot and its claim, so a retry starts clean.
//
// Quota. Admit, finding the active set full, answers with its members; Go
// reads their records (HMGET, pipelined) and calls admit again with the
// members that ended, or whose record is gone, which admit drops before
// counting: one that ended cannot come back, and one that joined since Go
// looked is counted. Tentative members (pending records: under way
// between their admit and their flip, or left by a crash) would make the
// quota unenforceable if they were ignored and unavailable for ever if
// they counted, so the over-quota admission voids as many as it needs,
// each in its own slot: void turns a pending record into a canceled
// tombstone (field "void") that no flip makes queued and no reader shows.
// Void and flip race atomically in the job's slot: if the flip came
// first, the member counts and the newcomer is over quota; if the void
// came first, that submission's flip answers refused (QuotaError) and it
// is discarded. Either way at most MaxActive jobs are queued or running.
// The reserve's check is the same look, without voiding (tentative
// members are not counted there), so most refusals come before a task is
// enqueued. Each step looks again a bounded number of times.
//
// Block with --cancel-jobs (CancelOwnerJobs). The block itself sets the
// gate in the owner's slot (package identity); afterwards CancelOwnerJobs
// reads the active set and, for each member, voids it if it is still
// pending (a submission admitted before the block and not yet flipped:
// its flip then answers ErrOwnerBlocked) or cancels it as any job. A
// submission whose admit comes after the block meets the gate there. So
// no interleaving lets a submission under way at the block become a
// queued job: it is refused, or it is in the active set when the set is
// read, and cancelled. A crash of the block command between its steps
// leaves jobs uncancelled (run it again); it can never leave a job
// half-cancelled.
//
// Reads. Get, Exist, List and Active read records with commands (HGETALL,
// EXISTS) pipelined across slots, one round trip per node holding them;
// the index and the active set are read in the owner's slot. A record
// missing from List's page leaves the index there and then. No product
// code scans keys (KEYS and SCAN see one node of a cluster).
//
// Cancel and revoke. RequestCancel and RevokeTokens are scripts on the
// job's record alone. Revoking all of an owner's job tokens (after a
// block) walks the owner's index and then the active set, which also
// holds the submissions admitted but not flipped (unlisted), and raises
// each job's epoch in its own slot; the token such a submission is then
// answered with carries the epoch it read at create, below the raised
// one, and is refused. A submission admitted after the block meets the
// gate. A crash mid-walk leaves some jobs' tokens working: run it again.
// CancelJob of a job whose webhook wants the completed event pushes its id
// to the webhook outbox (KeyWebhookOutbox, a slot of its own) before it
// deletes the task: the cancelling process cannot enqueue that event, a
// worker's deliverer does (package delivery).
//
// # Running: starts, ends, the running-job cap and the reconciler
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
