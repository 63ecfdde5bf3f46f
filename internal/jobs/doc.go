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
package jobs
