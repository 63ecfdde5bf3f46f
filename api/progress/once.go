package progress

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/claimcheck/claimcheck/api/problem"
	"github.com/claimcheck/claimcheck/internal/blob"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/tokens"
)

// One-time links (LinkRequest.Once) serve every byte of the result at most
// once. The first GET claims the link in Redis (jobs.ClaimLink, one script)
// and streams from its start; any other request meanwhile is 409
// link-in-use. A transfer that reaches the end of the result uses the link
// up (410 link-used from then on). One that stops short (the client went
// away, the store failed) leaves the link interrupted at the offset it had
// written up to, and for ResumeWindow only a GET with Range: bytes=<that
// offset>- is served (the rest of the result, 206); anything else is 409
// link-interrupted, and after the window the link is used up.
//
// A transfer holds its claim with a lease (onceLease) that it renews every
// onceRenew while it writes, and it never writes past a reservation
// (onceReserve bytes ahead) that it has not first recorded in Redis. A
// server that crashes mid-transfer therefore leaves a claim that lapses on
// its own into the resume window, at an offset no lower than the last byte
// it wrote: a client may have to give up bytes the crashed server never
// delivered, but is never served one twice. All of this holds as long as
// Redis keeps what it acknowledged: a failover that loses the last writes
// (asynchronous replication, AOF everysec) can lose a claim or a burn.
const (
	// ResumeWindow is how long an interrupted one-time download may be
	// resumed: from the interruption, or from the end of the lease of a
	// transfer whose server stopped renewing it. Short, because while it
	// lasts the link still hands out the rest of the result.
	ResumeWindow = 60 * time.Second
	// onceLease is how long a transfer's claim holds without a renewal,
	// and so how long a crashed server's claim blocks the link. Leases are
	// judged by the clock of the instance that asks: instances whose
	// clocks differ by more than onceLease-onceRenew could take a live
	// claim over (the transfer that lost it stops at its reservation, so
	// still no byte goes out twice).
	onceLease = 15 * time.Second
	// onceRenew is how often a transfer renews its lease: a few renewals
	// fit in one lease, so one slow Redis round trip does not lose it.
	onceRenew = 5 * time.Second
	// onceReserve is how far ahead of what it has written a transfer
	// reserves bytes: one Redis round trip per this many bytes, and at
	// most this many bytes lost to a client when its server crashes.
	onceReserve = 1 << 20
	// onceStall bounds each write of a transfer (at most 32 KiB, so a
	// client reading slower than about 500 B/s is cut off). Without it a
	// client that keeps its connection open but stops reading would hold
	// the claim for ever: the lease is renewed while a write blocks, so a
	// slow reader keeps its link. Cut off, the transfer releases the link
	// as interrupted at what it handed over, and the client may resume.
	onceStall = time.Minute
	// onceKeepMargin keeps a link's state past the link's exp plus the
	// verifier's leeway, for clock skew between this service and Redis:
	// state that expired while the link still verified would make a used
	// link fresh again.
	onceKeepMargin = time.Minute
)

// MaxOnceLinks is how many one-time links one job may be given. Each
// that is used keeps its state in Redis until the link's exp, up to a
// day: at 1000, about 150 kB a job, the order of a full job log.
const MaxOnceLinks = 1000

