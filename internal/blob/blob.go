// Package blob stores job results: a byte stream per job, written by a
// worker and served by the progress service. Open picks the store from one
// URL (--results-url):
//
//	file:///data/results          Dir: a local directory (the default)
//	s3://bucket?endpoint=…&region=…  Bucket: an S3-compatible bucket
//
// Both keep the same contract (contract_test.go runs it against a
// directory, an in-process S3 server and, when it is on PATH, SeaweedFS):
//
//   - A result becomes visible only on Writer.Commit, whole. Dir writes a
//     temporary file that Commit fsyncs and renames into place, so a crash
//     leaves no partial result under a real name. Bucket streams a
//     multipart upload that the store completes only on Commit; Abort (or a
//     worker that dies) never completes it, and Abort aborts it.
//   - Writes stream: Dir holds no buffer, Bucket at most
//     uploadPartSize × (uploadConcurrency+1) bytes, whatever the size. The
//     size limit and the SHA-256 are counted as the bytes pass; the digest,
//     size and content type go in the job record (and the finished marker),
//     not in object metadata, which S3 fixes when an upload starts, before
//     the digest is known.
//   - Reads seek: Reader is an io.ReadSeeker for http.ServeContent; a
//     Bucket's reader fetches with range requests from where the last Seek
//     left it (Expect narrows the first one to a Range request's range).
//   - Retention: Reap deletes the results whose job record has expired
//     (the record's TTL is the clock, not the object's age) with their
//     finished markers (finished.go), and what crashed writers left: Dir's
//     temporary files, Bucket's probe objects. A Bucket's abandoned
//     multipart uploads are invisible and cannot be listed through gocloud:
//     give the bucket a lifecycle rule that aborts incomplete uploads after
//     a day (README: results storage).
//   - Check is the worker's health probe: a probe file (Dir, with fsync and
//     the file system's free space) or object (Bucket: written and
//     deleted; an object store has no free space to measure).
//
// Why Dir and not gocloud's fileblob: fileblob renames its temporary file
// into place without an fsync, so after a power loss a result could be
// there by name and empty or short; by default it writes temporary files
// in os.TempDir, from where a rename onto a mounted volume fails; and it
// keeps attributes in sidecar files that a reaper would have to know of. Dir's commit is
// the one the worker's crash-safety was built on, so file:// keeps it.
//
// Errors from writing a result (Create, Write, Commit) and from Check name
// the blob's key but never a path, an endpoint, a bucket or a credential:
// they can reach a job's error text or a readiness answer. Detail adds an
// object store's own text for the worker's log; Store.String says where
// the store is without the values of its URL's query. Credentials never
// go in the URL: the SDK reads them from the environment.
package blob

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ErrNotFound is returned for a key with no committed blob.
var ErrNotFound = errors.New("blob not found")

// ErrTooLarge is returned by a Writer whose limit was exceeded.
var ErrTooLarge = errors.New("result exceeds its size limit")

// Dir is a blob store rooted at a directory.
type Dir struct {
	root string
	// fault, when set, is told of every failure to write a result that
	// is the store's doing (not a result over its limit).
	fault func(error)
}

// OnWriteError has f called with every error of Create, Writer.Write and
// Writer.Commit that is the store's (a full, read-only or vanished disk;
// not ErrTooLarge), so a health monitor can look at once instead of at its
// next tick. Set it before the store is used; f must not block.
func (d *Dir) OnWriteError(f func(error)) { d.fault = f }

func (d *Dir) failed(err error) error {
	if d.fault != nil {
		d.fault(err)
	}
	return err
}

// NewDir opens (creating if needed) a store rooted at root.
func NewDir(root string) (*Dir, error) {
	if err := os.MkdirAll(root, 0o750); err != nil {
		return nil, fmt.Errorf("blob dir %s: %w", root, err)
	}
	return &Dir{root: root}, nil
}

// Root is the directory the store writes to.
func (d *Dir) Root() string { return d.root }

