package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Store is where results live: a local directory (Dir, file://) or an
// object store bucket (Bucket, s3://). Open picks one from a URL. Every
// method's error names the blob's key at most, never a path, an endpoint
// or a credential.
type Store interface {
	// Create starts the blob key, of at most limit bytes when limit > 0.
	// Nothing of it is visible until the Writer's Commit; its Abort drops
	// it. ctx bounds only the start: a writer lives until Commit or Abort,
	// whatever becomes of ctx.
	Create(ctx context.Context, key string, limit int64) (*Writer, error)
	// Open returns the committed blob key for reading (ErrNotFound when
	// there is none).
	Open(ctx context.Context, key string) (*Reader, error)
	// Delete removes a blob and its finished marker; a missing one is
	// not an error.
	Delete(ctx context.Context, key string) error
	// MarkFinished, FinishedResult and ClearFinished keep a blob's
	// finished marker (finished.go).
	MarkFinished(ctx context.Context, key string, f Finished) error
	FinishedResult(ctx context.Context, key string) (Finished, bool, error)
	ClearFinished(ctx context.Context, key string) error
	// Reap removes the results whose job record has expired and what
	// crashed writers left (reap.go).
	Reap(ctx context.Context, exist func(ctx context.Context, keys []string) ([]bool, error), staleTemp time.Duration, now time.Time) (ReapStats, error)
	// Check reports whether the store can take a result now (health.go);
	// min applies only to a store that has a file system to measure.
	Check(ctx context.Context, min MinFree) error
	// SignedURL returns a URL that fetches key directly from the store
	// until it expires (ErrNoSignedURL for a directory).
	SignedURL(ctx context.Context, key string, opts SignOptions) (string, error)
	// OnWriteError has f called with every error of a write that is the
	// store's fault (not ErrTooLarge). Set it before the store is used.
	OnWriteError(f func(error))
	// String says where the store is, for a log: no credential, and an
	// object store's URL without the values of its query.
	String() string
	// Close releases the store's connections.
	Close() error
}

// ErrNoSignedURL is returned by SignedURL of a store that cannot hand out
// direct URLs (a local directory).
var ErrNoSignedURL = errors.New("results store cannot sign URLs")

// SignOptions shape a signed URL.
type SignOptions struct {
	// Expiry is how long the URL works (the store may cap it).
	Expiry time.Duration
	// ContentType and ContentDisposition, when set, are the headers the
	// store answers the URL with.
	ContentType, ContentDisposition string
}

// Reader is a committed blob open for reading: an io.ReadSeeker for
// http.ServeContent, whose Size is known without reading.
type Reader struct {
	rs      io.ReadSeekCloser
	size    int64
	modTime time.Time
}

// Read implements io.Reader.
func (r *Reader) Read(p []byte) (int, error) { return r.rs.Read(p) }

// Seek implements io.Seeker. It does no I/O: an object store's reader
// fetches from the new offset at the next Read.
func (r *Reader) Seek(off int64, whence int) (int64, error) { return r.rs.Seek(off, whence) }

// Close releases the reader.
func (r *Reader) Close() error { return r.rs.Close() }

// Size is the blob's length in bytes.
func (r *Reader) Size() int64 { return r.size }

// ModTime is when the blob was committed.
func (r *Reader) ModTime() time.Time { return r.modTime }

// Expect tells the reader that the next reads want n bytes from off (a
// Range request's one range), so that an object store fetches that range
// and no more. It is a hint: reads past it still work.
func (r *Reader) Expect(off, n int64) {
	if e, ok := r.rs.(interface{ expect(off, n int64) }); ok {
		e.expect(off, n)
	}
}

// Open opens the results store that rawURL names:
//
//   - file:///data/results, or a plain directory path: a directory on
//     this machine (Dir), created if missing. Every process that writes
//     or serves results must see the same one.
//   - s3://bucket?endpoint=…&region=…: a bucket in an S3-compatible
//     store (Bucket). See OpenBucket for the query.
func Open(ctx context.Context, rawURL string) (Store, error) {
	if rawURL == "" {
		return nil, errors.New("results store: no URL")
	}
	if !strings.Contains(rawURL, "://") {
		return OpenDir(rawURL)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Error repeats the URL, which may carry what it should not.
		return nil, errors.New("results store: the URL does not parse")
	}
	if u.User != nil {
		return nil, fmt.Errorf("results store %s: credentials do not go in the URL; an object store's come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)", Redact(rawURL))
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("results store %s: a file URL names a local directory: file:///path", Redact(rawURL))
		}
		if u.RawQuery != "" {
			return nil, fmt.Errorf("results store %s: a file URL takes no query", Redact(rawURL))
		}
		return OpenDir(u.Path)
	case "s3":
		return OpenBucket(ctx, u)
	}
	return nil, fmt.Errorf("results store %s: scheme %q is not supported (file or s3)", Redact(rawURL), u.Scheme)
}

