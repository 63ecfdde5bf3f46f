package blob

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	gcblob "gocloud.dev/blob"
	"gocloud.dev/blob/s3blob"
	"gocloud.dev/gcerrors"
)

// probePrefix starts the names of Check's probe objects in a bucket; one
// a crashed worker left is reaped like a stale temporary file.
const probePrefix = ".probe-"

// maxSignedURL caps a signed URL's life whatever was asked: AWS refuses
// more than 7 days, and a URL that cannot be revoked should not live long.
const maxSignedURL = 7 * 24 * time.Hour

// uploadPartSize and uploadConcurrency bound what an upload holds in
// memory: at most partSize × (concurrency + 1) bytes per writer, whatever
// the result's size. 5 MiB is S3's smallest part.
const (
	uploadPartSize    = 5 << 20
	uploadConcurrency = 2
)

// Bucket is a Store in an object store bucket (gocloud.dev/blob). A result
// is the object named by its key; a finished marker the object
// ".finished-<key>"; nothing else of ours lives there but Check's
// short-lived ".probe-…" objects.
//
// A result is written as a multipart upload (one PUT when it is smaller
// than a part), which the store makes visible only when it is completed
// on Commit; Abort cancels it, and the store drops its parts. An upload a
// crashed worker started is never completed, so never visible; its parts
// are removed by the bucket's lifecycle rule (README: results storage).
type Bucket struct {
	b     *gcblob.Bucket
	where string
	fault func(error)
	// name and prefix locate keys for the S3 calls gocloud does not make
	// (abortStray).
	name, prefix string
}

// OpenBucket opens the bucket of an s3:// URL. Its query takes gocloud's
// s3blob parameters (endpoint, region, use_path_style, prefix, …). With an
// endpoint (MinIO, SeaweedFS, Ceph, …) addressing is path-style and
// checksums are sent only where required unless the query says otherwise,
// which is what such stores expect, and the region defaults to us-east-1.
// Credentials come from the SDK's usual sources (AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY, a profile, an instance role), never the URL.
func OpenBucket(ctx context.Context, u *url.URL) (*Bucket, error) {
	where := Redact(u.String())
	if u.Host == "" {
		return nil, fmt.Errorf("results store %s: no bucket: s3://bucket?…", where)
	}
	q := u.Query()
	if q.Get("endpoint") != "" {
		setDefault(q, "use_path_style", "true")
		setDefault(q, "request_checksum_calculation", "when_required")
		setDefault(q, "response_checksum_validation", "when_required")
		if os.Getenv("AWS_REGION") == "" && os.Getenv("AWS_DEFAULT_REGION") == "" {
			setDefault(q, "region", "us-east-1")
		}
	}
	u2 := *u
	u2.RawQuery = q.Encode()
	b, err := gcblob.OpenBucket(ctx, u2.String())
	if err != nil {
		// gocloud's error repeats the URL; say only what was wrong.
		return nil, fmt.Errorf("results store %s: %w", where, errors.New(scrub(err.Error(), u2.String())))
	}
	return &Bucket{b: b, where: where, name: u.Host, prefix: q.Get("prefix")}, nil
}

func setDefault(q url.Values, k, v string) {
	if !q.Has(k) {
		q.Set(k, v)
	}
}

// scrub removes s's mentions of rawURL.
func scrub(s, rawURL string) string {
	return strings.ReplaceAll(s, rawURL, "(url)")
}

// String implements Store.
func (b *Bucket) String() string { return b.where }

// Close implements Store.
func (b *Bucket) Close() error { return b.b.Close() }

// OnWriteError implements Store.
func (b *Bucket) OnWriteError(f func(error)) { b.fault = f }

func (b *Bucket) failed(err error) error {
	if b.fault != nil {
		b.fault(err)
	}
	return err
}

// storeError is err from the object store, fit for a job's error text or
// a readiness answer: its kind (gocloud's code) and, for errors.Is, the
// cause, but not the cause's text, which can name the endpoint, the
// bucket or a request id.
type storeError struct {
	op    string
	code  gcerrors.ErrorCode
	cause error
}

func (e *storeError) Error() string { return e.op + ": object store: " + codeText(e.code) }
func (e *storeError) Unwrap() error { return e.cause }

func codeText(c gcerrors.ErrorCode) string {
	switch c {
	case gcerrors.NotFound:
		return "not found"
	case gcerrors.PermissionDenied:
		return "permission denied"
	case gcerrors.Canceled:
		return "canceled"
	case gcerrors.DeadlineExceeded:
		return "timed out"
	case gcerrors.ResourceExhausted:
		return "throttled or out of space"
	case gcerrors.FailedPrecondition:
		return "precondition failed"
	}
	return "unavailable or refused the request"
}

