package progress

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/claimcheck/claimcheck/internal/blob"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/s3test"
)

// The fuzzers of this file take the headers a job-token holder controls
// (issue 12, part 7). Plain `go test` runs their seeds and the corpora in
// testdata/fuzz/<FuzzName>; explore further with, e.g.,
//
//	go test -run '^$' -fuzz FuzzPreferWait -fuzztime 60s ./api/progress/
//
// (one fuzzer per run). None of them touches Redis.

// FuzzResumeID feeds an event stream's Last-Event-ID (`<event id>` or
// `<event id>/<log line>`, logs.go) to splitResumeID. Whatever the header:
// no panic; the event part is the header up to its first "/" (the whole
// header without one), so nothing but the header's own text reaches
// EventsAfter (which refuses an id that is not a stream id); the line is
// never negative and is non-zero only when the text after the "/" is that
// number's canonical decimal spelling or a spelling strconv reads as the
// same number; and an id this service sent (eventID) parses back to the
// event and line it was made of.
func FuzzResumeID(f *testing.F) {
	for _, seed := range []string{
		"", "/", "//", "1700000000000-0", "1700000000000-0/12", "1700000000000-0/0", "1700000000000-0/-5",
		"1700000000000-0/+7", "1700000000000-0/007", "1700000000000-0/9223372036854775807",
		"1700000000000-0/9223372036854775808", "1700000000000-0/12/13", "/12", "0-0/1", "a/b", "1-1/1e3",
		"1-1/ 3", "1-1/0x10", "\x00/\xff", "1-1/١٢",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, id string) {
		event, line := splitResumeID(id)
		before, after, cut := strings.Cut(id, "/")
		if event != before {
			t.Fatalf("splitResumeID(%q) event = %q, want %q (the text before the first /)", id, event, before)
		}
		if line < 0 {
			t.Fatalf("splitResumeID(%q) line = %d < 0", id, line)
		}
		if !cut && line != 0 {
			t.Fatalf("splitResumeID(%q) line = %d without a /", id, line)
		}
		if line != 0 {
			if n, err := strconv.ParseInt(after, 10, 64); err != nil || n != line {
				t.Fatalf("splitResumeID(%q) line = %d, but %q is not that number", id, line, after)
			}
		}
		// What this service sends parses back to what it was made of.
		if !strings.Contains(event, "/") {
			for _, n := range []int64{0, 1, line, 1<<63 - 1} {
				if e, l := splitResumeID(eventID(event, n)); e != event || l != n {
					t.Fatalf("splitResumeID(eventID(%q, %d)) = %q, %d", event, n, e, l)
				}
			}
		}
		// A line's id is canonical: the parsed pair spells the header back
		// unless the header spelled the line some other way.
		if got := eventID(event, line); line != 0 && after == strconv.FormatInt(line, 10) && got != id {
			t.Fatalf("eventID(splitResumeID(%q)) = %q", id, got)
		}
	})
}

// FuzzPreferWait feeds a long-poll's Prefer header (RFC 7240, wait=N) to
// preferWait. Whatever the header: no panic; the wait is whole seconds
// between zero and maxWait, never negative however large N is; and a
// header that is exactly wait=N for a plain decimal N asks for min(N s,
// maxWait), which is also what Preference-Applied then echoes.
func FuzzPreferWait(f *testing.F) {
	for _, seed := range []string{
		"", "wait=5", "wait=60", "wait=61", "wait=0", "wait=-1", `wait="10"`, "WAIT = 7", "respond-async, wait=3",
		"wait=3, wait=9", "wait=", "=5", "wait=1e3", "wait=9223372036854775807", "wait=9223372037",
		"wait=18446744074", "wait=99999999999999999999", "handling=lenient; wait=2", "wait=+4", "wait=\t8\t",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, h string) {
		w := preferWait(h)
		if w < 0 || w > maxWait {
			t.Fatalf("preferWait(%q) = %v, outside [0, %v]", h, w, maxWait)
		}
		if w%time.Second != 0 {
			t.Fatalf("preferWait(%q) = %v, not whole seconds", h, w)
		}
		if v, ok := strings.CutPrefix(h, "wait="); ok && v != "" && strings.Trim(v, "0123456789") == "" {
			want := maxWait
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n < int64(maxWait/time.Second) {
				want = time.Duration(n) * time.Second
			}
			if w != want {
				t.Fatalf("preferWait(%q) = %v, want %v", h, w, want)
			}
		}
	})
}

