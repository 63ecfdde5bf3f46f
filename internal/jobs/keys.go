package jobs

import (
	"crypto/sha256"
	"encoding/hex"
)

// Every Redis key this package touches is built here, so the ACL patterns in
// compose (the progress service may read cc:job:*) can be read off one file.
const (
	// KeyPrefixJob prefixes job records: a hash per job.
	KeyPrefixJob = "cc:job:"
	// KeyPrefixIdempotency prefixes Idempotency-Key claims: a string per
	// (owner, key) pair holding "<job id> <body hash>".
	KeyPrefixIdempotency = "cc:idem:"
)

func jobKey(id string) string { return KeyPrefixJob + id }

// idempotencyKey hashes owner and client key together so neither can smuggle
// separators or unbounded length into a key name.
func idempotencyKey(owner, clientKey string) string {
	sum := sha256.Sum256([]byte(owner + "\x00" + clientKey))
	return KeyPrefixIdempotency + hex.EncodeToString(sum[:])
}