// downloadOnce serves a one-time link (the link and its job already
// checked, revocation included). HEAD answers what a GET with the same
// headers would get, claiming nothing. Conditional headers other than
// If-Range are ignored: every request of a one-time link either moves its
// state or is refused, and a 304 would do neither.
func (s *Service) downloadOnce(c *gin.Context, j *jobs.Job, cl *tokens.LinkClaims) {
	if j.Result == nil {
		c.Status(http.StatusNoContent)
		return
	}
	ctx := c.Request.Context()
	f, err := s.cfg.Blobs.Open(ctx, j.ID)
	if err != nil {
		problem.Abort(c, err)
		return
	}
	defer f.Close()
	size := f.Size()
	etag := `"sha256:` + j.Result.SHA256 + `"`
	var mod time.Time
	if j.FinishedAt != nil {
		mod = *j.FinishedAt
	}
	start, err := onceStart(c.Request, etag, mod, size)
	if err != nil {
		problem.Abort(c, err)
		return
	}
	// Before the claim: a result that cannot be read claims nothing.
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		problem.Abort(c, err)
		return
	}
	f.Expect(start, size-start)
	leeway := s.cfg.LinkVerifier.Leeway
	if leeway <= 0 {
		leeway = tokens.DefaultLeeway
	}
	t := &onceTransfer{s: s, job: j.ID, jti: cl.ID, claim: newClaimID(), size: size,
		keep: cl.Expires().Add(leeway + onceKeepMargin), reserved: min(size, start+onceReserve)}
	st, err := s.cfg.Store.ClaimLink(ctx, j.ID, cl.ID, s.cfg.Now(), jobs.LinkClaim{
		Claim: t.claim, Start: start, Reserve: t.reserved, Lease: onceLease, Window: ResumeWindow, Keep: t.keep,
		DryRun: c.Request.Method == http.MethodHead,
	})
	if err != nil {
		problem.Abort(c, err)
		return
	}
	if err := s.linkRefusal(st); err != nil {
		problem.Abort(c, err)
		return
	}
	filename := cl.Filename
	if filename == "" {
		filename = j.ID + extension(j.Result.ContentType)
	}
	disposition := cl.Disposition
	if disposition == "" {
		disposition = "attachment"
	}
	h := c.Writer.Header()
	h.Set("Content-Type", j.Result.ContentType)
	h.Set("ETag", etag)
	h.Set("Cache-Control", "private, no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Disposition", mime.FormatMediaType(disposition, map[string]string{"filename": filename}))
	h.Set("Content-Length", strconv.FormatInt(size-start, 10))
	if !mod.IsZero() {
		h.Set("Last-Modified", mod.UTC().Format(http.TimeFormat)) // what a date If-Range names
	}
	status := http.StatusOK
	if rangeApplies(c.Request, etag, mod) { // and so a valid bytes=N- (onceStart)
		status = http.StatusPartialContent
		h.Set("Content-Range", "bytes "+strconv.FormatInt(start, 10)+"-"+strconv.FormatInt(size-1, 10)+"/"+strconv.FormatInt(size, 10))
	}
	if c.Request.Method == http.MethodHead {
		c.Status(status)
		c.Writer.WriteHeaderNow()
		return
	}
	c.Status(status)
	c.Writer.WriteHeaderNow()
	t.serve(ctx, c.Writer, f, start)
}

// linkRefusal is the problem for a claim that was not granted, or nil.
func (s *Service) linkRefusal(st jobs.LinkState) error {
	switch st.Verdict {
	case jobs.LinkGranted:
		return nil
	case jobs.LinkBusy:
		secs := max(1, int((st.Until.Sub(s.cfg.Now())+time.Second-1)/time.Second))
		return problem.New(http.StatusConflict, "link-in-use", "Link in use",
			"this one-time link is serving a download right now").WithHeader("Retry-After", strconv.Itoa(secs))
	case jobs.LinkInterrupted:
		return problem.New(http.StatusConflict, "link-interrupted", "Link interrupted",
			"this one-time link's download stopped short; until "+st.Until.UTC().Format(time.RFC3339)+
				" it serves only the rest, to a request with Range: bytes="+strconv.FormatInt(st.Off, 10)+"-").
			With("resume_until", st.Until.UTC()).
			// The client cannot know it: what sat in socket buffers when
			// its connection broke counts as served. Telling the link's
			// holder where the rest starts gives nothing it could not get.
			With("resume_from", st.Off)
	}
	return problem.New(http.StatusGone, "link-used", "Link used",
		"this one-time link has served its download")
}

