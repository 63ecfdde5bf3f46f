// Package delivery sends a job's webhook events to the URL its submitter
// gave (webhook.Spec), signed per the Standard Webhooks specification with
// its asymmetric scheme (v1a, Ed25519). It runs in worker processes: the
// job's own attempt enqueues events (Events, Attempt), and a second Asynq
// server beside the job server (Server) delivers them. It never runs a job
// and never blocks one: an event is a Redis write and an enqueue, and a
// slow or dead receiver only ever holds a delivery slot.
//
// # Events
//
//	job.started    after an attempt is recorded running    one per attempt
//	job.progress   after Store.Progress                   throttled, see below
//	job.log        after a batch of log lines is stored   throttled, carries the lines
//	job.completed  after any final state (succeeded,      exactly one per job
//	               failed for good, canceled, or a lost
//	               worker's job failed by the reconciler)
//
// Only the events the job's webhook subscribed to are enqueued. Each is an
// Asynq task on Queue ("cc.webhooks", a name no pool's queue can have:
// pool queues are "<class>" or "<pool>-<class>" of [a-z0-9_-]), which job
// pools never pull; Server serves only that queue, with its own
// concurrency.
//
// # Ids and ordering
//
// The webhook-id of an event is the same on every attempt to deliver it,
// so receivers can deduplicate: msg_<job>_started_<attempt>,
// msg_<job>_progress_<seq>, msg_<job>_log_<seq>, msg_<job>_completed. The
// Asynq TaskID is the same string with "wh:" for "msg_", so an event
// enqueued twice (a worker crashed between the record write and the
// enqueue, and the job's task ran again) is one task; a finished started
// or completed task keeps its id reserved for Retention (24 h).
//
// Progress and log events are throttled per job and kind to one per
// Interval (500 ms): the first goes at once (leading edge), later ones
// within the interval are folded into one sent at its end (trailing edge),
// and the attempt's end flushes what is left before completed is
// enqueued. Each enqueue bumps the kind's sequence number in the job's
// slot (jobs.Store.NextWebhookEvent, hash cc:job:{id}:wh); an attempt to
// deliver seq n that finds a newer seq of its kind, or the completed event,
// enqueued is not sent but recorded as "dropped". So nothing older is sent
// once something newer of its kind is queued; deliveries of different
// kinds are not ordered (data.seq and data.job.progress.updated_at tell a
// receiver which is newer). A log event carries the lines stored since the
// previous log event of the job: at most MaxLogLines (100) lines and
// MaxLogBytes (32 KiB), the newest kept and the rest counted in
// dropped_lines (the job's log at GET /v1/jobs/{id}/logs has them all).
// A log event that is dropped (a newer one was queued while it waited for
// a retry) takes its lines with it: the next one's first line number shows
// the gap, and GET /v1/jobs/{id}/logs?after=N fills it.
//
// # What is authoritative
//
// The job record is. data.job in every payload is the record as the
// progress service shows it (GET /v1/jobs/{id}), read when the attempt is
// made, not when the event happened: a progress event retried late shows
// the job as it is then, never older. A completed payload of a succeeded
// job carries the result's size, type and digest and a download link
// (link+jwt, issuer urn:claimcheck:webhooks) minted for that attempt, so a
// retry two hours later still carries a live link: it lives DefaultLinkTTL
// (10 min), never past the record's expiry, at the record's token epoch,
// so revoking the job's tokens (Store.RevokeTokens) kills every link
// already sent.
//
// # Delivery and retries
//
// POST, JSON body, headers webhook-id, webhook-timestamp (Unix seconds of
// this attempt) and webhook-signature ("v1a,<base64 of the Ed25519
// signature of <id>.<timestamp>.<body>>", with the active key of the
// webhook key set). Receivers verify against the keys of kind "webhook" in
// the api's /.well-known/jwks.json (one, or two during a rotation: try
// each) and refuse a timestamp more than 5 minutes from their clock.
//
// Connect timeout 5 s, response timeout 10 s, redirects never followed,
// at most 64 KiB of the response body read, for at most BodyGrace (1 s)
// after its headers, and discarded. 2xx is delivered;
// 410 Gone means the receiver unsubscribed: the job's later events are not
// sent either. Anything else (3xx, 4xx, 5xx, timeouts, refused addresses)
// is retried: MaxAttempts (10) attempts in all, the next one after
// RetrySchedule (5 s, 30 s, 1 m, 2 m, 5 m, 10 m, 15 m, 30 m, 1 h; ±20 %
// jitter), about 2 h 4 min from the first to the last. Every attempt is
// recorded (jobs.Store.RecordDelivery): GET /v1/jobs/{id}/deliveries.
//
// # How it fails
//
// At least once: an event may arrive twice (same webhook-id), never
// silently not at all while its task exists. The job's own task is
// acknowledged only after its completed event is enqueued; a worker that
// dies between the record's final write and that enqueue leaves the task
// to run again, and the re-run, finding the record final, enqueues it
// again (the TaskID makes it one). A receiver down for the whole window
// gets nothing more; its attempts say why. Progress and log events are
// best effort: an enqueue that fails is logged and the next event (or
// completed) carries the newer state.
//
// # Canceled while no worker holds the job
//
// A job canceled while queued or waiting between attempts is ended by the
// progress service or the admin CLI (jobs.CancelJob, CancelOwnerJobs),
// whose Redis users may not enqueue tasks. They push the job's id to the
// outbox, a list in a slot of its own (jobs.KeyWebhookOutbox), before
// they delete the job's task. Every Server reads it:
//
//	cancel:  LPUSH outbox id (+LTRIM) → DeleteTask → record canceled
//	Server:  BLMOVE outbox→outbox (peek the oldest, blocking OutboxWait)
//	         → enqueue settle task "whs:<id>" → LREM outbox id
//	settle:  record final        → Events.Completed (the usual completed task)
//	         running             → nothing: its worker enqueues completed
//	         gone                → nothing: nobody left to tell
//	         not ended otherwise → look again after SettleDelay (1 s … 1 min)
//
// An id leaves the outbox only after its settle task exists, so a Server
// that dies in between loses nothing. Another one enqueues it again, and
// the TaskID makes that one task. There are no per-Server processing
// lists to recover. A settle task's waits are its own retries, up to
// SettleMaxAttempts. They spend nothing of the completed event's
// MaxAttempts, which start when settle enqueues it.
//
// Intent first: a cancel that dies after the push and before the delete
// leaves a queued job with the cancel requested. Its settle task waits,
// and the worker that starts the job finds the cancel, ends it and
// enqueues the completed event itself. The settle task, seeing the record
// final, enqueues the same TaskID: one event. A push for a job that turns
// out to be running costs one look.
//
// No script touches both the outbox and a job: the list is one slot, the
// ids in it name others. The outbox is capped at jobs.WebhookOutboxCap
// (100 000, oldest dropped, claimcheck_webhook_outbox_dropped_total) for a
// fleet where no worker delivers. A record that expires while its id
// waits gets no event.
package delivery
