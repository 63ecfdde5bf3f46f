package blob

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// ErrNotWritable is wrapped by Check's error when a probe file cannot be
// written, synced or removed in the store's directory: the disk is
// read-only, gone, full, or the directory was replaced.
var ErrNotWritable = errors.New("results store not writable")

// ErrLowSpace is wrapped by Check's error when the store's file system has
// less free space than the threshold asked for.
var ErrLowSpace = errors.New("results store low on space")

// Space is how much room the store's file system has, in bytes. Free is
// what an unprivileged writer may use (statfs's f_bavail).
type Space struct {
	Free, Total uint64
}

// MinFree is a free-space threshold: Bytes and Percent (of the file
// system's size) must both be left free; a value <= 0 is no floor of
// that kind.
type MinFree struct {
	Bytes   int64
	Percent float64
}

// Space reads the free space of the store's file system.
func (d *Dir) Space() (Space, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(d.root, &st); err != nil {
		return Space{}, fmt.Errorf("statfs results store: %w", pathless(err))
	}
	bs := uint64(st.Bsize) //nolint:unconvert // int64 on linux/amd64, uint32 elsewhere
	return Space{Free: st.Bavail * bs, Total: st.Blocks * bs}, nil
}

// Check reports whether the store can take a result now. It takes the
// steps of a commit on a probe file — create it in the root, write a
// byte, fsync, close, remove — so that a read-only, vanished or replaced
// directory, or a full disk, is found before a job's result is lost to
// it; then it compares the free space with min. The error wraps
// ErrNotWritable or ErrLowSpace; its text names no path (it may reach a
// readiness answer), the caller logs Root when it needs one.
func (d *Dir) Check(min MinFree) error {
	// A temporary file's name: one left by a worker killed mid-probe is
	// reaped with a crashed writer's leftovers.
	f, err := os.CreateTemp(d.root, tempPrefix+"probe-*")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotWritable, pathless(err))
	}
	name := f.Name()
	_, werr := f.Write([]byte{0})
	if werr == nil {
		werr = f.Sync()
	}
	cerr := f.Close()
	rerr := os.Remove(name)
	for _, e := range []error{werr, cerr, rerr} {
		if e != nil {
			return fmt.Errorf("%w: %w", ErrNotWritable, pathless(e))
		}
	}
	sp, err := d.Space()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotWritable, err)
	}
	if min.Bytes > 0 && sp.Free < uint64(min.Bytes) {
		return fmt.Errorf("%w: %d bytes free, %d required", ErrLowSpace, sp.Free, min.Bytes)
	}
	if min.Percent > 0 && sp.Total > 0 && float64(sp.Free)*100 < min.Percent*float64(sp.Total) {
		return fmt.Errorf("%w: %.1f%% free, %g%% required", ErrLowSpace, float64(sp.Free)*100/float64(sp.Total), min.Percent)
	}
	return nil
}

// pathless is err without the file names an *fs.PathError or
// *os.LinkError carries: the server's directory layout is nobody's
// business outside the worker's own log, and a store error may reach a
// job's error text. errors.Is still sees the cause (fs.ErrNotExist,
// syscall.ENOSPC, …).
func pathless(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return fmt.Errorf("%s: %w", le.Op, le.Err)
	}
	return err
}
