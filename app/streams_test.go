package app_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/api/progress"
	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/client"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/metrics"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/tokens"
)

// reissue asks the api for another token for sub's job.
func (s *stack) reissue(t *testing.T, sub submitted, body string) (string, time.Time) {
	t.Helper()
	r := do(t, "POST", s.api.URL+"/v1/jobs/"+sub.ID+"/token", s.apiKey, strings.NewReader(body))
	if r.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(r.Body)
		t.Fatalf("reissue %s: %d %s", body, r.StatusCode, b)
	}
	tok := decode[struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}](t, r)
	return tok.Token, tok.ExpiresAt
}

// openEventsCtx is openEvents whose reads end with ctx, so a test waiting
// for an event that never comes fails instead of hanging.
func openEventsCtx(t *testing.T, ctx context.Context, url, token string) *sseStream {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("events: %d %s", resp.StatusCode, b)
	}
	return &sseStream{resp: resp, r: bufio.NewReader(resp.Body)}
}

// nextNot returns the next event that is not of type skip.
func (s *sseStream) nextNot(skip string) (sseEvent, error) {
	for {
		ev, err := s.next()
		if err != nil || ev.Type != skip {
			return ev, err
		}
	}
}

// until reads events up to the first of type typ.
func (s *sseStream) until(typ string) (sseEvent, error) {
	for {
		ev, err := s.next()
		if err != nil || ev.Type == typ {
			return ev, err
		}
	}
}

// counterValue reads a counter's (or gauge's) current value.
func counterValue(m interface{ Write(*dto.Metric) error }) float64 {
	var d dto.Metric
	_ = m.Write(&d)
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

func endReason(t *testing.T, ev sseEvent) string {
	t.Helper()
	var e struct{ Reason string }
	if ev.Type != "end" || json.Unmarshal([]byte(ev.Data), &e) != nil {
		t.Fatalf("want an end event, got %+v", ev)
	}
	return e.Reason
}

// refusedStream asserts that opening url with token is refused as too many
// streams, for reason, and that nothing was opened.
func refusedStream(t *testing.T, s *stack, url, token, reason string) {
	t.Helper()
	before, refusals := s.prog.Watchers(), counterValue(metrics.StreamsRefused.WithLabelValues(reason))
	r := do(t, "GET", url, token, nil)
	p := decode[problemBody](t, r)
	if r.StatusCode != http.StatusTooManyRequests || p.Type != "urn:claimcheck:problem:too-many-streams" ||
		r.Header.Get("Retry-After") == "" || r.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("stream over the %s cap: %d %q %+v", reason, r.StatusCode, r.Header.Get("Retry-After"), p)
	}
	if got := counterValue(metrics.StreamsRefused.WithLabelValues(reason)); got != refusals+1 {
		t.Fatalf("refusals{reason=%s} went from %v to %v", reason, refusals, got)
	}
	if s.prog.Watchers() != before {
		t.Fatalf("a refused stream was opened: %d watchers, had %d", s.prog.Watchers(), before)
	}
}

