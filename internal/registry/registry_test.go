package registry_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/registry"
)

// clock is a settable clock shared by announcers and readers.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func spec(name, pool, schema string) jobs.TypeSpec {
	return jobs.TypeSpec{Name: name, Description: "the " + name + " type", Schema: json.RawMessage(schema),
		Timeout: time.Minute, MaxTimeout: 5 * time.Minute, MaxRetry: 2, ResultType: "application/json",
		MaxResultBytes: 1 << 20, Pool: pool}
}

const schemaN = `{"type":"object","properties":{"n":{"type":"integer","maximum":10}},"required":["n"],"additionalProperties":false}`

func config(c *clock, id string) registry.Config {
	return registry.Config{WorkerID: id, Now: c.Now, Logger: slog.New(slog.DiscardHandler)}
}

func start(t *testing.T, rdb redis.UniversalClient, cfg registry.Config, specs ...jobs.TypeSpec) *registry.Announcer {
	t.Helper()
	a, err := registry.NewAnnouncer(rdb, cfg, specs...)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Stop(context.Background()) })
	return a
}

// fresh reads the registry now: a new reader has no view to keep.
func fresh(t *testing.T, rdb redis.UniversalClient, c *clock) (*jobs.Catalog, map[string]int) {
	t.Helper()
	cat, workers, err := registry.NewReader(rdb, config(c, "")).Types(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	return cat, workers
}

func TestAnnouncedTypesAreReadBack(t *testing.T) {
	rdb := redistest.Client(t)
	c := newClock()
	start(t, rdb, config(c, "w1"), spec("count", "cpu", schemaN), spec("draw", "", `{"type":"object"}`))
	cat, workers := fresh(t, rdb, c)
	if got := strings.Join(cat.Names(), ","); got != "count,draw" {
		t.Fatalf("names = %s", got)
	}
	got, _ := cat.Lookup("count")
	if got.Pool != "cpu" || got.Timeout != time.Minute || got.MaxTimeout != 5*time.Minute || got.MaxRetry != 2 ||
		got.ResultType != "application/json" || got.MaxResultBytes != 1<<20 || got.Description != "the count type" ||
		got.InputLimits.MaxBytes != jobs.DefaultMaxInputBytes {
		t.Fatalf("spec read back = %+v", got)
	}
	if d, _ := cat.Lookup("draw"); d.Pool != jobs.DefaultPool {
		t.Fatalf("a type naming no pool is in %q", d.Pool)
	}
	if workers["count"] != 1 || workers["draw"] != 1 {
		t.Fatalf("workers = %v", workers)
	}
	// The announced schema is the one enforced.
	if err := cat.Validate("count", json.RawMessage(`{"n":5}`)); err != nil {
		t.Fatalf("good input: %v", err)
	}
	var ie *jobs.InputError
	if err := cat.Validate("count", json.RawMessage(`{"n":50}`)); !errors.As(err, &ie) || ie.Errors[0].Pointer != "/n" {
		t.Fatalf("bad input: %v", err)
	}
}

func TestSameSpecFromManyWorkersIsCounted(t *testing.T) {
	rdb := redistest.Client(t)
	c := newClock()
	start(t, rdb, config(c, "w1"), spec("count", "", schemaN))
	// The same schema spelled differently is the same spec.
	respelled := `{ "required": ["n"], "additionalProperties": false, "type": "object",
		"properties": {"n": {"maximum": 10, "type": "integer"}} }`
	start(t, rdb, config(c, "w2"), spec("count", "", respelled))
	start(t, rdb, config(c, "w3"), spec("count", "", schemaN))
	d1, _ := registry.Digest(spec("count", "", schemaN))
	d2, _ := registry.Digest(spec("count", "", respelled))
	if d1 != d2 || !strings.HasPrefix(d1, "sha256:") {
		t.Fatalf("digests %s %s", d1, d2)
	}
	if _, workers := fresh(t, rdb, c); workers["count"] != 3 {
		t.Fatalf("workers = %v, want 3", workers)
	}
}

func TestDifferentSpecWhileALiveWorkerHasTheOldOneIsRefused(t *testing.T) {
	rdb := redistest.Client(t)
	c := newClock()
	old := start(t, rdb, config(c, "host-1-aaaa"), spec("count", "", schemaN))
	changed := spec("count", "", `{"type":"object","properties":{"n":{"type":"string"}}}`)
	b, err := registry.NewAnnouncer(rdb, config(c, "host-2-bbbb"), spec("other", "", `{"type":"object"}`), changed)
	if err != nil {
		t.Fatal(err)
	}
	err = b.Start(context.Background())
	var ce *registry.ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("Start = %v, want a conflict", err)
	}
	oldDigest, newDigest := old.Digests()["count"], b.Digests()["count"]
	for _, want := range []string{`"count"`, oldDigest, newDigest, "host-1-aaaa"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if ce.Type != "count" || ce.LiveWorker != "host-1-aaaa" || ce.LiveDigest != oldDigest || ce.Digest != newDigest || oldDigest == newDigest {
		t.Fatalf("conflict = %+v", ce)
	}
	// Refused whole: not even its other type was announced, and the live
	// spec is untouched.
	cat, workers := fresh(t, rdb, c)
	if _, ok := cat.Lookup("other"); ok || workers["count"] != 1 {
		t.Fatalf("after a refused start: %v %v", cat.Names(), workers)
	}
	if err := cat.Validate("count", json.RawMessage(`{"n":3}`)); err != nil {
		t.Fatalf("the old spec was replaced: %v", err)
	}
	// Once the old worker is gone the new spec may take the name.
	if err := old.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatalf("start after the old worker left: %v", err)
	}
	defer b.Stop(context.Background())
	cat, workers = fresh(t, rdb, c)
	if err := cat.Validate("count", json.RawMessage(`{"n":"three"}`)); err != nil || workers["count"] != 1 {
		t.Fatalf("new spec not in force: %v %v", err, workers)
	}
}

