package progress

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/api/problem"
	"github.com/claimcheck/claimcheck/api/router"
	"github.com/claimcheck/claimcheck/internal/blob"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/s3test"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/tokens"
	"github.com/claimcheck/claimcheck/tokens/tokenstest"
)

// testClock is the service's clock in these tests: it moves only when a
// test says so.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *testClock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type nopCanceler struct{}

func (nopCanceler) DeleteTask(string, string) error { return nil }
func (nopCanceler) CancelProcessing(string) error   { return nil }

// onceEnv is a progress service on loopback HTTP, with a real Redis, a
// results directory (or bucket) and one succeeded job whose result is
// data.
type onceEnv struct {
	rdb      redis.UniversalClient
	store    *jobs.Store
	clock    *testClock
	srv      *httptest.Server
	svc      *Service
	jobKeys  *tokens.KeySet
	links    *tokens.LinkMinter
	verifier *tokens.LinkVerifier
	id       string
	data     []byte
}

// newOnceEnv starts the stack; with redirect, results are in an S3 bucket
// and downloads answer with redirects (Config.RedirectFor).
func newOnceEnv(t *testing.T, size int, redirect bool) *onceEnv {
	t.Helper()
	ctx := context.Background()
	e := &onceEnv{rdb: redistest.Client(t), clock: &testClock{t: time.Now().Truncate(time.Second)},
		id: "01a23000-0000-7000-8000-0000000000" + strconv.Itoa(10+rand.IntN(90))}
	e.store = jobs.NewStore(e.rdb, nil)
	e.data = make([]byte, size)
	rng := rand.NewChaCha8([32]byte{1})
	_, _ = rng.Read(e.data)

	var blobs blob.Store
	if redirect {
		b, err := blob.Open(ctx, s3test.StartFake(t).Bucket(t))
		if err != nil {
			t.Fatal(err)
		}
		blobs = b
	} else {
		dir, err := blob.NewDir(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		blobs = blob.StoreOf(dir)
	}
	w, err := blobs.Create(ctx, e.id, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(e.data); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(e.data)
	if _, err := e.store.Create(ctx, jobs.NewJob{ID: e.id, Type: "t", Owner: "ann", Queue: "default", Timeout: time.Minute, TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Start(ctx, e.id, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Succeed(ctx, e.id, 1, jobs.Result{ContentType: "application/octet-stream", Size: int64(size),
		SHA256: hex.EncodeToString(sum[:])}, time.Hour); err != nil {
		t.Fatal(err)
	}

	e.jobKeys = newKeys(t)
	linkKeys := newKeys(t)
	e.links = &tokens.LinkMinter{Keys: linkKeys, Now: e.clock.Now}
	e.verifier = &tokens.LinkVerifier{Keys: linkKeys, Now: e.clock.Now}
	hub := NewHub(e.rdb, slog.New(slog.DiscardHandler))
	ready := make(chan struct{})
	hub.Start(ready)
	t.Cleanup(hub.Close)
	<-ready
	cfg := Config{Store: e.store, Verifier: &tokens.Verifier{Keys: e.jobKeys, Now: e.clock.Now}, Blobs: blobs,
		Canceler: nopCanceler{}, Hub: hub, Links: e.links, LinkVerifier: e.verifier, Now: e.clock.Now,
		Logger: slog.New(slog.DiscardHandler)}
	if redirect {
		cfg.RedirectFor = time.Minute
	}
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.svc = svc
	r := router.New(slog.New(slog.DiscardHandler))
	svc.Register(r)
	e.srv = httptest.NewServer(r)
	t.Cleanup(e.srv.Close)
	return e
}

func newKeys(t *testing.T) *tokens.KeySet {
	return tokenstest.NewKeySet(t)
}

// link asks the service for a link (POST /v1/jobs/{id}/links with a job
// token) and returns its URL.
func (e *onceEnv) link(t *testing.T, body string) string {
	t.Helper()
	tok, _, err := (&tokens.Minter{Keys: e.jobKeys, Now: e.clock.Now}).MintJob(e.id, "ann", tokens.JobScopes, e.clock.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/jobs/"+e.id+"/links", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out LinkResponse
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || res.StatusCode != http.StatusCreated {
		t.Fatalf("create link: %d %v", res.StatusCode, err)
	}
	return e.srv.URL + out.URL
}

// stateKey is the Redis key of a one-time link's state.
func (e *onceEnv) stateKey(t *testing.T, url string) string {
	t.Helper()
	cl, err := e.verifier.VerifyLink(url[strings.Index(url, "sig=")+4:])
	if err != nil {
		t.Fatal(err)
	}
	if !cl.Once {
		t.Fatalf("link %+v is not one-time", cl)
	}
	return jobs.OnceLinkKey(e.id, cl.ID)
}

func (e *onceEnv) state(t *testing.T, key string) map[string]string {
	t.Helper()
	m, err := e.rdb.HGetAll(context.Background(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func get(t *testing.T, method, url string, hdr ...string) answer {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{res.StatusCode, res.Header, b}
}

var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// refused checks a problem answer: its status and type, and that it
// carries no result bytes.
func refused(t *testing.T, what string, a answer, status int, kind string) {
	t.Helper()
	if a.status != status {
		t.Fatalf("%s: %d %.200s, want %d %s", what, a.status, a.body, status, kind)
	}
	if a.header.Get("Content-Type") != problem.ContentType && len(a.body) > 0 {
		t.Fatalf("%s: Content-Type %q", what, a.header.Get("Content-Type"))
	}
	var p struct{ Type string }
	if len(a.body) > 0 { // none for HEAD
		if err := json.Unmarshal(a.body, &p); err != nil || p.Type != problem.TypePrefix+kind {
			t.Fatalf("%s: problem %.200s, want type %s", what, a.body, kind)
		}
	}
}

// TestOnceLinkConcurrentDownloads: of 20 simultaneous GETs of one one-time
// link, exactly one gets the result, byte for byte; every other is 409
// link-in-use or 410 link-used with a problem body and not one result
// byte; afterwards the link is used up, and HEAD says so without a body.
func TestOnceLinkConcurrentDownloads(t *testing.T) {
	e := newOnceEnv(t, 3<<20, false)
	url := e.link(t, `{"once":true}`)
	const n = 20
	answers := make([]answer, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			answers[i] = get(t, http.MethodGet, url)
		}()
	}
	close(start)
	wg.Wait()
	won := 0
	for i, a := range answers {
		switch a.status {
		case http.StatusOK:
			won++
			if !bytes.Equal(a.body, e.data) {
				t.Fatalf("the winner got %d bytes that are not the result", len(a.body))
			}
		case http.StatusConflict:
			refused(t, "loser "+strconv.Itoa(i), a, http.StatusConflict, "link-in-use")
			if a.header.Get("Retry-After") == "" {
				t.Errorf("409 link-in-use without Retry-After")
			}
		default:
			refused(t, "loser "+strconv.Itoa(i), a, http.StatusGone, "link-used")
		}
	}
	if won != 1 {
		t.Fatalf("%d of %d concurrent downloads got the result, want exactly 1", won, n)
	}
	key := e.stateKey(t, url)
	e.used(t, key)
	before := e.state(t, key)
	refused(t, "GET after", get(t, http.MethodGet, url), http.StatusGone, "link-used")
	refused(t, "HEAD after", get(t, http.MethodHead, url), http.StatusGone, "link-used")
	refused(t, "resume after", get(t, http.MethodGet, url, "Range", "bytes=100-"), http.StatusGone, "link-used")
	if after := e.state(t, key); !equalMaps(before, after) {
		t.Fatalf("refusals changed the state: %v → %v", before, after)
	}
	// The state lives at least until the link's exp.
	if ttl := e.rdb.PTTL(context.Background(), key).Val(); ttl < tokens.DefaultLinkLifetime-time.Minute {
		t.Fatalf("a used link's state expires in %v, before the link does", ttl)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestOnceLinkHeadClaimsNothing: HEAD of a fresh one-time link answers the
// headers and leaves no state; the GET after it gets everything, and a
// second GET is 410. A plain link of the same job keeps working.
func TestOnceLinkHeadClaimsNothing(t *testing.T) {
	e := newOnceEnv(t, 100_000, false)
	url := e.link(t, `{"once":true,"filename":"r.bin"}`)
	key := e.stateKey(t, url)
	h := get(t, http.MethodHead, url)
	if h.status != http.StatusOK || h.header.Get("Content-Length") != "100000" || len(h.body) != 0 ||
		h.header.Get("Content-Disposition") != "attachment; filename=r.bin" {
		t.Fatalf("HEAD: %d %v", h.status, h.header)
	}
	if n := e.rdb.Exists(context.Background(), key).Val(); n != 0 {
		t.Fatalf("HEAD left state: %v", e.state(t, key))
	}
	a := get(t, http.MethodGet, url)
	if a.status != http.StatusOK || !bytes.Equal(a.body, e.data) || a.header.Get("Cache-Control") != "private, no-store" ||
		a.header.Get("Referrer-Policy") != "no-referrer" {
		t.Fatalf("GET: %d, %d bytes, %v", a.status, len(a.body), a.header)
	}
	e.used(t, key)
	refused(t, "second GET", get(t, http.MethodGet, url), http.StatusGone, "link-used")

	plain := e.link(t, `{}`)
	for i := range 3 {
		if a := get(t, http.MethodGet, plain); a.status != http.StatusOK || !bytes.Equal(a.body, e.data) {
			t.Fatalf("plain link, download %d: %d", i, a.status)
		}
	}
}

// TestOnceLinkRangeStart: a one-time link's first request may start at N
// (Range: bytes=N-); it is used up when that reaches the end. Any other
// Range is 416 link-range and claims nothing.
func TestOnceLinkRangeStart(t *testing.T) {
	e := newOnceEnv(t, 50_000, false)
	url := e.link(t, `{"once":true}`)
	key := e.stateKey(t, url)
	for _, rng := range []string{"bytes=0-99", "bytes=-100", "bytes=0-1,5-", "bytes=50000-", "items=3-", "bytes=+3-", "bytes=x-"} {
		refused(t, "Range "+rng, get(t, http.MethodGet, url, "Range", rng), http.StatusRequestedRangeNotSatisfiable, "link-range")
	}
	if n := e.rdb.Exists(context.Background(), key).Val(); n != 0 {
		t.Fatalf("a refused range left state: %v", e.state(t, key))
	}
	a := get(t, http.MethodGet, url, "Range", "bytes=40000-")
	if a.status != http.StatusPartialContent || !bytes.Equal(a.body, e.data[40000:]) ||
		a.header.Get("Content-Range") != "bytes 40000-49999/50000" {
		t.Fatalf("Range from 40000: %d %q, %d bytes", a.status, a.header.Get("Content-Range"), len(a.body))
	}
	e.used(t, key)
	refused(t, "after", get(t, http.MethodGet, url, "Range", "bytes=0-"), http.StatusGone, "link-used")
}

// stallingGet starts a GET of url through a connection with a small
// receive buffer, reads k bytes and hangs up: the server's transfer is
// interrupted once the socket buffers are full, after serving some offset
// above k. It returns the bytes read.
func stallingGet(t *testing.T, url string, k int) []byte {
	t.Helper()
	res, got := stalledGet(t, url, k)
	res.Body.Close() // before the end: the connection is closed
	return got
}

// stalledGet is stallingGet that keeps the connection open, not reading:
// the server's transfer blocks in a write.
func stalledGet(t *testing.T, url string, k int) (*http.Response, []byte) {
	t.Helper()
	d := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10) }); err != nil {
			return err
		}
		return serr
	}}
	tr := &http.Transport{DialContext: d.DialContext, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	res, err := (&http.Client{Transport: tr}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	if res.StatusCode != http.StatusOK {
		t.Fatalf("stalling GET: %d", res.StatusCode)
	}
	got := make([]byte, k)
	if _, err := io.ReadFull(res.Body, got); err != nil {
		t.Fatal(err)
	}
	return res, got
}

// used waits for a one-time link's state to say it is used up: the
// server records that after its last byte went out, so a client can have
// the whole result a moment before (and meanwhile the link is in use).
func (e *onceEnv) used(t *testing.T, key string) {
	t.Helper()
	waitfor.True(t, 10*time.Second, func() bool { return e.state(t, key)["st"] == "used" })
}

// interrupted waits for a one-time link's transfer to be recorded as
// interrupted and returns the offset it stopped at.
func (e *onceEnv) interrupted(t *testing.T, key string) int64 {
	t.Helper()
	waitfor.True(t, 10*time.Second, func() bool { return e.state(t, key)["st"] == "interrupted" })
	off, err := strconv.ParseInt(e.state(t, key)["off"], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return off
}

// TestOnceLinkResume: a client that hangs up mid-download leaves the link
// interrupted at the exact offset the server wrote up to. Within the
// window, only Range: bytes=<that offset>- is served, and it gets the
// rest: what was served before plus it is the result. Anything else is 409
// link-interrupted and changes nothing; after the resume, 410.
func TestOnceLinkResume(t *testing.T) {
	e := newOnceEnv(t, 16<<20, false)
	url := e.link(t, `{"once":true}`)
	key := e.stateKey(t, url)
	const k = 100_000
	head := stallingGet(t, url, k)
	if !bytes.Equal(head, e.data[:k]) {
		t.Fatal("the first bytes are not the result's")
	}
	n := e.interrupted(t, key)
	if n < k || n >= int64(len(e.data)) {
		t.Fatalf("interrupted at %d, outside [%d, %d)", n, k, len(e.data))
	}
	before := e.state(t, key)
	e.clock.Add(ResumeWindow - time.Second) // still within the window
	for name, hdr := range map[string][]string{
		"no Range":       nil,
		"from 0":         {"Range", "bytes=0-"},
		"one byte early": {"Range", "bytes=" + strconv.FormatInt(n-1, 10) + "-"},
		"one byte late":  {"Range", "bytes=" + strconv.FormatInt(n+1, 10) + "-"},
		"If-Range voids": {"Range", "bytes=" + strconv.FormatInt(n, 10) + "-", "If-Range", `"sha256:other"`},
	} {
		refused(t, name, get(t, http.MethodGet, url, hdr...), http.StatusConflict, "link-interrupted")
	}
	h := get(t, http.MethodHead, url, "Range", "bytes="+strconv.FormatInt(n, 10)+"-")
	if h.status != http.StatusPartialContent || h.header.Get("Content-Length") != strconv.FormatInt(int64(len(e.data))-n, 10) {
		t.Fatalf("HEAD of the resume: %d %v", h.status, h.header)
	}
	if after := e.state(t, key); !equalMaps(before, after) {
		t.Fatalf("refusals changed the state: %v → %v", before, after)
	}
	a := get(t, http.MethodGet, url, "Range", "bytes="+strconv.FormatInt(n, 10)+"-", "If-Range", h.header.Get("ETag"))
	if a.status != http.StatusPartialContent ||
		a.header.Get("Content-Range") != "bytes "+strconv.FormatInt(n, 10)+"-"+strconv.Itoa(len(e.data)-1)+"/"+strconv.Itoa(len(e.data)) {
		t.Fatalf("resume: %d %q", a.status, a.header.Get("Content-Range"))
	}
	if whole := append(append([]byte(nil), e.data[:n]...), a.body...); !bytes.Equal(whole, e.data) {
		t.Fatalf("served %d then %d bytes: not the result", n, len(a.body))
	}
	e.used(t, key)
	refused(t, "after the resume", get(t, http.MethodGet, url, "Range", "bytes="+strconv.FormatInt(n, 10)+"-"), http.StatusGone, "link-used")
}

// TestOnceLinkResumeWindowPasses: past ResumeWindow an interrupted link is
// used up, even for the right offset.
func TestOnceLinkResumeWindowPasses(t *testing.T) {
	e := newOnceEnv(t, 16<<20, false)
	url := e.link(t, `{"once":true}`)
	key := e.stateKey(t, url)
	stallingGet(t, url, 1000)
	n := e.interrupted(t, key)
	e.clock.Add(ResumeWindow)
	resume := []string{"Range", "bytes=" + strconv.FormatInt(n, 10) + "-"}
	refused(t, "HEAD past the window", get(t, http.MethodHead, url, resume...), http.StatusGone, "link-used")
	if st := e.state(t, key)["st"]; st != "interrupted" {
		t.Fatalf("HEAD changed the state to %q", st)
	}
	refused(t, "past the window", get(t, http.MethodGet, url, resume...), http.StatusGone, "link-used")
	if st := e.state(t, key)["st"]; st != "used" {
		t.Fatalf("state %q past the window", st)
	}
}

// TestOnceLinkLeaseRenewedWhileWriting: a transfer blocked on a client that
// reads slowly renews its lease: however long past the first lease it
// takes, the link stays in use (not interrupted), and the client gets
// everything once it reads on. A transfer whose claim was taken from it
// (here overwritten, as a takeover after a lapsed lease would) stops at
// once: its client gets less than the result and the state is not touched.
func TestOnceLinkLeaseRenewedWhileWriting(t *testing.T) {
	e := newOnceEnv(t, 16<<20, false)
	e.svc.renewEvery = 10 * time.Millisecond
	ctx := context.Background()

	url := e.link(t, `{"once":true}`)
	key := e.stateKey(t, url)
	res, head := stalledGet(t, url, 1000)
	waitfor.True(t, 10*time.Second, func() bool { return e.state(t, key)["st"] == "serving" })
	e.clock.Add(10 * onceLease)
	waitfor.True(t, 10*time.Second, func() bool {
		lease, _ := strconv.ParseInt(e.state(t, key)["lease"], 10, 64)
		return lease > e.clock.Now().UnixMilli()
	})
	refused(t, "while it writes", get(t, http.MethodGet, url), http.StatusConflict, "link-in-use")
	rest, err := io.ReadAll(res.Body)
	if err != nil || !bytes.Equal(append(head, rest...), e.data) {
		t.Fatalf("the slow client got %d+%d bytes (%v), not the result", len(head), len(rest), err)
	}
	e.used(t, key)

	url = e.link(t, `{"once":true}`)
	key = e.stateKey(t, url)
	res, head = stalledGet(t, url, 1000)
	waitfor.True(t, 10*time.Second, func() bool { return e.state(t, key)["st"] == "serving" })
	if err := e.rdb.HSet(ctx, key, "claim", "another").Err(); err != nil {
		t.Fatal(err)
	}
	before := e.state(t, key)
	rest, err = io.ReadAll(res.Body)
	if err == nil || len(head)+len(rest) >= len(e.data) {
		t.Fatalf("a transfer that lost its claim went on: %d+%d bytes, %v", len(head), len(rest), err)
	}
	if reserved, _ := strconv.Atoi(before["off"]); len(head)+len(rest) > reserved {
		t.Fatalf("it wrote %d bytes, past its reservation %d", len(head)+len(rest), reserved)
	}
	if after := e.state(t, key); !equalMaps(before, after) {
		t.Fatalf("the transfer that lost its claim changed the state: %v → %v", before, after)
	}
}

// TestOnceLinkCrashedClaimLapses: a server that died mid-transfer leaves
// its claim (written here as it would have: serving, its lease, its
// reservation). Until the lease ends the link is in use; then it is
// interrupted at the reservation, for a window counted from the lease's
// end; past that it is used up.
func TestOnceLinkCrashedClaimLapses(t *testing.T) {
	e := newOnceEnv(t, 3<<20, false)
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		after     time.Duration // past the lease's end
		want      int           // for the resume at the reservation
		from0     int           // for a GET without Range
		from0Kind string
	}{
		{"resumed within the window", ResumeWindow - time.Second, http.StatusPartialContent, http.StatusConflict, "link-interrupted"},
		{"past the window", ResumeWindow, http.StatusGone, http.StatusGone, "link-used"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := e.link(t, `{"once":true}`)
			key := e.stateKey(t, url)
			lease := e.clock.Now().Add(onceLease)
			const reserved = onceReserve
			if err := e.rdb.HSet(ctx, key, "st", "serving", "claim", "crashed", "lease", lease.UnixMilli(), "off", reserved).Err(); err != nil {
				t.Fatal(err)
			}
			e.rdb.Expire(ctx, key, time.Hour)
			resume := []string{"Range", "bytes=" + strconv.Itoa(reserved) + "-"}
			a := get(t, http.MethodGet, url, resume...)
			refused(t, "while the lease holds", a, http.StatusConflict, "link-in-use")
			if ra, _ := strconv.Atoi(a.header.Get("Retry-After")); ra < 1 || ra > int(onceLease/time.Second) {
				t.Fatalf("Retry-After %q", a.header.Get("Retry-After"))
			}
			e.clock.Add(onceLease + tc.after)
			refused(t, "from 0", get(t, http.MethodGet, url), tc.from0, tc.from0Kind)
			a = get(t, http.MethodGet, url, resume...)
			if a.status != tc.want {
				t.Fatalf("resume at the reservation: %d %.200s, want %d", a.status, a.body, tc.want)
			}
			if tc.want == http.StatusPartialContent && !bytes.Equal(a.body, e.data[reserved:]) {
				t.Fatalf("resume: %d bytes that are not the rest", len(a.body))
			}
			e.used(t, key)
		})
	}
}

// TestOnceLinkOfRevokedJob: revoking the job's tokens kills a one-time
// link before it is claimed (401, no state), as any other link.
func TestOnceLinkOfRevokedJob(t *testing.T) {
	e := newOnceEnv(t, 10_000, false)
	url := e.link(t, `{"once":true}`)
	key := e.stateKey(t, url)
	if _, err := e.store.RevokeTokens(context.Background(), e.id); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, 10*time.Second, func() bool { return get(t, http.MethodHead, url).status == http.StatusUnauthorized })
	refused(t, "GET", get(t, http.MethodGet, url), http.StatusUnauthorized, "invalid-token")
	if n := e.rdb.Exists(context.Background(), key).Val(); n != 0 {
		t.Fatalf("a revoked link left state: %v", e.state(t, key))
	}
}

// TestOnceLinkNeverRedirected: with result redirects on, a plain link is
// answered with a 307 to the store, but a one-time link is served here: a
// signed URL could be fetched any number of times.
func TestOnceLinkNeverRedirected(t *testing.T) {
	e := newOnceEnv(t, 200_000, true)
	if a := get(t, http.MethodGet, e.link(t, `{}`)); a.status != http.StatusTemporaryRedirect {
		t.Fatalf("plain link with redirects on: %d", a.status)
	}
	url := e.link(t, `{"once":true}`)
	a := get(t, http.MethodGet, url)
	if a.status != http.StatusOK || a.header.Get("Location") != "" || !bytes.Equal(a.body, e.data) {
		t.Fatalf("one-time link with redirects on: %d %q, %d bytes", a.status, a.header.Get("Location"), len(a.body))
	}
	e.used(t, e.stateKey(t, url))
	refused(t, "again", get(t, http.MethodGet, url), http.StatusGone, "link-used")
}

// TestOnceLinkStalledTransferEnds: a client that stops reading does not
// hold a one-time link for ever. Its transfer's write is cut off after
// stallAfter without progress (the lease is otherwise renewed as long as
// the write blocks, so the claim, a goroutine and a Redis call every
// onceRenew would last as long as the client kept the connection open),
// and the link is left interrupted at what was handed over, resumable from
// there: the rest, once.
func TestOnceLinkStalledTransferEnds(t *testing.T) {
	e := newOnceEnv(t, 16<<20, false)
	e.svc.renewEvery = 10 * time.Millisecond
	e.svc.stallAfter = 200 * time.Millisecond
	url := e.link(t, `{"once":true}`)
	key := e.stateKey(t, url)
	const k = 1000
	_, head := stalledGet(t, url, k) // the connection stays open, unread
	n := e.interrupted(t, key)
	if n < k || n >= int64(len(e.data)) {
		t.Fatalf("interrupted at %d, outside [%d, %d)", n, k, len(e.data))
	}
	if !bytes.Equal(head, e.data[:k]) {
		t.Fatal("the first bytes are not the result's")
	}
	a := get(t, http.MethodGet, url, "Range", "bytes="+strconv.FormatInt(n, 10)+"-")
	if a.status != http.StatusPartialContent || !bytes.Equal(a.body, e.data[n:]) {
		t.Fatalf("resume after the stall: %d, %d bytes", a.status, len(a.body))
	}
	e.used(t, key)
}

// TestOnceLinkInterruptedSaysWhereToResume: a client whose connection
// broke has fewer bytes than the server handed over (what sat in socket
// buffers is lost), so it cannot know the one offset a resume is served
// from; the 409 link-interrupted names it (resume_from), for a transfer
// that stopped and for one whose server's lease lapsed, and a resume from
// there gets the rest.
func TestOnceLinkInterruptedSaysWhereToResume(t *testing.T) {
	e := newOnceEnv(t, 16<<20, false)
	url := e.link(t, `{"once":true}`)
	key := e.stateKey(t, url)
	const k = 1000
	stallingGet(t, url, k)
	n := e.interrupted(t, key)
	if n <= k {
		t.Skipf("the server handed over only %d bytes: nothing to tell apart", n)
	}
	a := get(t, http.MethodGet, url, "Range", "bytes="+strconv.Itoa(k)+"-") // what the client has
	refused(t, "resume from the client's count", a, http.StatusConflict, "link-interrupted")
	var p struct {
		ResumeFrom *int64 `json:"resume_from"`
	}
	if err := json.Unmarshal(a.body, &p); err != nil || p.ResumeFrom == nil || *p.ResumeFrom != n {
		t.Fatalf("409 %s: want resume_from %d", a.body, n)
	}
	r := get(t, http.MethodGet, url, "Range", "bytes="+strconv.FormatInt(*p.ResumeFrom, 10)+"-")
	if r.status != http.StatusPartialContent || !bytes.Equal(r.body, e.data[n:]) {
		t.Fatalf("resume from resume_from: %d, %d bytes", r.status, len(r.body))
	}

	// A crashed server's claim: interrupted at its reservation once the
	// lease lapses.
	url = e.link(t, `{"once":true}`)
	key = e.stateKey(t, url)
	if err := e.rdb.HSet(context.Background(), key, "st", "serving", "claim", "gone",
		"lease", e.clock.Now().UnixMilli(), "off", onceReserve).Err(); err != nil {
		t.Fatal(err)
	}
	a = get(t, http.MethodGet, url)
	refused(t, "after a lapsed lease", a, http.StatusConflict, "link-interrupted")
	if err := json.Unmarshal(a.body, &p); err != nil || p.ResumeFrom == nil || *p.ResumeFrom != onceReserve {
		t.Fatalf("409 %s: want resume_from %d", a.body, onceReserve)
	}
}

// TestOnceLinksPerJobCapped: every used one-time link leaves its state in
// Redis until the link's exp (up to a day), so without a cap one job
// token could fill Redis (noeviction: every write of every job then
// fails) by minting one-time links and taking one byte through each. A
// job gets at most onceLinkCap of them; past it minting is 429
// too-many-links, writes no state, and plain links still mint.
func TestOnceLinksPerJobCapped(t *testing.T) {
	e := newOnceEnv(t, 1000, false)
	e.svc.onceLinkCap = 3
	for range 3 {
		url := e.link(t, `{"once":true}`)
		if a := get(t, http.MethodGet, url, "Range", "bytes=999-"); a.status != http.StatusPartialContent {
			t.Fatalf("one byte through a one-time link: %d", a.status)
		}
	}
	before := e.state(t, jobs.JobKey(e.id))
	tok, _, err := (&tokens.Minter{Keys: e.jobKeys, Now: e.clock.Now}).MintJob(e.id, "ann", tokens.JobScopes, e.clock.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	post := func(body string) answer {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/jobs/"+e.id+"/links", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return answer{res.StatusCode, res.Header, b}
	}
	refused(t, "a fourth one-time link", post(`{"once":true}`), http.StatusTooManyRequests, "too-many-links")
	if after := e.state(t, jobs.JobKey(e.id)); !equalMaps(before, after) {
		t.Fatalf("the refusal changed the record: %v → %v", before, after)
	}
	if a := post(`{}`); a.status != http.StatusCreated {
		t.Fatalf("a plain link past the cap: %d %s", a.status, a.body)
	}
}