func (d *Dir) path(key string) (string, error) {
	// Keys are job ids chosen by the API, but refuse anything that could
	// name a file outside the root all the same.
	if key == "" || strings.ContainsAny(key, `/\`) || key == "." || key == ".." || strings.HasPrefix(key, ".") {
		return "", fmt.Errorf("blob key %q: invalid", key)
	}
	return filepath.Join(d.root, key), nil
}

// Writer streams one blob, hashing and counting as it goes. The bytes go
// to the store as they come (a temporary file, or a multipart upload) and
// become the blob only on Commit.
type Writer struct {
	exceeded bool
	failed   bool // a write failed in the store (not ErrTooLarge)
	sink     sink
	h        hash.Hash
	fault    func(error)
	n        int64
	limit    int64
	done     bool
}

// sink is where a Writer's bytes go: a temporary file (Dir) or an upload
// (Bucket). Its errors already name no path, endpoint or credential.
type sink interface {
	Write(p []byte) (int, error)
	// commit makes the bytes the blob; abort drops them. One of the two
	// is called once.
	commit() error
	abort()
}

func newWriter(s sink, limit int64, fault func(error)) *Writer {
	return &Writer{sink: s, h: sha256.New(), limit: limit, fault: fault}
}

func (w *Writer) failedWith(err error) error {
	if w.fault != nil {
		w.fault(err)
	}
	return err
}

// Create starts a blob under key. limit > 0 bounds its size. The blob is not
// visible until Commit; call Abort (safe after Commit) to clean up on failure.
func (d *Dir) Create(key string, limit int64) (*Writer, error) {
	final, err := d.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(d.root, ".tmp-"+key+"-*")
	if err != nil {
		return nil, d.failed(fmt.Errorf("create blob %s: %w", key, pathless(err)))
	}
	return newWriter(&fileSink{f: f, final: final}, limit, d.fault), nil
}

// Write implements io.Writer.
func (w *Writer) Write(p []byte) (int, error) {
	if w.limit > 0 && w.n+int64(len(p)) > w.limit {
		w.exceeded = true
		return 0, fmt.Errorf("%w (%d bytes)", ErrTooLarge, w.limit)
	}
	n, err := w.sink.Write(p)
	w.h.Write(p[:n])
	w.n += int64(n)
	if err != nil {
		w.failed = true
		// A handler may return it as it is, and then it is the job's
		// error text, which must not show the server's paths.
		return n, w.failedWith(fmt.Errorf("write result: %w", err))
	}
	return n, nil
}

// Exceeded reports whether a write went past the limit, even if the caller
// swallowed the error.
func (w *Writer) Exceeded() bool { return w.exceeded }

// Failed reports whether a write failed in the store (a full or broken
// disk; not the size limit), even if the caller swallowed the error.
func (w *Writer) Failed() bool { return w.failed }

// Limit is the writer's size limit (0: none).
func (w *Writer) Limit() int64 { return w.limit }

// Size is the number of bytes written so far.
func (w *Writer) Size() int64 { return w.n }

// SHA256 is the hex digest of the bytes written so far.
func (w *Writer) SHA256() string { return hex.EncodeToString(w.h.Sum(nil)) }

// Commit makes the bytes written the blob: a file is synced and renamed
// into place, an upload completed.
func (w *Writer) Commit() error {
	if w.done {
		return errors.New("blob already committed or aborted")
	}
	w.done = true
	if err := w.sink.commit(); err != nil {
		return w.failedWith(err)
	}
	return nil
}

// Abort discards an uncommitted blob: nothing of it becomes visible. It is
// a no-op after Commit.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.sink.abort()
}

// fileSink writes a temporary file beside the blob's final name.
type fileSink struct {
	f     *os.File
	final string
}

func (s *fileSink) Write(p []byte) (int, error) {
	n, err := s.f.Write(p)
	if err != nil {
		return n, pathless(err)
	}
	return n, nil
}

// commit syncs the file and renames it into place: a blob under its real
// name is whole even after a crash.
func (s *fileSink) commit() error {
	name := s.f.Name()
	if err := s.f.Sync(); err != nil {
		s.f.Close()
		os.Remove(name)
		return fmt.Errorf("sync blob: %w", pathless(err))
	}
	if err := s.f.Close(); err != nil {
		os.Remove(name)
		return fmt.Errorf("close blob: %w", pathless(err))
	}
	if err := os.Rename(name, s.final); err != nil {
		os.Remove(name)
		return fmt.Errorf("commit blob: %w", pathless(err))
	}
	return nil
}

func (s *fileSink) abort() {
	name := s.f.Name()
	s.f.Close()
	os.Remove(name)
}

// Open returns a committed blob for reading. The caller closes it.
func (d *Dir) Open(key string) (*os.File, error) {
	p, err := d.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("blob %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", key, pathless(err))
	}
	return f, nil
}

// Delete removes a blob and its finished marker (finished.go); deleting a
// missing blob is not an error.
func (d *Dir) Delete(key string) error {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete blob %s: %w", key, pathless(err))
	}
	return d.ClearFinished(key)
}

var _ io.Writer = (*Writer)(nil)
