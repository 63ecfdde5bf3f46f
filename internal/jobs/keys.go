package jobs

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"

	"github.com/claimcheck/claimcheck/internal/keyslot"
)

// jobIDFrom is where the id starts in a JobKey, for string.sub in a script.
var jobIDFrom = strconv.Itoa(len(KeyPrefixJob) + 2)

// Every Redis key this package touches is built here, so the ACL patterns in
// compose (the progress service may read cc:job:*) can be read off one file.
//
// Keys carry hash tags (package keyslot): a job's keys are all in the slot
// of "{<job id>}", an owner's in the slot of keyslot.Tag(owner), the same
// slot as the owner's user record in package identity.
const (
	// KeyPrefixJob prefixes job records: a hash per job, "cc:job:{<id>}".
	KeyPrefixJob = "cc:job:"
	// KeyPrefixIdempotency prefixes Idempotency-Key claims: a string per
	// (owner, key) pair holding "<job id> <body hash>".
	KeyPrefixIdempotency = "cc:idem:"
	// KeySuffixEvents follows a job record's key for the job's event log:
	// a stream capped at about 256 entries, expiring with the record.
	KeySuffixEvents = ":events"
	// KeySuffixLog follows a job record's key for the job's log: a stream
	// whose entry ids are "<line number>-0" with fields "t" (Unix ms, when
	// the line was written) and "l" (the line), capped at MaxLogLines and
	// MaxLogBytes by dropping its oldest lines, expiring with the record.
	KeySuffixLog = ":log"
	// KeySuffixLogMeta follows a job record's key for its log's counters, a
	// hash: "n" (the last line number), "bytes" (of the lines kept),
	// "dropped" (lines not kept: trimmed or dropped by the worker). It
	// expires with the record.
	KeySuffixLogMeta = ":log-meta"
	// KeySuffixCheckpoint follows a job record's key for the job's last
	// checkpoint (worker Task.SaveCheckpoint): a string of at most
	// MaxCheckpointBytes, which the next attempt starts from. It expires
	// with the record as the record was when it was written, and is
	// deleted when the job ends.
	KeySuffixCheckpoint = ":checkpoint"
	// KeySuffixChannel follows a job record's key for the job's own pub/sub
	// channel, "cc:job:{<id>}:ch", a shard channel in the job's slot: every
	// event of the job is announced there (events.go), and only processes
	// watching the job subscribe.
	KeySuffixChannel = ":ch"
	// KeySuffixDeliveries follows a job record's key for the job's webhook
	// delivery attempts (deliveries.go): a list of JSON Delivery values,
	// newest last, capped at MaxDeliveries, expiring with the record.
	KeySuffixDeliveries = ":deliveries"
	// KeySuffixWebhook follows a job record's key for its webhook's
	// bookkeeping (webhookseq.go), a hash: "progress" and "log" (the
	// sequence number of the newest event of that kind enqueued),
	// "completed" ("1" once the completed event is enqueued), "gone" ("1"
	// once the receiver answered 410). It expires with the record.
	KeySuffixWebhook = ":wh"
	// KeyInfixLink follows a job record's key, and precedes a download
	// link's jti, for the state of a one-time link (links.go), a hash
	// "cc:job:{<id>}:link:<jti>": "st" (serving, interrupted, used), "off"
	// (the offset a resume must start at), "claim" and "lease" (the
	// transfer holding it, until when, Unix ms), "until" (the end of an
	// interrupted link's resume window, Unix ms). It lives until the
	// link's exp plus leeway, or while a transfer holds it.
	KeyInfixLink = ":link:"
	// KeySuffixReceipt follows a job record's key for the job's result
	// receipt (tokens.ReceiptClaims): a string holding the compact JWS,
	// written by the same script that records the success and expiring
	// with the record. Only a succeeded job whose worker holds receipt
	// keys has one.
	KeySuffixReceipt = ":receipt"
	// KeyPrefixOwnerJobs prefixes a sorted set per owner of their job ids,
	// all with score 0 so it orders by id; ids are UUIDv7, so that is
	// creation order, and a cursor is simply the last id seen.
	KeyPrefixOwnerJobs = "cc:owner-jobs:"
	// KeyPrefixOwnerActive prefixes a set per owner of the ids of jobs that
	// may still be active; finished ones are pruned when the set is full.
	KeyPrefixOwnerActive = "cc:owner-active:"
	// KeyPrefixOwnerRunning prefixes a sorted set per owner of the ids of
	// their jobs that hold a worker slot, each scored by the end of its
	// lease (Unix ms). A member whose lease has passed (its worker died
	// without releasing the slot) stops counting and is dropped the next
	// time the set is checked.
	KeyPrefixOwnerRunning = "cc:owner-running:"
	// KeyPrefixOwnerHeld prefixes a sorted set per owner of "<queue> <job
	// id>" for jobs held back by the running-job cap, scored by when each
	// was first held (Unix ms): when a slot frees, the oldest go first.
	KeyPrefixOwnerHeld = "cc:owner-held:"
	// KeyHeartbeats is a sorted set of the ids of running jobs, each
	// scored by the last time its worker said it was alive (Unix ms); a
	// reconciler ends the jobs whose worker went quiet (reconcile.go).
	KeyHeartbeats = "cc:job-heartbeats"
	// KeyHeartbeatRuns is a hash beside KeyHeartbeats, of job id → the
	// run (Attempt.Run) whose heartbeat the entry is, so that the end of
	// one run never removes or refreshes the entry of a newer run of the
	// same job. Its hash tag is KeyHeartbeats' whole name, which is how
	// Redis Cluster places an untagged key: the two share a slot, and so
	// one node and one clock.
	KeyHeartbeatRuns = "cc:job-heartbeats:runs:{" + KeyHeartbeats + "}"
)

