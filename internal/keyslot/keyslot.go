// Package keyslot owns the hash tags that put claimcheck's Redis keys into
// Redis Cluster slots: every key of one user carries Tag(user), every key of
// one job carries Tag(job id), so each Lua script and MULTI block touches
// keys of one slot only, and the same layout works on one server.
//
//	user slot {ann}:  cc:user:{ann}, cc:user-apikeys:{ann}, cc:user-sessions:{ann},
//	                  cc:owner-jobs:{ann}, cc:owner-active:{ann}, cc:owner-running:{ann},
//	                  cc:owner-held:{ann}, cc:idem:{ann}:<hash>
//	job slot {<id>}:  cc:job:{<id>}, cc:job:{<id>}:events, :log, :log-meta, :checkpoint,
//	                  and the shard channel cc:job:{<id>}:ch
//
// An operation that spans a user and a job (submit, block with
// --cancel-jobs, the running-job cap) is a sequence of one-slot steps whose
// order keeps its guarantees; packages jobs and identity say how.
package keyslot

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// Tag is s as a hash tag, "{s}". Redis hashes only what lies between the
// first "{" and the next "}", so a name holding a brace (or an empty one)
// would split its keys across slots or hash them whole: such a name is
// tagged by the first 16 hex digits of its SHA-256 instead. Valid user names
// and job ids (UUIDs) have no braces and keep their readable tag.
func Tag(s string) string {
	if s == "" || strings.ContainsAny(s, "{}") {
		sum := sha256.Sum256([]byte(s))
		return "{#" + hex.EncodeToString(sum[:8]) + "}"
	}
	return "{" + s + "}"
}
