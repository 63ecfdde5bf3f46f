// Package identity authenticates people: users and their passwords,
// sessions and API keys, and the revocations that end them. Credentials are
// opaque random secrets stored only as their SHA-256, so a copy of Redis
// does not hand out working keys, and revoking one takes effect on the very
// next request (there is no cache to wait out here; caches elsewhere hear
// ChannelRevocations).
//
// The progress service must never import this package; a test in
// api/progress walks its import graph to keep it so.
//
// # Keys and slots
//
// Every key is named in keys.go. On a Redis Cluster a script or MULTI may
// only touch keys of one hash slot, and this package's keys fall into two
// kinds:
//
//	user slot {ann}    cc:user:{ann}           record; "blocked" is the flag job creation reads too
//	                   cc:user-sessions:{ann}  session id → record key
//	                   cc:user-apikeys:{ann}   key ids
//	a slot each        cc:session:<sha256>     session record (what authentication reads)
//	                   cc:apikey:<sha256>      API key record (likewise)
//	                   cc:apikey-id:<id>       key id → sha256
//	                   cc:apikey-index         every key id, by creation time
//	                   cc:users                every user name
//
// Authentication knows only the secret, so it reads one record by the hash
// of the secret, in one script on that one key: one round trip per request,
// for a session (sliding its idle expiry) as for an API key (recording its
// use at most once a minute). It never reads the user: blocking a user
// deletes their credentials instead, which is also why the gateway's Redis
// user needs no access to user records.
//
// Operations that span a user and their credentials are sequences of
// one-slot steps. The rule that keeps them safe: a credential record is
// written before it is indexed under its user, the index step checks the
// blocked flag in the same script, a block raises the flag in the same
// script that reads the indexes, and a secret is handed out only after
// every step succeeded. A record nobody holds the secret of is harmless
// (its secret is 256 random bits that were never sent anywhere), and every
// such leftover carries a TTL.
//
// # Sign-in (Sessions.Create)
//
// Step 1 writes the session record, with its expiry as TTL, in the
// record's slot; step 2, in the user's slot, refuses if the user is blocked
// and otherwise adds the session to the user's index (whose own TTL, the
// absolute lifetime and a day, outlasts every session in it). A block whose
// flag lands before step 2 is seen by step 2: the sign-in deletes its
// record and fails with ErrUserBlocked. A block whose flag lands after step
// 2 reads an index that already holds the session, and its sweep deletes
// the record, so the secret the sign-in returns is dead. Between the steps
// the record exists but is in no index: no sweep can find it, but no one
// can use it either, since its secret has not left the process. A crash
// there leaves that record until its idle timeout.
//
// # API key creation (APIKeys.CreateKey)
//
// Step 1 writes the record and the id key, each provisional (a ten-minute
// TTL), and the global index entry; step 2, in the user's slot, refuses if
// the user is blocked and otherwise adds the id to the user's index; step 3
// makes the record and then the id key permanent (or gives them the key's
// own lifetime), but only if they still exist. A block whose flag lands
// before step 2 is refused there; one that lands after step 2 finds the id
// in the index, and the id key (written in step 1) leads its sweep to the
// record. If that sweep ran before step 3, step 3 finds the record gone,
// does not recreate it and fails the creation; if after, the returned
// secret is dead. A crash anywhere leaves provisional keys that expire
// within ten minutes, a user index entry that ListUser tidies, and a global
// index entry that List tidies; none of it works without the secret. (Only
// a second failure inside step 3, after the record was kept but the id key
// found gone, can leave a permanent record, and still one without a
// secret.)
//
// # Block (Directory.Block)
//
// One script in the user's slot raises the flag and returns both indexes,
// so no credential can be indexed after that read without seeing the flag.
// The sweep then deletes every session record, resolves every key id to
// its record and deletes those, then the id keys and global entries, and
// last removes exactly the swept ids from the user's indexes (not the whole
// index: the user may have been unblocked and signed in again meanwhile,
// and that new session must stay where a later block finds it). A failure
// midway leaves the flag up and the remaining entries indexed, so running
// Block again finishes the job; nothing new can be created meanwhile.
// Unblock only lowers the flag. RevokeAll ("log out everywhere") and
// APIKeys.RevokeUser are the same sweep without the flag: a credential
// indexed after their read survives them, as it would had it been created
// a moment later.
//
// # Revoking one credential (Sessions.Revoke, APIKeys.Revoke)
//
// The record is deleted first, in its own slot (the credential is refused
// from that moment), and the index entries after it. A failure between
// leaves entries that point at nothing, which List and ListUser tidy,
// rather than a working credential that no index, and so no block, can
// reach.
//
// # Users (Users.Add)
//
// The name joins cc:users first, then one script in the user's slot writes
// the record unless one exists. A failure between leaves a listed name
// without a record, which List skips and a second Add completes; the other
// order could leave a user who signs in but whom no listing shows.
// Password changes and the blocked flag are single-key writes to the
// record.
//
// # Announcements (Revocations)
//
// Every revocation is announced after its writes: to this process's
// listeners first, then with a plain PUBLISH on ChannelRevocations, never
// from inside a script. On a cluster a PUBLISH is broadcast over the
// cluster bus to every node's subscribers, so every instance hears every
// revocation whichever node it subscribed through; announcements published
// through different nodes may arrive in either order, and listeners treat
// each on its own.
package identity