func TestFinding6StreamCapsPerTokenJobAndAddress(t *testing.T) {
	t.Run("default per-token cap", func(t *testing.T) {
		s := newStack(t)
		sub := s.submit(t, `{"type":"stepper","input":{"steps":1}}`)
		url := s.progress.URL + sub.Links.Events
		var open []*sseStream
		for range 4 {
			st := openEvents(t, url, sub.Token)
			st.must(t, "state")
			open = append(open, st)
		}
		refusedStream(t, s, url, sub.Token, "token")
		// A waiting long-poll holds a watcher just as a stream does.
		etag := etagOf(t, s, sub)
		before := s.prog.Watchers()
		r := do(t, "GET", s.progress.URL+sub.Links.Self, sub.Token, nil, "If-None-Match", etag, "Prefer", "wait=30")
		if p := decode[problemBody](t, r); r.StatusCode != 429 || p.Type != "urn:claimcheck:problem:too-many-streams" || s.prog.Watchers() != before {
			t.Fatalf("long-poll over the cap: %d %+v", r.StatusCode, p)
		}
		// The streams that are open still work.
		s.step <- struct{}{}
		for _, st := range open {
			if ev, err := st.until("done"); err != nil {
				t.Fatalf("an open stream after a refusal: %+v %v", ev, err)
			}
		}
		// Once they are gone, the token may open streams again.
		waitfor.True(t, 5*time.Second, func() bool { return s.prog.Watchers() == 0 })
		openEvents(t, url, sub.Token).must(t, "done")
	})

	t.Run("configured per-job and per-address caps", func(t *testing.T) {
		s := newStack(t, func(c *app.Config) {
			c.EventHeartbeat = 20 * time.Millisecond
			c.Streams = progress.StreamLimits{PerToken: 2, PerJob: 3, PerAddress: 4}
		})
		a := s.submit(t, `{"type":"stepper","input":{"steps":1}}`)
		b := s.submit(t, `{"type":"stepper","input":{"steps":1}}`)
		ua, ub := s.progress.URL+a.Links.Events, s.progress.URL+b.Links.Events
		a2, _ := s.reissue(t, a, `{"scope":"job:read"}`)
		a3, _ := s.reissue(t, a, `{"scope":"job:read"}`)
		openEvents(t, ua, a.Token).must(t, "state")
		first := openEvents(t, ua, a.Token)
		first.must(t, "state")
		refusedStream(t, s, ua, a.Token, "token")
		openEvents(t, ua, a2).must(t, "state")
		refusedStream(t, s, ua, a3, "job") // a3 has none open: the job's cap
		openEvents(t, ub, b.Token).must(t, "state")
		b2, _ := s.reissue(t, b, `{"scope":"job:read"}`)
		refusedStream(t, s, ub, b2, "address") // 4 open from this address
		// Closing a stream frees its slot once the server notices (at its
		// next heartbeat).
		first.resp.Body.Close()
		waitfor.True(t, 5*time.Second, func() bool { return s.prog.Watchers() == 3 })
		openEvents(t, ub, b2).must(t, "state")
		s.step <- struct{}{}
		s.step <- struct{}{}
		s.waitState(t, a, jobs.StateSucceeded)
		s.waitState(t, b, jobs.StateSucceeded)
	})
}

func TestFinding7StreamEndsAtTokenExpiry(t *testing.T) {
	s := newStack(t)
	sub := s.submit(t, `{"type":"stepper","input":{"steps":2}}`)
	s.waitState(t, sub, jobs.StateRunning) // and nothing changes until a step is released
	short, exp := s.reissue(t, sub, `{"scope":"job:read","expires_in":"2s"}`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := openEventsCtx(t, ctx, s.progress.URL+sub.Links.Events, short)
	st.must(t, "state")
	// A long-poll with the same token, waiting past its exp.
	etag := do(t, "GET", s.progress.URL+sub.Links.Self, short, nil).Header.Get("ETag")
	polled := make(chan *http.Response, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "GET", s.progress.URL+sub.Links.Self, nil)
		req.Header.Set("Authorization", "Bearer "+short)
		req.Header.Set("If-None-Match", etag)
		req.Header.Set("Prefer", "wait=60")
		resp, _ := http.DefaultClient.Do(req)
		polled <- resp
	}()
	ev, err := st.nextNot("state")
	if err != nil {
		t.Fatalf("the stream outlived its token (exp %v): %v", exp, err)
	}
	if r := endReason(t, ev); r != "token_expired" {
		t.Fatalf("end reason %q", r)
	}
	if time.Now().Before(exp) {
		t.Fatalf("the stream ended before its token's exp %v", exp)
	}
	if _, err := st.next(); err != io.EOF {
		t.Fatalf("stream not closed after end: %v", err)
	}
	// The long-poll answers no data after exp: it is refused.
	resp := <-polled
	if resp == nil {
		t.Fatal("long-poll failed")
	}
	defer resp.Body.Close()
	var p problemBody
	_ = json.NewDecoder(resp.Body).Decode(&p)
	if resp.StatusCode != http.StatusUnauthorized || p.Type != "urn:claimcheck:problem:invalid-token" {
		t.Fatalf("long-poll reaching exp: %d %+v", resp.StatusCode, p)
	}
	// The SDK stops too, with a typed error, instead of reconnecting.
	_, err = client.New(s.progress.URL).Wait(ctx, sub.ID, short, nil)
	if !errors.Is(err, client.ErrTokenExpired) {
		t.Fatalf("Wait with an expired token: %v", err)
	}
	s.step <- struct{}{}
	s.step <- struct{}{}
	s.waitState(t, sub, jobs.StateSucceeded)
}

