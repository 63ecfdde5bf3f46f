package blob_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/claimcheck/claimcheck/internal/blob"
	"github.com/claimcheck/claimcheck/internal/s3test"
)

// backend is one kind of results store the contract runs against.
type backend struct {
	name string
	// open returns a fresh, empty store and, for an object store, its
	// endpoint (for looking behind the store's back).
	open func(t *testing.T) (store blob.Store, endpoint string)
}

// backends are a directory, the in-process S3 server and, when `weed` is
// on PATH, SeaweedFS. Every contract test runs against each.
func backends(t *testing.T) []backend {
	bucket := func(url func(t *testing.T) string) func(t *testing.T) (blob.Store, string) {
		return func(t *testing.T) (blob.Store, string) {
			u := url(t)
			s, err := blob.Open(context.Background(), u)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s, s3test.EndpointOf(u)
		}
	}
	return []backend{
		{"file", func(t *testing.T) (blob.Store, string) {
			s, err := blob.Open(context.Background(), blob.FileURL(t.TempDir()))
			if err != nil {
				t.Fatal(err)
			}
			return s, ""
		}},
		{"gofakes3", bucket(func(t *testing.T) string { return s3test.StartFake(t).Bucket(t) })},
		{"seaweedfs", bucket(func(t *testing.T) string { return s3test.StartWeed(t).Bucket(t) })},
	}
}

func eachBackend(t *testing.T, f func(t *testing.T, s blob.Store, endpoint string)) {
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			s, ep := be.open(t)
			f(t, s, ep)
		})
	}
}

func commit(t *testing.T, s blob.Store, key string, body []byte) *blob.Writer {
	t.Helper()
	w, err := s.Create(context.Background(), key, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	return w
}

func readAll(t *testing.T, s blob.Store, key string) []byte {
	t.Helper()
	r, err := s.Open(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != r.Size() {
		t.Fatalf("read %d bytes of a %d-byte blob", len(b), r.Size())
	}
	return b
}

// pattern is n bytes that differ by offset, so a read from the wrong
// place shows.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

// TestContractVisibleOnlyOnCommit: a result being written is not there
// for Open, however much was written (a multipart upload's parts
// included); after Commit it is, whole, with the size and digest the
// writer counted.
func TestContractVisibleOnlyOnCommit(t *testing.T) {
	eachBackend(t, func(t *testing.T, s blob.Store, _ string) {
		ctx := context.Background()
		body := pattern(6<<20 + 123) // more than one 5 MiB part
		w, err := s.Create(ctx, "job1", 0)
		if err != nil {
			t.Fatal(err)
		}
		for p := body; len(p) > 0; {
			n := min(len(p), 64<<10)
			if _, err := w.Write(p[:n]); err != nil {
				t.Fatal(err)
			}
			p = p[n:]
		}
		if _, err := s.Open(ctx, "job1"); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("uncommitted result visible: %v", err)
		}
		sum := sha256.Sum256(body)
		if w.Size() != int64(len(body)) || w.SHA256() != hex.EncodeToString(sum[:]) {
			t.Fatalf("writer counted %d bytes, sha256 %s", w.Size(), w.SHA256())
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, s, "job1"); !bytes.Equal(got, body) {
			t.Fatal("committed result differs from what was written")
		}
		if err := w.Commit(); err == nil {
			t.Error("a second Commit succeeded")
		}
		if err := s.Delete(ctx, "job1"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Open(ctx, "job1"); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("deleted result: %v", err)
		}
		if err := s.Delete(ctx, "job1"); err != nil {
			t.Fatalf("deleting a missing result: %v", err)
		}
	})
}

// TestContractAbortLeavesNothing: an aborted writer, small or past one
// part, leaves no result, no temporary file and no multipart upload.
func TestContractAbortLeavesNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, s blob.Store, endpoint string) {
		ctx := context.Background()
		uploads := func() int {
			u, err := s3test.Client(endpoint).ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: ptr(bucketOf(s))})
			var ae smithy.APIError
			switch {
			case errors.As(err, &ae) && ae.ErrorCode() == "NoSuchUpload": // gofakes3's answer for a bucket with none
				return 0
			case err != nil:
				t.Fatal(err)
			}
			return len(u.Uploads)
		}
		for _, size := range []int{10, 16 << 20} {
			w, err := s.Create(ctx, "gone", 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(pattern(size)); err != nil {
				t.Fatal(err)
			}
			w.Abort()
			w.Abort() // idempotent
			if err := w.Commit(); err == nil {
				t.Fatal("Commit after Abort succeeded")
			}
			if _, err := s.Open(ctx, "gone"); !errors.Is(err, blob.ErrNotFound) {
				t.Fatalf("aborted %d-byte result visible: %v", size, err)
			}
		}
		st, err := s.Reap(ctx, allLive, 0, time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if st.Results != 0 || st.Kept != 0 {
			t.Fatalf("after aborts the store lists results: %+v", st)
		}
		if endpoint != "" && uploads() != 0 {
			t.Fatalf("an aborted upload is still open: %d uploads", uploads())
		}
	})
}

