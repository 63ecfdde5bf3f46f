package identity

import "github.com/claimcheck/claimcheck/internal/keyslot"

// Every Redis key this package touches is built here. The progress service's
// Redis ACL user is denied all of these (cc:apikey*, cc:user*, cc:session*),
// which is why none of them share a prefix with job records.
//
// Cluster slots (see package keyslot and doc.go): a user's record and both
// of the user's credential indexes carry the user's hash tag, so they share
// the slot of the user's job indexes (cc:owner-*:{ann}) and one script can
// check the blocked flag and write an index. Credential records are
// addressed by the hash of their secret (authentication knows nothing
// else), so each is a single key in a slot of its own, as are the global
// user list and key index; no script touches two of those.
const (
	// KeyPrefixAPIKey prefixes API key records, addressed by the SHA-256 of
	// the secret: a hash {id, user, name, created, prefix, scope, expires,
	// last_used}.
	KeyPrefixAPIKey = "cc:apikey:"
	// KeyPrefixAPIKeyID maps a key id to the SHA-256 of its secret, so a key
	// can be listed and revoked without knowing the secret.
	KeyPrefixAPIKeyID = "cc:apikey-id:"
	// KeyAPIKeyIndex is a sorted set of key ids by creation time.
	KeyAPIKeyIndex = "cc:apikey-index"
	// KeyPrefixUserAPIKeys is a set per user of their key ids, so blocking a
	// user revokes every key at once: cc:user-apikeys:{ann}.
	KeyPrefixUserAPIKeys = "cc:user-apikeys:"
	// KeyPrefixUser prefixes user records, a hash {name, pw, blocked,
	// created}: cc:user:{ann}.
	KeyPrefixUser = "cc:user:"
	// KeyUsers is the set of user names.
	KeyUsers = "cc:users"
	// KeyPrefixSession prefixes session records, addressed by the SHA-256 of
	// the session secret: a hash {id, user, created, seen, ua, ip}.
	KeyPrefixSession = "cc:session:"
	// KeyPrefixUserSessions is a hash per user from session id to the
	// session's record key, so "log out everywhere" is one operation:
	// cc:user-sessions:{ann}.
	KeyPrefixUserSessions = "cc:user-sessions:"
)

func apiKeyKey(hash string) string       { return KeyPrefixAPIKey + hash }
func apiKeyIDKey(id string) string       { return KeyPrefixAPIKeyID + id }
func userAPIKeysKey(user string) string  { return KeyPrefixUserAPIKeys + keyslot.Tag(user) }
func userKey(name string) string         { return KeyPrefixUser + keyslot.Tag(name) }
func sessionKey(hash string) string      { return KeyPrefixSession + hash }
func userSessionsKey(user string) string { return KeyPrefixUserSessions + keyslot.Tag(user) }

// BlockedFlagKey is the Redis hash whose "blocked" field is "1" while user
// is blocked: the user's record, cc:user:{ann}, in the user's slot beside
// the owner's job indexes, so job creation can read it in the owner-slot
// script that admits the job (jobs.NewJob.OwnerGate).
func BlockedFlagKey(user string) string { return userKey(user) }
