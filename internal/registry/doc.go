// Package registry is the live catalog of job types: workers announce the
// types they run in Redis, and the api validates submissions against those
// announcements instead of code compiled into it, so `claimcheck api`
// runs with no job type linked in and learns a new type when its first
// worker starts.
//
// # Keys (keys.go; all in one cluster slot, hash tag {reg})
//
//	cc:{reg}:types          zset  type name → last announced or withdrawn (Unix ms)
//	cc:{reg}:type:<name>    hash  digest, spec (canonical JSON); expires Forget after the last heartbeat
//	cc:{reg}:workers:<name> zset  worker id → when its heartbeat runs out (Unix ms)
//	cc:{reg}:version        counter, bumped when a spec not announced before is written
//
// # Protocol
//
// A worker (Announcer) announces only its own types, in one script call
// per heartbeat (Heartbeat, 5s) whatever the number of types: its idle
// Redis cost does not grow with the fleet. Each announcement carries the
// type's spec (name, description, input schema, limits, pool, content
// type, timeouts, retries, result cap) and the SHA-256 digest of its
// canonical JSON, under the worker's id (hostname-pid-random). A worker
// stays counted TTL (15s) past its last heartbeat; Stop withdraws it at
// once. Clocks of workers and apis should agree to well within TTL.
//
// Conflicts: a worker may announce a name whose hash holds another digest
// only when no other live worker is in that type's set. Start is strict: on
// a conflict it writes nothing and returns a *ConflictError naming the
// type, both digests and the live worker, and the worker refuses to start.
// The check and the write are one Lua script, so two newcomers cannot both
// pass it. Many workers with the same digest are simply counted. A spec
// may change once its old workers are gone (a rolling restart with a
// changed schema needs the old workers stopped first, or a new name).
//
// Per type:
//
//	             announce (same digest, or no live worker)
//	unknown ─────────────────────────────────▶ served (workers ≥ 1)
//	   ▲                                        │  ▲
//	   │ Forget (24h) after the                 │  │ a worker announces
//	   │ last heartbeat                         ▼  │
//	   └───────────────────────────────── idle (workers: 0)
//	                                   last worker withdrew, or its TTL ran out
//
// An idle type is still known: submissions are accepted and queued, and
// run when a worker of its pool returns (the job's deadline, MaxQueueWait,
// bounds the wait). A forgotten type is unknown again: 422
// unknown-job-type, listing the known ones.
//
// # The api's cache (Reader)
//
// Reader reads on demand, never in the background: when its view is older
// than Interval (1s), and when asked for a type it does not hold, at most
// once per UnknownInterval (100ms) it GETs the version and reads the whole
// registry only if a spec was announced since its last read. So a type
// announced a moment ago (dev mode's in-process worker, a new deploy) is
// accepted at once, and a flood of made-up names costs at most one GET
// per 100ms and no read. A read is one round trip of GET version and
// ZRANGEBYSCORE, one pipelined round trip of HGET digest and ZCOUNT per
// type, and, only for a digest not seen before, its spec (whose schema is
// then compiled once). When Redis fails, the last view stays in use.
//
// What the registry does not do: route jobs (package jobs names a pool's
// queues; workers listen to their pools) or run anything.
package registry