func ptr[T any](v T) *T { return &v }

// bucketOf reads the bucket's name back from the store's description.
func bucketOf(s blob.Store) string {
	name, _, _ := strings.Cut(strings.TrimPrefix(s.String(), "s3://"), "?")
	return name
}

func allLive(_ context.Context, keys []string) ([]bool, error) {
	out := make([]bool, len(keys))
	for i := range out {
		out[i] = true
	}
	return out, nil
}

// TestContractSizeLimit: a write past the limit fails with ErrTooLarge,
// writes nothing more, and an abort leaves nothing.
func TestContractSizeLimit(t *testing.T) {
	eachBackend(t, func(t *testing.T, s blob.Store, _ string) {
		ctx := context.Background()
		w, err := s.Create(ctx, "big", 8)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte("01234")); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte("56789")); !errors.Is(err, blob.ErrTooLarge) {
			t.Fatalf("write over the limit: %v", err)
		}
		if !w.Exceeded() || w.Size() != 5 || w.Limit() != 8 {
			t.Fatalf("exceeded %v size %d limit %d", w.Exceeded(), w.Size(), w.Limit())
		}
		w.Abort()
		if _, err := s.Open(ctx, "big"); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("over-limit result visible: %v", err)
		}
	})
}

// TestContractRange: Seek and Read, and http.ServeContent over them,
// return the bytes of the range asked for: within the object, at its
// end, and with Expect hinting a range that the reads then go past.
func TestContractRange(t *testing.T) {
	eachBackend(t, func(t *testing.T, s blob.Store, _ string) {
		ctx := context.Background()
		body := pattern(100_000)
		commit(t, s, "r", body)
		r, err := s.Open(ctx, "r")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if r.Size() != int64(len(body)) {
			t.Fatalf("size %d", r.Size())
		}
		for _, tc := range []struct{ off, n, hint int64 }{
			{0, 10, 10}, {5000, 1024, 1024}, {99_990, 10, 10}, {40_000, 30_000, 100}, {123, 77, 0},
		} {
			if _, err := r.Seek(tc.off, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			if tc.hint > 0 {
				r.Expect(tc.off, tc.hint)
			}
			got := make([]byte, tc.n)
			if _, err := io.ReadFull(r, got); err != nil {
				t.Fatalf("read %d@%d: %v", tc.n, tc.off, err)
			}
			if !bytes.Equal(got, body[tc.off:tc.off+tc.n]) {
				t.Fatalf("read %d@%d: wrong bytes", tc.n, tc.off)
			}
		}
		if _, err := r.Seek(0, io.SeekEnd); err != nil {
			t.Fatal(err)
		}
		if n, err := r.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("read at the end: %d, %v", n, err)
		}

		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			r, err := s.Open(req.Context(), "r")
			if err != nil {
				http.Error(w, "no", http.StatusNotFound)
				return
			}
			defer r.Close()
			w.Header().Set("Content-Type", "application/octet-stream")
			http.ServeContent(w, req, "", r.ModTime(), r)
		}))
		defer srv.Close()
		for _, tc := range []struct {
			rng        string
			status     int
			start, end int
		}{
			{"", 200, 0, len(body)},
			{"bytes=1000-2023", 206, 1000, 2024},
			{"bytes=-10", 206, len(body) - 10, len(body)},
			{"bytes=99000-", 206, 99000, len(body)},
			{"bytes=200000-", 416, 0, 0},
		} {
			req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
			if tc.rng != "" {
				req.Header.Set("Range", tc.rng)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("Range %q: status %d", tc.rng, resp.StatusCode)
			}
			if tc.status < 300 && !bytes.Equal(got, body[tc.start:tc.end]) {
				t.Fatalf("Range %q: %d wrong bytes", tc.rng, len(got))
			}
		}
	})
}

