package jobs

import (
	"context"
	"errors"
	"fmt"

	"github.com/claimcheck/claimcheck/internal/scripts"
)

// MaxCheckpointBytes bounds one checkpoint: it is a note of where a job got
// to (an offset, a cursor, a partial hash), read back once per attempt, not
// a place to keep results.
const MaxCheckpointBytes = 64 << 10

// ErrNotRunning is returned for a write by an attempt that is no longer the
// job's running one (it ended, was reconciled, or a newer attempt started).
var ErrNotRunning = errors.New("attempt is not the job's running one")

var saveCheckpointScript = scripts.New(`
-- KEYS[1] job, KEYS[2] its checkpoint; ARGV[1] attempt, ARGV[2] data,
-- ARGV[3] the run's name ("": any run of the attempt)
-- returns 1 when saved, 0 when the attempt is not the running one
local st = redis.call("HMGET", KEYS[1], "state", "attempts", "run")
if st[1] ~= "running" or st[2] ~= ARGV[1] then return 0 end
if ARGV[3] ~= "" and st[3] ~= ARGV[3] then return 0 end
local ttl = redis.call("PTTL", KEYS[1])
if ttl > 0 then
  redis.call("SET", KEYS[2], ARGV[2], "PX", ttl)
else
  redis.call("SET", KEYS[2], ARGV[2])
end
return 1
`)

// SaveCheckpoint keeps data as job id's checkpoint, which its next attempt
// reads back (Started.Checkpoint), if attempt is the job's running one.
func (s *Store) SaveCheckpoint(ctx context.Context, id string, attempt int, data []byte) error {
	return s.SaveRunCheckpoint(ctx, id, attempt, "", data)
}

// SaveRunCheckpoint is SaveCheckpoint for run (Attempt.Run) of attempt: a
// run that is no longer the newest of its attempt (its job was handed back
// while it ran, and runs again elsewhere) is ErrNotRunning, so that it
// cannot replace the newer run's checkpoint.
func (s *Store) SaveRunCheckpoint(ctx context.Context, id string, attempt int, run string, data []byte) error {
	if len(data) > MaxCheckpointBytes {
		return fmt.Errorf("checkpoint of job %s: %d bytes, at most %d", id, len(data), MaxCheckpointBytes)
	}
	n, err := saveCheckpointScript.Run(ctx, s.rdb, []string{jobKey(id), checkpointKey(id)}, attempt, data, run).Int()
	if err != nil {
		return fmt.Errorf("checkpoint of job %s: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("checkpoint of job %s: %w", id, ErrNotRunning)
	}
	return nil
}