func TestFinding7LostRevocationIsCaughtOnResync(t *testing.T) {
	s := newStack(t)
	sub := s.submit(t, `{"type":"stepper","input":{"steps":3}}`)
	s.waitState(t, sub, jobs.StateRunning)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := openEventsCtx(t, ctx, s.progress.URL+sub.Links.Events, sub.Token)
	st.must(t, "state")

	// revoke-tokens whose publish is lost: the epoch rises in the record,
	// but no message goes out…
	if err := s.rdb.HIncrBy(ctx, jobs.JobKey(sub.ID), "epoch", 1).Err(); err != nil {
		t.Fatal(err)
	}
	// …and the hub's subscription is cut, so it resubscribes and resyncs.
	// On a cluster the job's shard channel is on one of the primaries, and
	// a CLIENT KILL through a cluster client reaches one (any) node: cut
	// the subscriptions on every primary.
	redistest.EachPrimary(t, s.rdb, func(ctx context.Context, c *redis.Client) error {
		return c.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err()
	})
	s.step <- struct{}{}
	ev, err := st.next()
	if err != nil {
		t.Fatal(err)
	}
	if r := endReason(t, ev); r != "token_revoked" {
		t.Fatalf("end reason %q", r)
	}
	if ev, err := st.next(); err != io.EOF {
		t.Fatalf("after end: %+v %v", ev, err)
	}
	waitfor.True(t, 5*time.Second, func() bool {
		return do(t, "GET", s.progress.URL+sub.Links.Self, sub.Token, nil).StatusCode == http.StatusUnauthorized
	})
	s.step <- struct{}{}
	s.step <- struct{}{}
}

func TestFinding8LinkNeverOutlivesItsToken(t *testing.T) {
	var skew atomic.Int64 // how far the progress service's clock is ahead
	s := newStack(t, func(c *app.Config) {
		c.Retention = time.Hour
		c.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	})
	sub := s.submit(t, `{"type":"primes","input":{"n":1000}}`)
	s.waitState(t, sub, jobs.StateSucceeded)
	ctx := context.Background()
	pttl, err := s.rdb.PTTL(ctx, jobs.JobKey(sub.ID)).Result()
	if err != nil || pttl <= 0 {
		t.Fatalf("record ttl %v %v", pttl, err)
	}
	recordExpiry := time.Now().Add(pttl)
	linkKeys, err := tokens.LoadDir(s.cfg.LinkKeyDir)
	if err != nil {
		t.Fatal(err)
	}
	verify := func(link string, at time.Time) (*tokens.LinkClaims, error) {
		v := &tokens.LinkVerifier{Keys: linkKeys, Now: func() time.Time { return at }}
		return v.VerifyLink(link[strings.Index(link, "sig=")+4:])
	}
	type linkResp struct {
		URL       string    `json:"url"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	mint := func(token string) linkResp {
		r := do(t, "POST", s.progress.URL+"/v1/jobs/"+sub.ID+"/links", token, strings.NewReader(`{"expires_in":"24h"}`))
		if r.StatusCode != http.StatusCreated {
			b, _ := io.ReadAll(r.Body)
			t.Fatalf("create link: %d %s", r.StatusCode, b)
		}
		return decode[linkResp](t, r)
	}

	// A 30-second job:result token asks for a 24-hour link: it gets one
	// that ends with the token, and the response says so.
	short, tokenExp := s.reissue(t, sub, `{"scope":"job:result","expires_in":"30s"}`)
	link := mint(short)
	claims, err := verify(link.URL, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if exp := claims.Expires(); exp.After(tokenExp) || !exp.Equal(link.ExpiresAt) {
		t.Fatalf("link exp %v, token exp %v, reported %v", exp, tokenExp, link.ExpiresAt)
	}
	// The submission's own token outlives the record (deadline plus
	// retention): its link ends with the record instead.
	long := mint(sub.Token)
	lc, err := verify(long.URL, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if exp := lc.Expires(); exp.After(recordExpiry) || exp.After(sub.TokenExpiresAt) || !exp.Equal(long.ExpiresAt) {
		t.Fatalf("link exp %v, record expiry %v, token exp %v", exp, recordExpiry, sub.TokenExpiresAt)
	}

	// Past the token's exp (and the verifiers' leeway), the link is dead
	// at the service too.
	if r := do(t, "GET", s.progress.URL+link.URL, "", nil); r.StatusCode != http.StatusOK {
		t.Fatalf("fresh link: %d", r.StatusCode)
	}
	skew.Store(int64(time.Until(tokenExp) + tokens.DefaultLeeway + time.Second))
	r := do(t, "GET", s.progress.URL+link.URL, "", nil)
	if p := decode[problemBody](t, r); r.StatusCode != http.StatusUnauthorized || p.Type != "urn:claimcheck:problem:invalid-token" {
		t.Fatalf("link after its token's exp: %d %+v", r.StatusCode, p)
	}
	if r := do(t, "GET", s.progress.URL+long.URL, "", nil); r.StatusCode != http.StatusOK {
		t.Fatalf("the longer link at the same moment: %d", r.StatusCode)
	}
}