// onceStart is the first byte a request of a one-time link asks for: 0
// without a Range (or with one that If-Range voids), N for Range: bytes=N-.
// Any other range is 416, as is N at or past the end.
func onceStart(r *http.Request, etag string, mod time.Time, size int64) (int64, error) {
	if !rangeApplies(r, etag, mod) {
		return 0, nil
	}
	spec, ok := strings.CutPrefix(strings.TrimSpace(r.Header.Get("Range")), "bytes=")
	first, open := strings.CutSuffix(strings.TrimSpace(spec), "-")
	n, err := strconv.ParseInt(strings.TrimSpace(first), 10, 64)
	if !ok || !open || err != nil || n < 0 || strings.HasPrefix(first, "+") {
		return 0, problem.New(http.StatusRequestedRangeNotSatisfiable, "link-range", "Range not served",
			"a one-time link serves its result from one offset to the end: Range: bytes=N-")
	}
	if n >= size {
		return 0, problem.New(http.StatusRequestedRangeNotSatisfiable, "link-range", "Range not satisfiable",
			"the range starts at or past the end of the result").WithHeader("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
	}
	return n, nil
}

// rangeApplies says whether the request's Range is to be honoured: it has
// one, and no If-Range, or an If-Range naming the result's ETag or its
// exact Last-Modified date (RFC 9110 §13.1.5).
func rangeApplies(r *http.Request, etag string, mod time.Time) bool {
	if r.Header.Get("Range") == "" {
		return false
	}
	ir := strings.TrimSpace(r.Header.Get("If-Range"))
	if ir == "" || ir == etag {
		return true
	}
	if t, err := http.ParseTime(ir); err == nil && !mod.IsZero() {
		return t.Equal(mod.Truncate(time.Second))
	}
	return false
}

func newClaimID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

// onceTransfer is one GET's hold on a one-time link.
type onceTransfer struct {
	s               *Service
	job, jti, claim string
	size            int64
	keep            time.Time
	mu              sync.Mutex // serialises Redis writes: renewals and reservations
	reserved        int64      // written to Redis: never write past it
	lost            bool       // the claim is no longer ours: stop
}

// serve streams the result from start, counting the bytes the connection
// took, and records how far it got. The response writer's ReadFrom (a
// sendfile) is never used: every byte passes the count and the
// reservation check. Each write has stallAfter to complete (a deadline on
// the connection, so wall-clock time, not the service's clock); the
// deadline is cleared before the connection serves its next request.
func (t *onceTransfer) serve(ctx context.Context, w http.ResponseWriter, f io.Reader, start int64) {
	rc := http.NewResponseController(w)
	// A writer without deadlines (none that net/http makes) leaves writes
	// unbounded, as they were before deadlines: still never a byte twice.
	deadline := func(d time.Time) { _ = rc.SetWriteDeadline(d) }
	defer deadline(time.Time{})
	stop := make(chan struct{})
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		tick := time.NewTicker(t.s.renewEvery)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				t.extend(ctx, -1)
			}
		}
	}()
	off := start
	buf := make([]byte, 32<<10)
	for off < t.size && ctx.Err() == nil {
		n, rerr := f.Read(buf[:min(int64(len(buf)), t.size-off)])
		if n > 0 {
			if off+int64(n) > t.reserve() && !t.extend(ctx, min(t.size, off+int64(n)+onceReserve)) {
				break
			}
			deadline(time.Now().Add(t.s.stallAfter))
			wn, werr := w.Write(buf[:n])
			off += int64(wn)
			if werr != nil {
				break
			}
		}
		if rerr != nil {
			if !errors.Is(rerr, io.EOF) {
				t.s.log.Warn("one-time link: result read failed mid-transfer", "job", t.job, "err", blob.Detail(rerr))
			}
			break
		}
	}
	close(stop)
	<-renewed
	if off == t.size {
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
	}
	t.release(ctx, off)
}

func (t *onceTransfer) reserve() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.reserved
}

// extend renews the lease and, with to ≥ 0, raises the reservation to it;
// false when the reservation could not be raised or the claim is lost.
func (t *onceTransfer) extend(ctx context.Context, to int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.lost {
		return false
	}
	held, err := t.s.cfg.Store.ExtendLink(ctx, t.job, t.jti, t.claim, t.s.cfg.Now(), to, onceLease, ResumeWindow, t.keep)
	if err != nil {
		// A renewal may fail and the next succeed; the lease outlasts a
		// few. A reservation that fails stops the transfer.
		if ctx.Err() == nil {
			t.s.log.Warn("one-time link: renewal failed", "job", t.job, "jti", t.jti, "err", err)
		}
		return false
	}
	if !held {
		t.lost = true
		t.s.log.Warn("one-time link: claim lost mid-transfer (its lease lapsed)", "job", t.job, "jti", t.jti)
		return false
	}
	if to >= 0 {
		t.reserved = to
	}
	return true
}

// release records that the transfer served bytes up to off. It runs when
// the request's context may be done (the client left), so on one of its
// own, bounded: if it fails, the lease lapses and the link is interrupted
// at its reservation.
func (t *onceTransfer) release(ctx context.Context, off int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.lost {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := t.s.cfg.Store.ReleaseLink(rctx, t.job, t.jti, t.claim, t.s.cfg.Now(), off, t.size, ResumeWindow, t.keep); err != nil {
		t.s.log.Warn("one-time link: release failed; its lease will lapse", "job", t.job, "jti", t.jti, "err", err)
	}
}