func TestTypeOutlivesItsWorkersUntilForgotten(t *testing.T) {
	rdb := redistest.Client(t)
	c := newClock()
	cfg := config(c, "crashed")
	// Announced once and never again: a worker that died.
	a, err := registry.NewAnnouncer(rdb, cfg, spec("count", "", schemaN))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Announce(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	if _, w := fresh(t, rdb, c); w["count"] != 1 {
		t.Fatalf("workers = %v", w)
	}
	c.Add(15*time.Second + time.Millisecond) // past the default TTL
	cat, w := fresh(t, rdb, c)
	if _, ok := cat.Lookup("count"); !ok || w["count"] != 0 {
		t.Fatalf("a minute after its worker died: known=%v workers=%v", ok, w)
	}
	// A different spec may now take the name: its old worker is dead.
	b, err := registry.NewAnnouncer(rdb, config(c, "new"), spec("count", "", `{"type":"object"}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Announce(context.Background(), true); err != nil {
		t.Fatalf("a dead worker's spec blocks the name: %v", err)
	}
	if err := b.Withdraw(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.Add(24*time.Hour - time.Second)
	if cat, w := fresh(t, rdb, c); w["count"] != 0 || len(cat.Names()) != 1 {
		t.Fatalf("just under a day after the last heartbeat: %v %v", cat.Names(), w)
	}
	c.Add(2 * time.Second)
	if cat, _ := fresh(t, rdb, c); len(cat.Names()) != 0 {
		t.Fatalf("a day after the last heartbeat the type is still known: %v", cat.Names())
	}
}

func TestStopWithdrawsAtOnce(t *testing.T) {
	rdb := redistest.Client(t)
	c := newClock()
	a := start(t, rdb, config(c, "w1"), spec("count", "", schemaN))
	start(t, rdb, config(c, "w2"), spec("count", "", schemaN))
	if _, w := fresh(t, rdb, c); w["count"] != 2 {
		t.Fatalf("workers = %v", w)
	}
	if err := a.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, w := fresh(t, rdb, c); w["count"] != 1 {
		t.Fatalf("after one worker stopped (clock not moved): workers = %v", w)
	}
}

func TestHeartbeatKeepsAWorkerCounted(t *testing.T) {
	rdb := redistest.Client(t)
	c := newClock()
	cfg := config(c, "w1")
	cfg.Heartbeat = 10 * time.Millisecond
	cfg.TTL = time.Second
	start(t, rdb, cfg, spec("count", "", schemaN))
	// Move the clock past the first announcement's TTL; only a heartbeat
	// announced after the move keeps the worker counted.
	c.Add(5 * time.Second)
	waitfor(t, func() bool { _, w := fresh(t, rdb, c); return w["count"] == 1 })
}

func waitfor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestReaderSeesANewTypeAtOnceAndIsRateLimited(t *testing.T) {
	rdb := redistest.Client(t)
	c := newClock()
	counter := &redistest.Counter{}
	rc := redistest.NewClient(t)
	rc.AddHook(counter)
	r := registry.NewReader(rc, config(c, ""))
	ctx := context.Background()
	known := func(name string) bool {
		t.Helper()
		cat, _, err := r.Types(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		_, ok := cat.Lookup(name)
		return ok
	}
	if known("count") {
		t.Fatal("empty registry knows count")
	}
	// A worker starts; its type is asked for again before the view is
	// due for a read (Interval, 1s), once UnknownInterval (100ms) has
	// passed since the last lookup of an unknown name.
	start(t, rdb, config(c, "w1"), spec("count", "", schemaN))
	if known("count") {
		t.Fatal("an unknown name was looked up twice within UnknownInterval")
	}
	c.Add(100 * time.Millisecond)
	if !known("count") {
		t.Fatal("a just-announced type is not seen")
	}
	if _, w, _ := r.Types(ctx, "count"); w["count"] != 1 {
		t.Fatalf("workers = %v", w)
	}
	count := func(prefix string) int {
		n := 0
		for _, cmd := range counter.Commands() {
			if strings.HasPrefix(strings.ToLower(cmd), prefix) {
				n++
			}
		}
		return n
	}
	// A flood of made-up names: nothing within the interval, then one GET
	// of the version (unchanged, so no read), then, once the view is due,
	// one read.
	counter.Reset()
	flood := func() {
		for i := range 100 {
			if known(fmt.Sprintf("made-up-%d", i)) {
				t.Fatal("a made-up name is known")
			}
		}
	}
	flood()
	if n := counter.Count(); n != 0 {
		t.Fatalf("made-up names right after a check cost %d commands", n)
	}
	c.Add(100 * time.Millisecond)
	flood()
	if counter.Count() != 1 || count("get ") != 1 {
		t.Fatalf("100ms of made-up names cost %q, want one GET", counter.Commands())
	}
	counter.Reset()
	c.Add(time.Second)
	flood()
	if count("zrangebyscore") != 1 || count("get ") != 1 {
		t.Fatalf("a second of made-up names cost %q, want one read", counter.Commands())
	}
	// A known spec's schema is not fetched (or compiled) again.
	for _, cmd := range counter.Commands() {
		if strings.Contains(cmd, " spec") {
			t.Fatalf("a known digest's spec was fetched again: %q", cmd)
		}
	}
}

func TestOversizedOrBrokenAnnouncementsAreIgnored(t *testing.T) {
	rdb := redistest.Client(t)
	c := newClock()
	big := `{"type":"object","description":"` + strings.Repeat("x", registry.MaxSpecBytes) + `"}`
	if _, err := registry.NewAnnouncer(rdb, config(c, "w"), spec("big", "", big)); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("an oversized spec was accepted: %v", err)
	}
	for _, bad := range []jobs.TypeSpec{spec("has space", "", `{}`), spec("ok", "Bad Pool", `{}`), spec("ok", "", `[`)} {
		if _, err := registry.NewAnnouncer(rdb, config(c, "w"), bad); err == nil {
			t.Errorf("announcer accepted %q in pool %q", bad.Name, bad.Pool)
		}
	}
	// Written by hand, past the announcer's checks: the api skips them
	// and keeps serving the good type.
	start(t, rdb, config(c, "w1"), spec("good", "", schemaN))
	ctx := context.Background()
	now := float64(c.Now().UnixMilli())
	for name, text := range map[string]string{
		"huge":     `{"name":"huge","timeout":"1m","max_timeout":"1m","input_schema":{"description":"` + strings.Repeat("x", registry.MaxSpecBytes) + `"}}`,
		"notjson":  `{`,
		"badref":   `{"name":"badref","timeout":"1m","max_timeout":"1m","input_schema":{"$ref":"file:///etc/passwd"}}`,
		"misnamed": `{"name":"good","timeout":"1m","max_timeout":"1m","input_schema":{}}`,
		// The control: well-formed, so it is served.
		"handwritten": `{"name":"handwritten","timeout":"1m","max_timeout":"1m","input_schema":{"type":"object"}}`,
	} {
		sum := sha256.Sum256([]byte(text))
		rdb.HSet(ctx, registry.KeyPrefixType+name, "digest", "sha256:"+hex.EncodeToString(sum[:]), "spec", text)
		rdb.ZAdd(ctx, registry.KeyIndex, redis.Z{Score: now, Member: name})
	}
	cat, _ := fresh(t, rdb, c)
	if got := strings.Join(cat.Names(), ","); got != "good,handwritten" {
		t.Fatalf("names = %s", got)
	}
}
