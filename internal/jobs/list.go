package jobs

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"github.com/redis/go-redis/v9"
)

// ErrBadCursor means a list cursor is not one this store handed out.
var ErrBadCursor = errors.New("invalid cursor")

// cursorPattern is a job id: a lowercase UUID. Cursors are the last id of
// the previous page.
var cursorPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// Page is one page of an owner's jobs.
type Page struct {
	Jobs []*Job
	// Next is the cursor for the following page; empty on the last one.
	Next string
}

// maxScan bounds how many index entries one List call reads, so a filter
// that matches little cannot make one request walk a whole history. A page
// may then hold fewer than limit jobs but still have a Next.
const maxScan = 1000

// List returns owner's jobs newest first, after cursor (empty for the
// first page), at most limit of them, only those in state when state is
// not empty. Ids whose record has expired are dropped from the index.
func (s *Store) List(ctx context.Context, owner, cursor string, limit int, state State) (*Page, error) {
	if cursor != "" && !cursorPattern.MatchString(cursor) {
		return nil, ErrBadCursor
	}
	if limit <= 0 {
		limit = 20
	}
	page := &Page{Jobs: make([]*Job, 0, limit)}
	max := "+"
	if cursor != "" {
		max = "(" + cursor
	}
	batch := int64(limit)
	if state != "" {
		batch = min(4*int64(limit), maxScan) // filtered: read ahead
	}
	scanned := 0
	for {
		ids, err := s.rdb.ZRevRangeByLex(ctx, ownerJobsKey(owner), &redis.ZRangeBy{Max: max, Min: "-", Count: batch + 1}).Result()
		if err != nil {
			return nil, fmt.Errorf("list jobs of %s: %w", owner, err)
		}
		more := int64(len(ids)) > batch
		if more {
			ids = ids[:batch]
		}
		jobs, err := s.getMany(ctx, owner, ids)
		if err != nil {
			return nil, err
		}
		for i, j := range jobs {
			scanned++
			// A pending job is admitted but not confirmed: not shown.
			if j != nil && j.State != StatePending && (state == "" || j.State == state) {
				page.Jobs = append(page.Jobs, j)
			}
			if len(page.Jobs) == limit {
				if more || i < len(jobs)-1 {
					page.Next = ids[i]
				}
				return page, nil
			}
		}
		if !more {
			return page, nil
		}
		max = "(" + ids[len(ids)-1]
		if scanned >= maxScan {
			page.Next = ids[len(ids)-1]
			return page, nil
		}
	}
}

// getMany reads records in one round trip (pipelined: on a cluster, one per
// node holding them); a missing one is nil, and its id leaves owner's index.
// An id is in the index only once its record was written (package doc), so
// a missing record is one that expired or was refused, never one about to
// be written.
func (s *Store) getMany(ctx context.Context, owner string, ids []string) ([]*Job, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, id := range ids {
			p.HGetAll(ctx, jobKey(id))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list jobs of %s: %w", owner, err)
	}
	out := make([]*Job, len(ids))
	var gone []any
	for i, c := range cmds {
		j, err := fromHash(c.(*redis.MapStringStringCmd).Val())
		if err != nil {
			gone = append(gone, ids[i])
			continue
		}
		out[i] = j
	}
	if len(gone) > 0 {
		s.rdb.ZRem(ctx, ownerJobsKey(owner), gone...)
	}
	return out, nil
}

// Active returns the ids of owner's jobs that have not ended; a pending
// one (admitted, not confirmed) is not one of them.
func (s *Store) Active(ctx context.Context, owner string) ([]string, error) {
	return s.active(ctx, owner, false)
}

// ActiveOrPending is Active with the pending jobs too: those admitted in
// the owner's slot whose confirm has not flipped their record yet. Whoever
// blocks an owner cancels these as well (CancelOwnerJobs).
func (s *Store) ActiveOrPending(ctx context.Context, owner string) ([]string, error) {
	return s.active(ctx, owner, true)
}

func (s *Store) active(ctx context.Context, owner string, pending bool) ([]string, error) {
	ids, err := s.rdb.SMembers(ctx, ownerActiveKey(owner)).Result()
	if err != nil {
		return nil, fmt.Errorf("active jobs of %s: %w", owner, err)
	}
	jobs, err := s.getMany(ctx, owner, ids)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, j := range jobs {
		if j != nil && !j.State.Final() && (pending || j.State != StatePending) {
			out = append(out, j.ID)
		}
	}
	return out, nil
}
