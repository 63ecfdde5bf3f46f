package registry

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/jobs"
)

// Reader is the api's view of the registry: the catalog of announced
// types, with how many live workers serve each. It reads Redis only when
// asked and its view is older than Interval, or when asked for a type it
// does not know (at most once per UnknownInterval); a schema is compiled
// once per spec digest. It is safe for concurrent use.
type Reader struct {
	cfg Config
	rdb redis.UniversalClient

	snap atomic.Pointer[snapshot]

	mu          sync.Mutex // one read at a time; guards the fields below
	lastUnknown time.Time
	compiled    map[string]*jobs.Compiled // by digest; nil: did not compile
}

type snapshot struct {
	at      time.Time
	version string // KeyVersion as of the read ("" before any announcement)
	catalog *jobs.Catalog
	workers map[string]int
}

// NewReader reads the registry on rdb. Only cfg's Forget, Interval,
// UnknownInterval, Now and Logger matter; it reads nothing yet.
func NewReader(rdb redis.UniversalClient, cfg Config) *Reader {
	cfg.setDefaults()
	return &Reader{cfg: cfg, rdb: rdb, compiled: map[string]*jobs.Compiled{}}
}

// Types returns the announced types and, per name, how many workers
// announce it now. want, when not empty, is a type the caller is about to
// look up: when the view lacks it, the registry is read again first
// (rate-limited), so a worker that started a moment ago is seen. When
// Redis fails, the last view is kept and returned; with none yet, the
// error is.
func (r *Reader) Types(ctx context.Context, want string) (*jobs.Catalog, map[string]int, error) {
	now := r.cfg.Now()
	s := r.snap.Load()
	if s != nil && now.Sub(s.at) < r.cfg.Interval && (want == "" || r.has(s, want)) {
		return s.catalog, s.workers, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// Another caller may have read while this one waited.
	s = r.snap.Load()
	stale := s == nil || now.Sub(s.at) >= r.cfg.Interval
	missing := want != "" && (s == nil || !r.has(s, want))
	if !stale && (!missing || now.Sub(r.lastUnknown) < r.cfg.UnknownInterval) {
		return s.catalog, s.workers, nil
	}
	if missing {
		// Whatever the check or read, it answers for the unknown name: a
		// flood of made-up names costs one check per interval.
		r.lastUnknown = now
	}
	// The read serves every caller waiting on it, not just this one: a
	// client that hangs up must not cut it short.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if !stale {
		// A fresh view lacks the name: read again only if a spec was
		// announced since (a worker that just started), else it is unknown.
		v, err := r.rdb.Get(rctx, KeyVersion).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			r.cfg.Logger.Warn("job type registry not checked", "err", err)
			return s.catalog, s.workers, nil
		}
		if v == s.version {
			return s.catalog, s.workers, nil
		}
	}
	fresh, err := r.read(rctx, now)
	if err != nil {
		if s == nil {
			return nil, nil, err
		}
		// A failed read counts as one: keep the view for another interval.
		r.cfg.Logger.Warn("job type registry not read; keeping the last view", "err", err)
		s = &snapshot{at: now, version: s.version, catalog: s.catalog, workers: s.workers}
		r.snap.Store(s)
		return s.catalog, s.workers, nil
	}
	r.snap.Store(fresh)
	return fresh.catalog, fresh.workers, nil
}

func (r *Reader) has(s *snapshot, name string) bool {
	_, ok := s.catalog.Lookup(name)
	return ok
}

// read lists the types heard from within Forget (with the version), then, in one round trip,
// each one's digest and live-worker count, then the specs of digests not
// seen before. Its keys are all in one slot, but each command names its
// own: no script here, the api only reads.
func (r *Reader) read(ctx context.Context, now time.Time) (*snapshot, error) {
	// The version first: an announcement between the two leaves the view
	// with the older version, so the next check reads again.
	var version *redis.StringCmd
	var index *redis.StringSliceCmd
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		version = p.Get(ctx, KeyVersion)
		index = p.ZRangeByScore(ctx, KeyIndex, &redis.ZRangeBy{
			Min: "(" + strconv.FormatInt(now.Add(-r.cfg.Forget).UnixMilli(), 10), Max: "+inf"})
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read job type registry: %w", err)
	}
	names, err := index.Result()
	if err != nil {
		return nil, fmt.Errorf("read job type registry: %w", err)
	}
	digests := make([]*redis.StringCmd, len(names))
	counts := make([]*redis.IntCmd, len(names))
	if len(names) > 0 {
		live := "(" + strconv.FormatInt(now.UnixMilli(), 10)
		_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, n := range names {
				digests[i] = p.HGet(ctx, typeKey(n), "digest")
				counts[i] = p.ZCount(ctx, workersKey(n), live, "+inf")
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("read job type registry: %w", err)
		}
	}
	// Specs of new digests: fetched, checked against their digest, compiled.
	var missing []int
	for i := range names {
		if d, err := digests[i].Result(); err == nil {
			if _, ok := r.compiled[d]; !ok {
				missing = append(missing, i)
			}
		}
	}
	if len(missing) > 0 {
		specs := make([]*redis.StringCmd, len(missing))
		_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for j, i := range missing {
				specs[j] = p.HGet(ctx, typeKey(names[i]), "spec")
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("read job type registry: %w", err)
		}
		for j, i := range missing {
			text, err := specs[j].Bytes()
			if err != nil {
				continue // forgotten meanwhile
			}
			// A worker may have replaced the spec since its digest was read:
			// file it under its own digest; the next read finds that.
			d := digestOf(text)
			if _, ok := r.compiled[d]; ok {
				continue
			}
			spec, err := decode(text)
			if err == nil && len(text) > MaxSpecBytes {
				err = fmt.Errorf("spec is %d bytes, over the %d-byte limit", len(text), MaxSpecBytes)
			}
			var ct *jobs.Compiled
			if err == nil {
				ct, err = jobs.Compile(spec)
			}
			if err != nil {
				r.cfg.Logger.Error("announced job type ignored", "type", names[i], "digest", d, "err", err)
			}
			r.compiled[d] = ct
		}
	}
	s := &snapshot{at: now, version: version.Val(), workers: make(map[string]int, len(names))}
	types := make([]*jobs.Compiled, 0, len(names))
	used := make(map[string]bool, len(names))
	for i, n := range names {
		d, err := digests[i].Result()
		if err != nil {
			continue // forgotten: the hash expired before the index entry was pruned
		}
		used[d] = true
		ct := r.compiled[d]
		if ct == nil || ct.Spec().Name != n {
			continue
		}
		types = append(types, ct)
		s.workers[n] = int(counts[i].Val())
	}
	for d := range r.compiled {
		if !used[d] {
			delete(r.compiled, d)
		}
	}
	if s.catalog, err = jobs.CatalogOf(types...); err != nil {
		return nil, err
	}
	return s, nil
}