// rangeBlob is the result the Range fuzzer downloads: 1,000 bytes that
// differ from their neighbours, so a misplaced range shows.
var rangeBlob = func() []byte {
	b := make([]byte, 1000)
	for i := range b {
		b[i] = byte(i*7 + i/256)
	}
	return b
}()

// FuzzResultRange downloads a succeeded job's result (serveResult, the
// code behind GET /v1/jobs/{id}/result and /v1/results/{id}) with an
// arbitrary Range and If-Range. Whatever the headers: no panic; the answer
// is 200 with the whole result, 206 with exactly the bytes its
// Content-Range names (one range, or a multipart/byteranges body whose
// every part does), or 416 naming the size; and the body never exceeds
// the result's size plus a bounded overhead per part (a 416 says no more
// than a line), so a Range header
// cannot amplify a download (net/http ignores ranges that add up to more
// than the result).
func FuzzResultRange(f *testing.F) {
	sum := sha256.Sum256(rangeBlob)
	etag := `"sha256:` + hex.EncodeToString(sum[:]) + `"`
	finished := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	for _, seed := range [][2]string{
		{"", ""}, {"bytes=0-0", ""}, {"bytes=0-999", ""}, {"bytes=-1", ""}, {"bytes=999-", ""}, {"bytes=1000-", ""},
		{"bytes=-0", ""}, {"bytes=5-3", ""}, {"bytes=0-1,5-9,990-", ""}, {"bytes=0-499,0-499,0-499", ""},
		{"bytes=0-0," + strings.Repeat("0-0,", 200) + "0-0", ""}, {"bytes=0-9223372036854775807", ""},
		{"bytes=-9223372036854775808", ""}, {"bytes=9223372036854775807-", ""}, {"bytes= 1 - 2 ", ""},
		{"items=0-5", ""}, {"bytes=", ""}, {"bytes=,", ""}, {"bytes=0-5", etag}, {"bytes=0-5", `"sha256:other"`},
		{"bytes=0-5", "W/" + etag}, {"bytes=0-5", finished.Format(http.TimeFormat)}, {"bytes=0--5", ""},
	} {
		f.Add(seed[0], seed[1])
	}
	dir, err := blob.NewDir(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	w, err := dir.Create("job-r", 0)
	if err != nil {
		f.Fatal(err)
	}
	if _, err := w.Write(rangeBlob); err != nil {
		f.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		f.Fatal(err)
	}
	s := &Service{cfg: Config{Blobs: blob.StoreOf(dir)}}
	// The same result in an S3 bucket (an in-process S3 server) must be
	// served the same, byte for byte: its reads are range requests.
	bucket, err := blob.Open(context.Background(), s3test.StartFake(f).Bucket(f))
	if err != nil {
		f.Fatal(err)
	}
	bw, err := bucket.Create(context.Background(), "job-r", 0)
	if err != nil {
		f.Fatal(err)
	}
	if _, err := bw.Write(rangeBlob); err != nil {
		f.Fatal(err)
	}
	if err := bw.Commit(); err != nil {
		f.Fatal(err)
	}
	s3s := &Service{cfg: Config{Blobs: bucket}}
	j := &jobs.Job{ID: "job-r", State: jobs.StateSucceeded, FinishedAt: &finished,
		Result: &jobs.Result{ContentType: "application/octet-stream", Size: int64(len(rangeBlob)), SHA256: hex.EncodeToString(sum[:])}}
	size := len(rangeBlob)
	f.Fuzz(func(t *testing.T, rng, ifRange string) {
		req := httptest.NewRequest(http.MethodGet, "/v1/jobs/job-r/result", nil)
		req.Header.Set("Range", rng)
		req.Header.Set("If-Range", ifRange)
		rec := httptest.NewRecorder()
		c, _ := gin.CreateTestContext(rec)
		c.Request = req
		s.serveResult(c, j, "attachment", "", "private", time.Time{})
		c.Writer.WriteHeaderNow() // as gin does after the handlers
		body := rec.Body.Bytes()

		req3 := httptest.NewRequest(http.MethodGet, "/v1/jobs/job-r/result", nil)
		req3.Header.Set("Range", rng)
		req3.Header.Set("If-Range", ifRange)
		rec3 := httptest.NewRecorder()
		c3, _ := gin.CreateTestContext(rec3)
		c3.Request = req3
		s3s.serveResult(c3, j, "attachment", "", "private", time.Time{})
		c3.Writer.WriteHeaderNow()
		if rec3.Code != rec.Code || rec3.Header().Get("Content-Range") != rec.Header().Get("Content-Range") ||
			rec3.Header().Get("Content-Length") != rec.Header().Get("Content-Length") ||
			(!strings.HasPrefix(rec.Header().Get("Content-Type"), "multipart/") && !bytes.Equal(rec3.Body.Bytes(), body)) {
			t.Fatalf("Range %q If-Range %q: from S3 %d %q (%d bytes), from a directory %d %q (%d bytes)", rng, ifRange,
				rec3.Code, rec3.Header().Get("Content-Range"), rec3.Body.Len(), rec.Code, rec.Header().Get("Content-Range"), len(body))
		}
		switch rec.Code {
		case http.StatusOK:
			if !bytes.Equal(body, rangeBlob) {
				t.Fatalf("Range %q If-Range %q: 200 with %d bytes that are not the result", rng, ifRange, len(body))
			}
		case http.StatusRequestedRangeNotSatisfiable:
			// net/http names the size when the ranges miss the result, and
			// nothing when they do not parse.
			if got, want := rec.Header().Get("Content-Range"), "bytes */"+strconv.Itoa(size); got != want && got != "" {
				t.Fatalf("Range %q: 416 with Content-Range %q, want %q", rng, got, want)
			}
			if len(body) > 200 {
				t.Fatalf("Range %q: 416 with a %d-byte body", rng, len(body))
			}
		case http.StatusPartialContent:
			mt, params, err := mime.ParseMediaType(rec.Header().Get("Content-Type"))
			if err != nil {
				t.Fatalf("Range %q: 206 with Content-Type %q: %v", rng, rec.Header().Get("Content-Type"), err)
			}
			if mt != "multipart/byteranges" {
				checkPart(t, rng, rec.Header().Get("Content-Range"), body, size)
				return
			}
			mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
			parts, total := 0, 0
			for {
				p, err := mr.NextPart()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("Range %q: a multipart body that does not parse: %v", rng, err)
				}
				data, err := io.ReadAll(p)
				if err != nil {
					t.Fatalf("Range %q: part %d: %v", rng, parts, err)
				}
				checkPart(t, rng, p.Header.Get("Content-Range"), data, size)
				parts++
				total += len(data)
			}
			if parts < 2 {
				t.Fatalf("Range %q: a multipart answer of %d parts", rng, parts)
			}
			if total > size {
				t.Fatalf("Range %q: parts of %d bytes in all, more than the %d-byte result", rng, total, size)
			}
			if len(body) > size+parts*200 {
				t.Fatalf("Range %q: a %d-byte answer for %d parts of a %d-byte result", rng, len(body), parts, size)
			}
		default:
			t.Fatalf("Range %q If-Range %q: status %d", rng, ifRange, rec.Code)
		}
	})
}

// checkPart checks that data is exactly the bytes of rangeBlob that
// Content-Range cr names.
func checkPart(t *testing.T, rng, cr string, data []byte, size int) {
	t.Helper()
	var first, last, total int
	if n, err := fmt.Sscanf(cr, "bytes %d-%d/%d", &first, &last, &total); err != nil || n != 3 {
		t.Fatalf("Range %q: Content-Range %q does not parse", rng, cr)
	}
	if total != size || first < 0 || first > last || last >= size {
		t.Fatalf("Range %q: Content-Range %q outside the %d-byte result", rng, cr, size)
	}
	if !bytes.Equal(data, rangeBlob[first:last+1]) {
		t.Fatalf("Range %q: Content-Range %q but %d bytes that are not those", rng, cr, len(data))
	}
}
