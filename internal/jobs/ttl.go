package jobs

import (
	"context"
	"fmt"
	"time"
)

// TTL returns how long job id's record has left before it expires, zero
// for a record that does not expire (a job still queued or running), or
// ErrNotFound. The progress service bounds a download link by it, so a link
// never claims to outlive what it points at.
func (s *Store) TTL(ctx context.Context, id string) (time.Duration, error) {
	d, err := s.rdb.PTTL(ctx, jobKey(id)).Result()
	if err != nil {
		return 0, fmt.Errorf("ttl of job %s: %w", id, err)
	}
	switch {
	case d == -2: // go-redis passes PTTL's "no such key" through as -2ns
		return 0, fmt.Errorf("ttl of job %s: %w", id, ErrNotFound)
	case d < 0: // -1: no expiry
		return 0, nil
	}
	return d, nil
}