// Asynq's own keys for a queue (asynq v0.26 internal/base), which the
// reconciler reads and, for a task that lost its lease, writes.
func asynqActiveKey(queue string) string   { return "asynq:{" + queue + "}:active" }
func asynqLeaseKey(queue string) string    { return "asynq:{" + queue + "}:lease" }
func asynqPendingKey(queue string) string  { return "asynq:{" + queue + "}:pending" }
func asynqArchivedKey(queue string) string { return "asynq:{" + queue + "}:archived" }
func asynqTaskKey(queue, id string) string { return "asynq:{" + queue + "}:t:" + id }

// JobKey is the key of a job's record, "cc:job:{<id>}". Job ids are UUIDs
// (the api mints them), so the id itself is the tag. No script builds a
// key from an id: every key a script touches comes in KEYS.
func JobKey(id string) string { return KeyPrefixJob + "{" + id + "}" }

func jobKey(id string) string        { return JobKey(id) }
func eventsKey(id string) string     { return JobKey(id) + KeySuffixEvents }
func logKey(id string) string        { return JobKey(id) + KeySuffixLog }
func logMetaKey(id string) string    { return JobKey(id) + KeySuffixLogMeta }
func checkpointKey(id string) string { return JobKey(id) + KeySuffixCheckpoint }
func deliveriesKey(id string) string { return JobKey(id) + KeySuffixDeliveries }
func webhookKey(id string) string    { return JobKey(id) + KeySuffixWebhook }
func receiptKey(id string) string    { return JobKey(id) + KeySuffixReceipt }

// JobChannel is job id's pub/sub channel (KeySuffixChannel).
func JobChannel(id string) string { return JobKey(id) + KeySuffixChannel }

// OnceLinkKey is the key of one-time link jti's state (KeyInfixLink). A jti
// is a link's own random id, signed with it.
func OnceLinkKey(id, jti string) string { return JobKey(id) + KeyInfixLink + jti }

// CheckpointKey is the key of a job's checkpoint (KeySuffixCheckpoint).
func CheckpointKey(id string) string { return checkpointKey(id) }

func ownerJobsKey(owner string) string   { return KeyPrefixOwnerJobs + keyslot.Tag(owner) }
func ownerActiveKey(owner string) string { return KeyPrefixOwnerActive + keyslot.Tag(owner) }
func ownerHeldKey(owner string) string   { return KeyPrefixOwnerHeld + keyslot.Tag(owner) }

// OwnerRunningKey is the key of an owner's running-slot set
// (KeyPrefixOwnerRunning).
func OwnerRunningKey(owner string) string { return KeyPrefixOwnerRunning + keyslot.Tag(owner) }

func ownerRunningKey(owner string) string { return OwnerRunningKey(owner) }

// idempotencyKey hashes owner and client key together so neither can smuggle
// separators or unbounded length into a key name; the owner's tag keeps the
// claim in the owner's slot.
func idempotencyKey(owner, clientKey string) string {
	sum := sha256.Sum256([]byte(owner + "\x00" + clientKey))
	return KeyPrefixIdempotency + keyslot.Tag(owner) + ":" + hex.EncodeToString(sum[:])
}

// jobIDLua is a script expression for the job id in KEYS[1] (a JobKey).
var jobIDLua = `string.sub(KEYS[1], ` + jobIDFrom + `, -2)`