// TestContractReap: results whose record is gone are deleted with their
// finished marker, the others kept however old.
func TestContractReap(t *testing.T) {
	eachBackend(t, func(t *testing.T, s blob.Store, _ string) {
		ctx := context.Background()
		for _, k := range []string{"live1", "dead1", "dead2"} {
			w := commit(t, s, k, []byte(k))
			if err := s.MarkFinished(ctx, k, blob.Finished{Size: w.Size(), SHA256: w.SHA256()}); err != nil {
				t.Fatal(err)
			}
		}
		var asked []string
		exist := func(_ context.Context, keys []string) ([]bool, error) {
			asked = append(asked, keys...)
			out := make([]bool, len(keys))
			for i, k := range keys {
				out[i] = strings.HasPrefix(k, "live")
			}
			return out, nil
		}
		st, err := s.Reap(ctx, exist, time.Hour, time.Now().Add(48*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if st.Results != 2 || st.Kept != 1 || len(asked) != 3 {
			t.Fatalf("reap %+v, asked about %v (markers must not be listed)", st, asked)
		}
		if got := readAll(t, s, "live1"); string(got) != "live1" {
			t.Fatalf("kept result reads %q", got)
		}
		for _, k := range []string{"dead1", "dead2"} {
			if _, err := s.Open(ctx, k); !errors.Is(err, blob.ErrNotFound) {
				t.Fatalf("%s not reaped: %v", k, err)
			}
			if _, ok, _ := s.FinishedResult(ctx, k); ok {
				t.Fatalf("%s's finished marker outlived it", k)
			}
		}
		if _, ok, _ := s.FinishedResult(ctx, "live1"); !ok {
			t.Fatal("a kept result lost its marker")
		}
	})
}

// TestContractFinishedMarker: a marker reads back whole; one whose blob is
// missing or of another size is not trusted and is removed; an Empty one
// needs no blob; ClearFinished removes it.
func TestContractFinishedMarker(t *testing.T) {
	eachBackend(t, func(t *testing.T, s blob.Store, _ string) {
		ctx := context.Background()
		w := commit(t, s, "j1", []byte("hello world"))
		want := blob.Finished{ContentType: "text/plain", Size: w.Size(), SHA256: w.SHA256(), Attempt: 2}
		if _, ok, err := s.FinishedResult(ctx, "j1"); ok || err != nil {
			t.Fatalf("marker before MarkFinished: %v %v", ok, err)
		}
		if err := s.MarkFinished(ctx, "j1", want); err != nil {
			t.Fatal(err)
		}
		if got, ok, err := s.FinishedResult(ctx, "j1"); !ok || err != nil || got != want {
			t.Fatalf("marker %+v %v %v", got, ok, err)
		}
		if err := s.ClearFinished(ctx, "j1"); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := s.FinishedResult(ctx, "j1"); ok {
			t.Fatal("cleared marker still read")
		}
		// Another size: stale.
		if err := s.MarkFinished(ctx, "j1", blob.Finished{Size: 3}); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := s.FinishedResult(ctx, "j1"); ok {
			t.Fatal("a marker naming another size was trusted")
		}
		// No blob, but Empty: trusted.
		if err := s.MarkFinished(ctx, "none", blob.Finished{Empty: true, Attempt: 1}); err != nil {
			t.Fatal(err)
		}
		if f, ok, _ := s.FinishedResult(ctx, "none"); !ok || !f.Empty {
			t.Fatalf("empty marker: %+v %v", f, ok)
		}
		// No blob, not Empty: stale.
		if err := s.MarkFinished(ctx, "missing", blob.Finished{Size: 1}); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := s.FinishedResult(ctx, "missing"); ok {
			t.Fatal("a marker without its blob was trusted")
		}
	})
}

// TestContractCheck: a usable store passes; a probe leaves nothing a reap
// would count.
func TestContractCheck(t *testing.T) {
	eachBackend(t, func(t *testing.T, s blob.Store, _ string) {
		ctx := context.Background()
		if err := s.Check(ctx, blob.MinFree{}); err != nil {
			t.Fatalf("check of a usable store: %v", err)
		}
		st, err := s.Reap(ctx, allLive, 0, time.Now().Add(time.Hour))
		if err != nil || st != (blob.ReapStats{}) {
			t.Fatalf("after a check, reap found %+v (%v)", st, err)
		}
	})
}

// TestContractKeys: keys that could name something else are refused
// everywhere.
func TestContractKeys(t *testing.T) {
	eachBackend(t, func(t *testing.T, s blob.Store, _ string) {
		ctx := context.Background()
		for _, key := range []string{"", ".", "..", "../x", "a/b", `a\b`, ".hidden", ".finished-x"} {
			if _, err := s.Create(ctx, key, 0); err == nil {
				t.Errorf("Create(%q) accepted", key)
			}
			if _, err := s.Open(ctx, key); err == nil || errors.Is(err, blob.ErrNotFound) {
				t.Errorf("Open(%q) = %v", key, err)
			}
		}
	})
}

// TestBucketErrorsNameNothing: with the bucket gone, every operation fails
// with an error that names no endpoint, bucket, access key or secret (they
// reach job error texts and readiness answers), and Check's wraps
// ErrNotWritable; OnWriteError hears of write failures.
func TestBucketErrorsNameNothing(t *testing.T) {
	f := s3test.StartFake(t)
	u := s3test.URL("no-such-bucket", f.Endpoint)
	s, err := blob.Open(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	faults := 0
	s.OnWriteError(func(error) { faults++ })
	ctx := context.Background()
	var errs []error
	if w, err := s.Create(ctx, "j1", 0); err != nil {
		errs = append(errs, err)
	} else {
		_, werr := w.Write([]byte("x"))
		errs = append(errs, werr, w.Commit())
	}
	_, oerr := s.Open(ctx, "j1")
	_, _, ferr := s.FinishedResult(ctx, "j1")
	cerr := s.Check(ctx, blob.MinFree{})
	_, rerr := s.Reap(ctx, allLive, 0, time.Now())
	errs = append(errs, s.MarkFinished(ctx, "j1", blob.Finished{}), ferr, cerr, rerr, oerr)
	if !errors.Is(cerr, blob.ErrNotWritable) {
		t.Fatalf("check: %v", cerr)
	}
	if faults == 0 {
		t.Error("OnWriteError not told of a failed commit")
	}
	host := strings.TrimPrefix(f.Endpoint, "http://")
	n := 0
	for _, err := range errs {
		if err == nil {
			continue
		}
		n++
		for _, bad := range []string{host, "no-such-bucket", s3test.AccessKey, s3test.Secret} {
			if strings.Contains(err.Error(), bad) {
				t.Errorf("error %q names %q", err, bad)
			}
		}
	}
	if n < 5 {
		t.Fatalf("only %d of the operations failed on a missing bucket", n)
	}
	if strings.Contains(s.String(), f.Endpoint) || strings.Contains(s.String(), "us-east-1") {
		t.Errorf("String %q repeats the query's values", s.String())
	}
}

// TestSignedURL: an object store signs a GET that fetches the result
// without the store's credentials; a directory cannot sign.
func TestSignedURL(t *testing.T) {
	eachBackend(t, func(t *testing.T, s blob.Store, _ string) {
		ctx := context.Background()
		commit(t, s, "j1", []byte("signed body"))
		u, err := s.SignedURL(ctx, "j1", blob.SignOptions{Expiry: time.Minute, ContentType: "text/plain", ContentDisposition: `attachment; filename="j1.txt"`})
		if _, isDir := blob.DirOf(s); isDir {
			if !errors.Is(err, blob.ErrNoSignedURL) {
				t.Fatalf("directory signed a URL: %q %v", u, err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(u, s3test.Secret) {
			t.Fatal("signed URL carries the secret")
		}
		if !strings.Contains(u, "X-Amz-Expires=60") {
			t.Errorf("signed URL %q: want a 60 s lifetime", u)
		}
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "signed body" {
			t.Fatalf("GET signed URL: %d %q", resp.StatusCode, b)
		}
		if _, err := s.SignedURL(ctx, "j1", blob.SignOptions{}); err == nil {
			t.Fatal("a URL with no lifetime was signed")
		}
	})
}

// TestOpenURL: the forms Open takes and those it refuses, with reasons
// that repeat no secret.
func TestOpenURL(t *testing.T) {
	dir := t.TempDir()
	for _, u := range []string{dir, "file://" + dir, blob.FileURL(dir)} {
		s, err := blob.Open(context.Background(), u)
		if err != nil {
			t.Fatalf("Open(%q): %v", u, err)
		}
		if d, ok := blob.DirOf(s); !ok || d.Root() != dir {
			t.Fatalf("Open(%q) is not the directory", u)
		}
	}
	for _, tc := range []struct{ url, want string }{
		{"", "no URL"},
		{"s3://key:hunter2@bucket?endpoint=http://127.0.0.1:1", "credentials do not go in the URL"},
		{"gs://bucket", "not supported"},
		{"file://otherhost/x", "local directory"},
		{"file:///x?y=1", "no query"},
		{"s3://?endpoint=http://127.0.0.1:1", "no bucket"},
	} {
		_, err := blob.Open(context.Background(), tc.url)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q) = %v, want %q", tc.url, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Open(%q)'s error repeats the password", tc.url)
		}
	}
	if got := blob.Redact("s3://b?endpoint=http://x:9000&region=eu"); got != "s3://b?endpoint=REDACTED&region=REDACTED" {
		t.Errorf("Redact = %q", got)
	}
}
