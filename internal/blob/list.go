package blob

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// tempPrefix starts the names of blobs being written (see Create).
const tempPrefix = ".tmp-"

// Entry is one file in the store.
type Entry struct {
	Key string
	// Temp is set for a blob still being written (or left by a writer that
	// crashed); Key is then the file's name.
	Temp    bool
	ModTime time.Time
}

// List returns every committed blob and every temporary file.
func (d *Dir) List() ([]Entry, error) {
	des, err := os.ReadDir(d.root)
	if err != nil {
		return nil, fmt.Errorf("list blobs: %w", pathless(err))
	}
	out := make([]Entry, 0, len(des))
	for _, de := range des {
		if de.IsDir() {
			continue
		}
		info, err := de.Info()
		if err != nil {
			continue // removed meanwhile
		}
		name := de.Name()
		switch {
		case strings.HasPrefix(name, tempPrefix):
			out = append(out, Entry{Key: name, Temp: true, ModTime: info.ModTime()})
		case !strings.HasPrefix(name, "."):
			out = append(out, Entry{Key: name, ModTime: info.ModTime()})
		}
	}
	return out, nil
}

// RemoveTemp deletes a temporary file List reported.
func (d *Dir) RemoveTemp(name string) error {
	if !strings.HasPrefix(name, tempPrefix) || strings.ContainsAny(name, `/\`) {
		return fmt.Errorf("blob temp %q: invalid", name)
	}
	if err := os.Remove(d.root + string(os.PathSeparator) + name); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove blob temp %s: %w", name, err)
	}
	return nil
}
