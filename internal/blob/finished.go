package blob

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// A finished marker says that a committed blob is a job's whole, final
// result although the job's record does not say so yet: the worker stored
// the result, then could not write the record (Redis was away). Whoever
// runs the job next (the same worker once Redis is back, or another one
// after Asynq re-delivers the task) finds the marker and records the result
// instead of running the job again. The marker is a hidden file beside the
// blob, so List and the progress service never see it; Delete removes it
// with its blob.

// finishedPrefix starts the names of finished markers.
const finishedPrefix = ".finished-"

// Finished is what a finished marker records of its blob.
type Finished struct {
	ContentType string `json:"content_type"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"`
	// Attempt is the attempt that made the result, for the log.
	Attempt int `json:"attempt"`
	// Empty says the job made no result: there is no blob to look for.
	Empty bool `json:"empty,omitempty"`
}

func (d *Dir) finishedPath(key string) (string, error) {
	if _, err := d.path(key); err != nil {
		return "", err
	}
	return filepath.Join(d.root, finishedPrefix+key), nil
}

// MarkFinished writes key's finished marker, atomically and synced: a
// marker that exists is whole. The blob, unless f.Empty, must be committed
// already.
func (d *Dir) MarkFinished(key string, f Finished) error {
	p, err := d.finishedPath(key)
	if err != nil {
		return err
	}
	b, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("finished marker %s: %w", key, err)
	}
	tmp, err := os.CreateTemp(d.root, tempPrefix+"finished-"+key+"-*")
	if err != nil {
		return fmt.Errorf("finished marker %s: %w", key, pathless(err))
	}
	name := tmp.Name()
	_, werr := tmp.Write(b)
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(name, p)
	}
	if werr != nil {
		os.Remove(name)
		return fmt.Errorf("finished marker %s: %w", key, pathless(werr))
	}
	return nil
}

// FinishedResult returns key's finished marker when there is one and its
// blob is there with the size the marker names; ok is false otherwise. A
// marker whose blob is missing or of another size is stale (the blob was
// replaced or removed) and is removed.
func (d *Dir) FinishedResult(key string) (f Finished, ok bool, err error) {
	p, err := d.finishedPath(key)
	if err != nil {
		return f, false, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return f, false, nil
	}
	if err != nil {
		return f, false, fmt.Errorf("finished marker %s: %w", key, pathless(err))
	}
	if json.Unmarshal(b, &f) != nil {
		_ = d.ClearFinished(key)
		return Finished{}, false, nil
	}
	if f.Empty {
		return f, true, nil
	}
	blobPath, _ := d.path(key)
	info, serr := os.Stat(blobPath)
	if serr != nil || info.Size() != f.Size {
		_ = d.ClearFinished(key)
		return Finished{}, false, nil
	}
	return f, true, nil
}

// ClearFinished removes key's finished marker, once the record says what it
// said. Clearing a missing marker is not an error.
func (d *Dir) ClearFinished(key string) error {
	p, err := d.finishedPath(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("clear finished marker %s: %w", key, pathless(err))
	}
	return nil
}
