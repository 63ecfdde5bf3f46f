package progress

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
)

// runningJob writes a running job's record straight into its slot (on a
// cluster, Store.Create spans slots), so that Store.Progress, which touches
// only the job's slot, announces events for it.
func runningJob(t testing.TB, rdb redis.UniversalClient, id string) {
	t.Helper()
	ctx := context.Background()
	now := fmt.Sprint(time.Now().UnixMilli())
	if err := rdb.HSet(ctx, jobs.JobKey(id), "id", id, "type", "t", "owner", "ann", "queue", "default",
		"state", "running", "attempts", "1", "created_at", now, "started_at", now, "version", "1").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.PExpire(ctx, jobs.JobKey(id), time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
}

// jobsByNode returns n job ids per primary (one group on a single server),
// keyed by the primary's address, each with a running record.
func jobsByNode(t *testing.T, rdb redis.UniversalClient, n int) map[string][]string {
	t.Helper()
	ctx := context.Background()
	nodes := map[string][]string{"": nil}
	cc, cluster := rdb.(*redis.ClusterClient)
	if cluster {
		nodes = map[string][]string{}
		var mu sync.Mutex
		if err := cc.ForEachMaster(ctx, func(_ context.Context, c *redis.Client) error {
			mu.Lock()
			nodes[c.Options().Addr] = nil
			mu.Unlock()
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if len(nodes) < 2 {
			t.Fatalf("a cluster of %d primaries", len(nodes))
		}
	}
	for i := 0; ; i++ {
		full := true
		for _, ids := range nodes {
			full = full && len(ids) >= n
		}
		if full {
			break
		}
		id := fmt.Sprintf("01a23000-0000-7000-8000-%012d", i)
		key := ""
		if cluster {
			c, err := cc.MasterForKey(ctx, jobs.JobChannel(id))
			if err != nil {
				t.Fatal(err)
			}
			key = c.Options().Addr
		}
		if len(nodes[key]) < n {
			runningJob(t, rdb, id)
			nodes[key] = append(nodes[key], id)
		}
	}
	return nodes
}

func startHub(t *testing.T, rdb redis.UniversalClient) *Hub {
	t.Helper()
	hub := NewHub(rdb, slog.New(slog.DiscardHandler))
	hub.Start(nil)
	t.Cleanup(hub.Close)
	return hub
}

// waitEvent waits for w to hold an event of type typ whose data contains
// want, and returns the events taken meanwhile.
func waitEvent(t *testing.T, w *Watcher, want string) []jobs.Event {
	t.Helper()
	var got []jobs.Event
	deadline := time.After(10 * time.Second)
	for {
		evs, _ := w.Take()
		got = append(got, evs...)
		for _, ev := range evs {
			if strings.Contains(ev.Data, want) {
				return got
			}
		}
		select {
		case <-w.Ready():
		case <-deadline:
			t.Fatalf("watcher of %s: no event with %q; got %v", w.job, want, got)
		}
	}
}

// TestHubFansOutFromEveryNode: watchers of jobs whose slots live on
// different primaries (on the cluster run; one server otherwise) all get
// their job's events, and only their job's.
func TestHubFansOutFromEveryNode(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Client(t)
	store := jobs.NewStore(rdb, nil)
	byNode := jobsByNode(t, rdb, 2)
	hub := startHub(t, rdb)
	watchers := map[string]*Watcher{}
	for _, ids := range byNode {
		for _, id := range ids {
			w := hub.Watch(id)
			defer w.Close()
			watchers[id] = w
		}
	}
	for id := range watchers {
		if _, err := store.Progress(ctx, id, 50, "half of "+id); err != nil {
			t.Fatal(err)
		}
	}
	for id, w := range watchers {
		for _, ev := range waitEvent(t, w, "half of "+id) {
			if ev.Type != jobs.EventProgress || !strings.Contains(ev.Data, id) {
				t.Errorf("watcher of %s got %+v", id, ev)
			}
		}
	}
	if got, want := hub.Received(), int64(len(watchers)); got != want {
		t.Errorf("hub received %d messages, want %d (one per event)", got, want)
	}
}

// TestHubHearsNothingOfUnwatchedJobs: with a few jobs watched out of many
// active, the hub receives the watched jobs' messages only; once the last
// watcher of a job has gone (and the linger passed), it stops receiving
// that job's too. On a global channel it would receive every event.
func TestHubHearsNothingOfUnwatchedJobs(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Client(t)
	store := jobs.NewStore(rdb, nil)
	byNode := jobsByNode(t, rdb, 5)
	hub := startHub(t, rdb)
	hub.linger = 0
	// Per node: jobs 0 and 1 watched, 2..4 not. Messages of one node come
	// in order on one connection, so once a watched job's event published
	// after the others' has arrived, any message of theirs would have too.
	watchers := map[string]*Watcher{}
	for _, ids := range byNode {
		for _, id := range ids[:2] {
			watchers[id] = hub.Watch(id)
		}
	}
	round := func(r int, barrier func(ids []string) string) {
		t.Helper()
		for _, ids := range byNode {
			for _, id := range ids[2:] {
				for i := range 3 {
					if _, err := store.Progress(ctx, id, float64(i), "unwatched"); err != nil {
						t.Fatal(err)
					}
				}
			}
			id := barrier(ids)
			if _, err := store.Progress(ctx, id, 50, fmt.Sprint("round ", r)); err != nil {
				t.Fatal(err)
			}
			waitEvent(t, watchers[id], fmt.Sprint("round ", r))
		}
	}
	round(1, func(ids []string) string { return ids[0] })
	if got, want := hub.Received(), int64(len(byNode)); got != want {
		t.Fatalf("hub received %d messages, want %d: only the watched jobs'", got, want)
	}

	// Job 0 of every node loses its watcher: its subscription goes.
	for _, ids := range byNode {
		watchers[ids[0]].Close()
	}
	waitfor.True(t, 5*time.Second, func() bool { return hub.Subscriptions() == len(byNode) })
	before := hub.Received()
	for _, ids := range byNode {
		for range 3 {
			if _, err := store.Progress(ctx, ids[0], 60, "nobody listens"); err != nil {
				t.Fatal(err)
			}
		}
	}
	round(2, func(ids []string) string { return ids[1] })
	if got, want := hub.Received()-before, int64(len(byNode)); got != want {
		t.Fatalf("after its watcher left, hub received %d messages, want %d", got, want)
	}
	for _, ids := range byNode {
		watchers[ids[1]].Close()
	}
}

// TestHubResyncsAfterLosingItsConnection: the server cuts the hub's
// subscription connections (CLIENT KILL on every node) and events are
// published before the hub has subscribed again. A stream watching the job
// misses none of them: it catches up from the event log once the hub has
// resubscribed.
func TestHubResyncsAfterLosingItsConnection(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Client(t)
	store := jobs.NewStore(rdb, nil)
	const id = "01a23000-0000-7000-8000-00000000aaaa"
	runningJob(t, rdb, id)
	hub := startHub(t, rdb)
	_, last, err := store.Snapshot(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	svc := &Service{cfg: Config{Store: store, Heartbeat: time.Hour, Now: time.Now}, logCache: newLogCache(logCacheBytes)}
	w := hub.Watch(id)
	defer w.Close()
	st := &stream{svc: svc, w: w, job: id, epoch: 0, expires: time.Now().Add(time.Hour), last: last}
	client := &syncBuffer{}
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		st.loop(hub.Done(), client, func() bool { return true })
	}()
	defer func() { hub.Close(); <-ended }()

	if _, err := store.Progress(ctx, id, 10, "before"); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, 5*time.Second, func() bool { return strings.Contains(client.String(), "before") })

	redistest.EachPrimary(t, rdb, func(ctx context.Context, c *redis.Client) error {
		return c.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err()
	})
	for i := 1; i <= 5; i++ {
		if _, err := store.Progress(ctx, id, float64(20+i), fmt.Sprint("during ", i)); err != nil {
			t.Fatal(err)
		}
	}
	waitfor.True(t, 10*time.Second, func() bool { return strings.Contains(client.String(), "during 5") })
	waitfor.True(t, 5*time.Second, func() bool { return hub.Resubscriptions() > 0 })

	// The stream sent the log's events in order, each once: the ids it
	// wrote are increasing and end at the log's last.
	var ids []string
	for _, line := range strings.Split(client.String(), "\n") {
		if s, ok := strings.CutPrefix(line, "id: "); ok {
			ids = append(ids, s)
		}
	}
	for i := 1; i < len(ids); i++ {
		if jobs.CompareEventIDs(ids[i-1], ids[i]) >= 0 {
			t.Fatalf("stream ids out of order or repeated: %v", ids)
		}
	}
	_, lastNow, err := store.Snapshot(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) == 0 || ids[len(ids)-1] != lastNow {
		t.Fatalf("stream ids %v do not end at the log's last event %s", ids, lastNow)
	}

	// And the hub still delivers live.
	if _, err := store.Progress(ctx, id, 90, "after"); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, 5*time.Second, func() bool { return strings.Contains(client.String(), "after") })
}

// TestHubOnServerWithoutShardChannels: the embedded dev server (miniredis)
// has no SPUBLISH/SSUBSCRIBE. The job scripts fall back to PUBLISH on the
// job's channel and the hub to SUBSCRIBE, so watchers still get events.
func TestHubOnServerWithoutShardChannels(t *testing.T) {
	ctx := context.Background()
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	if err := rdb.Do(ctx, "SSUBSCRIBE", "x").Err(); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Fatalf("miniredis SSUBSCRIBE: %v; this test expects a server without shard channels", err)
	}
	store := jobs.NewStore(rdb, nil)
	const a, b = "01a23000-0000-7000-8000-00000000bbb1", "01a23000-0000-7000-8000-00000000bbb2"
	runningJob(t, rdb, a)
	runningJob(t, rdb, b)
	hub := startHub(t, rdb)
	w := hub.watch(ctx, a, true)
	defer w.Close()
	if _, err := store.Progress(ctx, b, 5, "not watched"); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Progress(ctx, a, 50, "half"); err != nil {
		t.Fatal(err)
	}
	for _, ev := range waitEvent(t, w, "half") {
		if ev.Type != jobs.EventProgress || strings.Contains(ev.Data, "not watched") {
			t.Errorf("watcher got %+v", ev)
		}
	}
	if got := hub.Received(); got != 1 {
		t.Errorf("hub received %d messages, want 1: the watched job's", got)
	}
	if _, err := store.AppendLog(ctx, a, []jobs.LogLine{{Time: time.Now(), Text: "hello"}}, 0); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, 5*time.Second, func() bool { return w.takeLogs() })
}