// FileURL is the file URL of the directory dir (made absolute).
func FileURL(dir string) string {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return (&url.URL{Scheme: "file", Path: filepath.ToSlash(dir)}).String()
}

// Redact is rawURL fit for a log: its query's values and any user
// information replaced, so that nothing a deployment put there is
// repeated.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparsable URL)"
	}
	if u.User != nil {
		u.User = url.User("REDACTED")
	}
	if u.RawQuery != "" {
		keys := make([]string, 0, len(u.Query()))
		for k := range u.Query() {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for i, k := range keys {
			keys[i] = url.QueryEscape(k) + "=REDACTED"
		}
		u.RawQuery = strings.Join(keys, "&")
	}
	return u.String()
}

// OpenDir is the Store of a local directory: a Dir with context-taking
// methods.
func OpenDir(root string) (Store, error) {
	d, err := NewDir(root)
	if err != nil {
		return nil, err
	}
	return &fileStore{d}, nil
}

// DirOf returns the Dir under s, when s is a local directory.
func DirOf(s Store) (*Dir, bool) {
	fs, ok := s.(*fileStore)
	if !ok {
		return nil, false
	}
	return fs.Dir, true
}

// fileStore is a Dir as a Store. The Dir's own methods take no context: a
// local file system call cannot be cancelled anyway.
type fileStore struct{ *Dir }

func (s *fileStore) Create(_ context.Context, key string, limit int64) (*Writer, error) {
	return s.Dir.Create(key, limit)
}

func (s *fileStore) Open(_ context.Context, key string) (*Reader, error) {
	f, err := s.Dir.Open(key)
	if err != nil {
		return nil, err
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open blob %s: %w", key, pathless(err))
	}
	return &Reader{rs: f, size: info.Size(), modTime: info.ModTime()}, nil
}

func (s *fileStore) Delete(_ context.Context, key string) error { return s.Dir.Delete(key) }

func (s *fileStore) MarkFinished(_ context.Context, key string, f Finished) error {
	return s.Dir.MarkFinished(key, f)
}

func (s *fileStore) FinishedResult(_ context.Context, key string) (Finished, bool, error) {
	return s.Dir.FinishedResult(key)
}

func (s *fileStore) ClearFinished(_ context.Context, key string) error {
	return s.Dir.ClearFinished(key)
}

func (s *fileStore) Check(_ context.Context, min MinFree) error { return s.Dir.Check(min) }

func (s *fileStore) SignedURL(context.Context, string, SignOptions) (string, error) {
	return "", ErrNoSignedURL
}

func (s *fileStore) String() string { return FileURL(s.root) }

func (s *fileStore) Close() error { return nil }

var _ Store = (*fileStore)(nil)
var _ io.ReadSeekCloser = (*os.File)(nil)

// StoreOf is the Store of an open Dir.
func StoreOf(d *Dir) Store { return &fileStore{d} }