func wrapStore(op string, err error) error {
	if err == nil {
		return nil
	}
	return &storeError{op: op, code: gcerrors.Code(err), cause: err}
}

// Detail is err's full text for a process's own log, where an object
// store's error may say more (its status, request id) than its Error
// does. Credentials are in no error of the SDK.
func Detail(err error) string {
	var se *storeError
	if errors.As(err, &se) {
		return err.Error() + " (" + se.cause.Error() + ")"
	}
	if err == nil {
		return ""
	}
	return err.Error()
}

func validKey(key string) error {
	if key == "" || strings.ContainsAny(key, `/\`) || strings.HasPrefix(key, ".") {
		return fmt.Errorf("blob key %q: invalid", key)
	}
	return nil
}

// Create implements Store. The upload's context is its own, cancelled only
// by Abort: the attempt's context ending between the handler's success and
// Commit must not cost the result.
func (b *Bucket) Create(ctx context.Context, key string, limit int64) (*Writer, error) {
	if err := validKey(key); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	gw, err := b.b.NewWriter(wctx, key, &gcblob.WriterOptions{
		// The record has the result's content type; the object's is a
		// fixed one, and setting it stops gocloud buffering bytes to sniff.
		ContentType:    "application/octet-stream",
		BufferSize:     uploadPartSize,
		MaxConcurrency: uploadConcurrency,
		BeforeWrite:    b.abortable,
	})
	if err != nil {
		cancel()
		return nil, b.failed(wrapStore("create blob "+key, err))
	}
	return newWriter(&bucketSink{w: gw, cancel: cancel, bucket: b, key: key, started: time.Now()}, limit, b.fault), nil
}

// strayMargin widens abortStray's window for the store's clock being
// behind ours.
const strayMargin = 5 * time.Second

// abortStray aborts key's multipart uploads begun since an aborted writer
// started. An upload whose CreateMultipartUpload was still in flight when
// its writer was aborted exists on the store, but the SDK never learnt its
// id, so it could not abort it and its parts would stay stored
// (TestContractAbortLeavesNothing caught it on a loaded machine). Another
// attempt writing the same key at the same moment (a job re-run while a
// stale attempt still uploads) may lose its upload too: its Commit then
// fails and the attempt is retried; no result is ever wrong. Best effort:
// a store that refuses the listing keeps the upload until its lifecycle
// rule (AbortIncompleteMultipartUpload) removes it.
func (b *Bucket) abortStray(key string, since time.Time) {
	var client *s3.Client
	if !b.b.As(&client) || b.name == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), abortTimeout)
	defer cancel()
	full := b.prefix + key
	out, err := client.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &b.name, Prefix: &full})
	if err != nil {
		return
	}
	for _, u := range out.Uploads {
		if u.Key == nil || *u.Key != full || u.UploadId == nil || (u.Initiated != nil && u.Initiated.Before(since.Add(-strayMargin))) {
			continue
		}
		_, _ = client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &b.name, Key: &full, UploadId: u.UploadId})
	}
}

// abortTimeout bounds the request that aborts a multipart upload once
// its writer was aborted.
const abortTimeout = 30 * time.Second

// abortable makes a cancelled upload abort its multipart upload. The SDK's
// transfer manager sends AbortMultipartUpload on the upload's own context
// unless its FailTimeout is set, and that context is the cancelled one, so
// the abort itself would fail and leave the parts stored (SeaweedFS showed
// it: TestContractAbortLeavesNothing). gocloud lends the transfer manager
// to BeforeWrite but not its options, so the client is replaced in place
// by one with the same options and a FailTimeout.
func (b *Bucket) abortable(as func(any) bool) error {
	var tm *transfermanager.Client
	var client *s3.Client
	if !as(&tm) || !b.b.As(&client) {
		return nil // not S3: nothing to fix
	}
	*tm = *transfermanager.New(client, func(o *transfermanager.Options) {
		o.RequestChecksumCalculation = client.Options().RequestChecksumCalculation
		o.PartSizeBytes = uploadPartSize
		o.Concurrency = uploadConcurrency
		o.FailTimeout = abortTimeout
	})
	return nil
}

// bucketSink streams into a gocloud Writer. Close completes the upload; a
// cancelled context aborts it.
type bucketSink struct {
	w       *gcblob.Writer
	cancel  context.CancelFunc
	bucket  *Bucket
	key     string
	started time.Time
}

func (s *bucketSink) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	return n, wrapStore("upload", err)
}

func (s *bucketSink) commit() error {
	defer s.cancel()
	return wrapStore("commit blob", s.w.Close())
}

func (s *bucketSink) abort() {
	// Cancel first: Close on a live context would complete the upload.
	s.cancel()
	_ = s.w.Close()
	s.bucket.abortStray(s.key, s.started)
}

// Open implements Store.
func (b *Bucket) Open(ctx context.Context, key string) (*Reader, error) {
	if err := validKey(key); err != nil {
		return nil, err
	}
	a, err := b.b.Attributes(ctx, key)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return nil, fmt.Errorf("blob %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, wrapStore("open blob "+key, err)
	}
	return &Reader{rs: &rangeReader{ctx: ctx, b: b.b, key: key, size: a.Size}, size: a.Size, modTime: a.ModTime}, nil
}

// Delete implements Store.
func (b *Bucket) Delete(ctx context.Context, key string) error {
	if err := validKey(key); err != nil {
		return err
	}
	if err := b.delete(ctx, key); err != nil {
		return wrapStore("delete blob "+key, err)
	}
	return b.ClearFinished(ctx, key)
}

// delete removes an object; a missing one is not an error.
func (b *Bucket) delete(ctx context.Context, name string) error {
	err := b.b.Delete(ctx, name)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return nil
	}
	return err
}

// MarkFinished implements Store. An object appears whole or not at all,
// so the marker needs no temporary name.
func (b *Bucket) MarkFinished(ctx context.Context, key string, f Finished) error {
	if err := validKey(key); err != nil {
		return err
	}
	buf, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("finished marker %s: %w", key, err)
	}
	err = b.b.WriteAll(ctx, finishedPrefix+key, buf, &gcblob.WriterOptions{ContentType: "application/json"})
	return wrapStore("finished marker "+key, err)
}

// FinishedResult implements Store, as Dir.FinishedResult.
func (b *Bucket) FinishedResult(ctx context.Context, key string) (f Finished, ok bool, err error) {
	if err := validKey(key); err != nil {
		return f, false, err
	}
	buf, err := b.b.ReadAll(ctx, finishedPrefix+key)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return f, false, nil
	}
	if err != nil {
		return f, false, wrapStore("finished marker "+key, err)
	}
	if json.Unmarshal(buf, &f) != nil {
		_ = b.ClearFinished(ctx, key)
		return Finished{}, false, nil
	}
	if f.Empty {
		return f, true, nil
	}
	a, aerr := b.b.Attributes(ctx, key)
	if gcerrors.Code(aerr) == gcerrors.NotFound || (aerr == nil && a.Size != f.Size) {
		_ = b.ClearFinished(ctx, key)
		return Finished{}, false, nil
	}
	if aerr != nil {
		return Finished{}, false, wrapStore("finished marker "+key, aerr)
	}
	return f, true, nil
}

// ClearFinished implements Store.
func (b *Bucket) ClearFinished(ctx context.Context, key string) error {
	if err := validKey(key); err != nil {
		return err
	}
	return wrapStore("clear finished marker "+key, b.delete(ctx, finishedPrefix+key))
}

// list returns the bucket's results and probe objects; markers are not
// entries (Delete removes them with their blob).
func (b *Bucket) list(ctx context.Context) ([]Entry, error) {
	var out []Entry
	it := b.b.List(nil)
	for {
		o, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, wrapStore("list blobs", err)
		}
		switch {
		case o.IsDir:
		case strings.HasPrefix(o.Key, probePrefix):
			out = append(out, Entry{Key: o.Key, Temp: true, ModTime: o.ModTime})
		case !strings.HasPrefix(o.Key, ".") && !strings.Contains(o.Key, "/"):
			out = append(out, Entry{Key: o.Key, ModTime: o.ModTime})
		}
	}
}

func (b *Bucket) removeTemp(ctx context.Context, name string) error {
	if !strings.HasPrefix(name, probePrefix) {
		return fmt.Errorf("blob temp %q: invalid", name)
	}
	return wrapStore("remove probe", b.delete(ctx, name))
}

// Reap implements Store, as Dir.Reap: the job record's TTL is the
// retention clock, not the object's age.
func (b *Bucket) Reap(ctx context.Context, exist func(ctx context.Context, keys []string) ([]bool, error), staleTemp time.Duration, now time.Time) (ReapStats, error) {
	entries, err := b.list(ctx)
	if err != nil {
		return ReapStats{}, err
	}
	return reap(ctx, entries, exist, staleTemp, now,
		func(name string) error { return b.removeTemp(ctx, name) },
		func(key string) error { return b.Delete(ctx, key) })
}

// Check implements Store: it writes and deletes a probe object, the steps
// of a result's life, so missing permissions, a vanished bucket or a store
// that does not answer are found before a result is lost to them. An
// object store has no free space to measure: min is not looked at.
func (b *Bucket) Check(ctx context.Context, _ MinFree) error {
	var r [8]byte
	_, _ = rand.Read(r[:])
	name := probePrefix + hex.EncodeToString(r[:])
	if err := b.b.WriteAll(ctx, name, []byte{0}, &gcblob.WriterOptions{ContentType: "application/octet-stream"}); err != nil {
		return b.failedCheck(wrapStore("write probe", err))
	}
	if err := b.b.Delete(ctx, name); err != nil {
		return b.failedCheck(wrapStore("delete probe", err))
	}
	return nil
}

func (b *Bucket) failedCheck(err error) error { return fmt.Errorf("%w: %w", ErrNotWritable, err) }

// SignedURL implements Store: a presigned GET, which the store honours
// until it expires. Nothing can revoke it earlier, so callers keep Expiry
// short.
func (b *Bucket) SignedURL(ctx context.Context, key string, o SignOptions) (string, error) {
	if err := validKey(key); err != nil {
		return "", err
	}
	exp := min(o.Expiry, maxSignedURL)
	if exp <= 0 {
		return "", errors.New("signed URL: no lifetime left")
	}
	u, err := b.b.SignedURL(ctx, key, &gcblob.SignedURLOptions{
		Expiry: exp,
		Method: "GET",
		BeforeSign: func(as func(any) bool) error {
			var in *s3.GetObjectInput
			if as(&in) {
				if o.ContentType != "" {
					in.ResponseContentType = &o.ContentType
				}
				if o.ContentDisposition != "" {
					in.ResponseContentDisposition = &o.ContentDisposition
				}
			}
			return nil
		},
	})
	if err != nil {
		return "", wrapStore("sign URL for "+key, err)
	}
	return u, nil
}

// rangeReader reads an object through range requests, opened lazily at
// the offset the last Seek chose, so a Range read fetches its range and
// not the object.
type rangeReader struct {
	ctx      context.Context
	b        *gcblob.Bucket
	key      string
	size     int64
	off      int64
	r        *gcblob.Reader
	wantOff  int64
	wantN    int64 // 0: no hint
	closed   bool
	pendingN int64 // bytes left in the open range; -1: to the end
}

func (r *rangeReader) expect(off, n int64) { r.wantOff, r.wantN = off, n }

func (r *rangeReader) Read(p []byte) (int, error) {
	if r.closed {
		return 0, os.ErrClosed
	}
	for {
		if r.off >= r.size {
			return 0, io.EOF
		}
		if r.r == nil {
			length := int64(-1)
			if r.wantN > 0 && r.off >= r.wantOff && r.off < r.wantOff+r.wantN {
				length = r.wantOff + r.wantN - r.off
			}
			rr, err := r.b.NewRangeReader(r.ctx, r.key, r.off, length, nil)
			if err != nil {
				return 0, wrapStore("read blob "+r.key, err)
			}
			r.r, r.pendingN = rr, length
		}
		n, err := r.r.Read(p)
		r.off += int64(n)
		if errors.Is(err, io.EOF) {
			// The range ended; a read past it opens the next one.
			r.r.Close()
			r.r = nil
			if n > 0 || r.off >= r.size {
				if r.off >= r.size {
					return n, io.EOF
				}
				return n, nil
			}
			if r.pendingN < 0 {
				// The object ended before its size: it changed.
				return 0, io.ErrUnexpectedEOF
			}
			continue
		}
		if err != nil {
			return n, wrapStore("read blob "+r.key, err)
		}
		return n, nil
	}
}

func (r *rangeReader) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += r.off
	case io.SeekEnd:
		off += r.size
	default:
		return 0, errors.New("seek: invalid whence")
	}
	if off < 0 {
		return 0, errors.New("seek: negative offset")
	}
	if off != r.off && r.r != nil {
		r.r.Close()
		r.r = nil
	}
	r.off = off
	return off, nil
}

func (r *rangeReader) Close() error {
	r.closed = true
	if r.r != nil {
		err := r.r.Close()
		r.r = nil
		return err
	}
	return nil
}

var _ Store = (*Bucket)(nil)

// s3blob registers the s3 scheme with gocloud's default URL mux, which
// OpenBucket uses for its prefix parameter.
var _ = s3blob.Scheme