// TestHubCachesOnlyWhatItHearsOf: a read may be cached only while the hub
// is subscribed to the job: the first read of a job nobody watches is not
// (hold reports the subscription unconfirmed), a read once the hold's
// subscription is confirmed is, and when the subscription is dropped the
// cached record goes with it.
func TestHubCachesOnlyWhatItHearsOf(t *testing.T) {
	rdb := redistest.Client(t)
	const id = "01a23000-0000-7000-8000-00000000ccc1"
	runningJob(t, rdb, id)
	hub := startHub(t, rdb)
	rc := newRecordCache(100, time.Hour)
	hub.records.Store(rc)
	var mu sync.Mutex
	now := time.Now()
	hub.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	hub.linger = 0

	if hub.hold(id, now.Add(time.Minute)) {
		t.Fatal("hold of a job never subscribed reports it confirmed")
	}
	waitfor.True(t, 5*time.Second, func() bool { return hub.hold(id, now.Add(time.Minute)) })
	_, gen := rc.get(id)
	rc.fill(id, gen, &jobs.Job{ID: id})
	if j, _ := rc.get(id); j == nil {
		t.Fatal("record not cached")
	}
	// The hold ends: the subscription is dropped, and the record too.
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	hub.mu.Lock()
	hub.lingerLocked(id, hub.subs[id]) // the clock moved: look again now
	hub.mu.Unlock()
	waitfor.True(t, 5*time.Second, func() bool { return hub.Subscriptions() == 0 })
	if j, _ := rc.get(id); j != nil {
		t.Fatal("the record outlived the job's subscription")
	}
}

// syncBuffer is a client that reads everything.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestHubFollowsAMigratingSlot: on a cluster of its own, the slot of a
// watched job moves to another primary. The old primary drops the job's
// shard channel (it pushes sunsubscribe); the hub subscribes again on the
// new primary, the watcher resyncs, and the job's next events reach it.
func TestHubFollowsAMigratingSlot(t *testing.T) {
	ctx := context.Background()
	addrs := redistest.Cluster(t)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { _ = rdb.Close() })
	store := jobs.NewStore(rdb, nil)
	const id = "01a23000-0000-7000-8000-00000000ddd1"
	runningJob(t, rdb, id)
	hub := startHub(t, rdb)
	w := hub.Watch(id)
	defer w.Close()
	if _, err := store.Progress(ctx, id, 10, "before"); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, w, "before")

	src, err := rdb.MasterForKey(ctx, jobs.JobChannel(id))
	if err != nil {
		t.Fatal(err)
	}
	slot, err := src.ClusterKeySlot(ctx, jobs.JobChannel(id)).Result()
	if err != nil {
		t.Fatal(err)
	}
	var dst *redis.Client
	var all []*redis.Client
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		t.Cleanup(func() { _ = c.Close() })
		all = append(all, c)
		if a != src.Options().Addr && dst == nil {
			dst = c
		}
	}
	srcID, err := src.Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil {
		t.Fatal(err)
	}
	dstID, err := dst.Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(dst.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", srcID).Err())
	must(src.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", dstID).Err())
	keys, err := src.ClusterGetKeysInSlot(ctx, int(slot), 100).Result()
	must(err)
	host, port, _ := strings.Cut(dst.Options().Addr, ":")
	args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
	for _, k := range keys {
		args = append(args, k)
	}
	must(src.Do(ctx, args...).Err())
	must(dst.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", dstID).Err())
	for _, c := range all {
		if c != dst {
			must(c.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", dstID).Err())
		}
	}

	waitfor.True(t, 10*time.Second, func() bool { return hub.Resubscriptions() > 0 })
	// The watcher is told to catch up from the log (what was published
	// while the channel moved is lost).
	waitfor.True(t, 5*time.Second, func() bool { w.mu.Lock(); defer w.mu.Unlock(); return w.behind })
	if _, err := store.Progress(ctx, id, 90, "after"); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, w, "after")
	if n, err := dst.Do(ctx, "PUBSUB", "SHARDNUMSUB", jobs.JobChannel(id)).Slice(); err != nil || len(n) != 2 || n[1] != int64(1) {
		t.Fatalf("the new primary's subscribers of the job's channel: %v %v, want the hub", n, err)
	}
}

// TestHubLingerKeepsTheSubscriptionForTheNextWatcher: a job's subscription
// outlives its last watcher by linger, so a client coming back (a long-poll's
// next request, an EventSource after its retry delay) finds it confirmed:
// no SUNSUBSCRIBE/SSUBSCRIBE round, no wait, and its events still arrive.
func TestHubLingerKeepsTheSubscriptionForTheNextWatcher(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Client(t)
	store := jobs.NewStore(rdb, nil)
	const id = "01a23000-0000-7000-8000-00000000eee1"
	runningJob(t, rdb, id)
	hub := startHub(t, rdb)
	hub.linger = time.Hour
	w := hub.Watch(id)
	hub.mu.Lock()
	s := hub.subs[id]
	live := s.live
	hub.mu.Unlock()
	if !live {
		t.Fatal("Watch returned before the job's subscription was confirmed")
	}
	w.Close()
	w = hub.Watch(id)
	defer w.Close()
	hub.mu.Lock()
	same := hub.subs[id] == s && s.live && s.timer == nil
	hub.mu.Unlock()
	if !same {
		t.Fatal("the next watcher did not find the lingering subscription")
	}
	if _, err := store.Progress(ctx, id, 50, "still there"); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, w, "still there")
}
