package blob_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/claimcheck/claimcheck/internal/blob"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name    string
		min     blob.MinFree
		breakIt func(t *testing.T, root string)
		want    error
	}{
		{name: "healthy", min: blob.MinFree{Bytes: 1, Percent: 0.0001}},
		{name: "no floor", min: blob.MinFree{Bytes: -1, Percent: -1}},
		// Root ignores permission bits, so the directory is replaced by a
		// file instead: what a lost mount or an operator's mistake looks like.
		{name: "directory replaced by a file", breakIt: func(t *testing.T, root string) {
			if err := os.Rename(root, root+".away"); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(root, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, want: blob.ErrNotWritable},
		{name: "directory gone", breakIt: func(t *testing.T, root string) {
			if err := os.RemoveAll(root); err != nil {
				t.Fatal(err)
			}
		}, want: blob.ErrNotWritable},
		{name: "less free than the byte floor", min: blob.MinFree{Bytes: 1 << 62}, want: blob.ErrLowSpace},
		{name: "less free than the percentage", min: blob.MinFree{Percent: 100.5}, want: blob.ErrLowSpace},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "results")
			d, err := blob.NewDir(root)
			if err != nil {
				t.Fatal(err)
			}
			if tc.breakIt != nil {
				tc.breakIt(t, root)
			}
			err = d.Check(tc.min)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Check = %v, want %v", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), root) {
				t.Fatalf("error names the path: %v", err)
			}
			if tc.breakIt == nil {
				// The probe leaves nothing behind.
				if ents, _ := os.ReadDir(root); len(ents) != 0 {
					t.Fatalf("probe left %v", ents)
				}
			}
		})
	}
}

func TestSpace(t *testing.T) {
	d, err := blob.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sp, err := d.Space()
	if err != nil || sp.Total == 0 || sp.Free > sp.Total {
		t.Fatalf("Space = %+v, %v", sp, err)
	}
}

// A store error can become a job's error text; it names the key, not the
// server's directory, and still says what went wrong.
func TestWriteErrorsNameNoPath(t *testing.T) {
	root := filepath.Join(t.TempDir(), "results")
	d, err := blob.NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var faults []error
	d.OnWriteError(func(err error) { faults = append(faults, err) })
	if err := os.RemoveAll(root); err != nil {
		t.Fatal(err)
	}
	_, err = d.Create("job1", 0)
	if err == nil || strings.Contains(err.Error(), root) || !strings.Contains(err.Error(), "job1") || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Create = %v", err)
	}
	if err := os.MkdirAll(root, 0o750); err != nil {
		t.Fatal(err)
	}
	w, err := d.Create("job2", 0)
	if err != nil {
		t.Fatal(err)
	}
	// A non-empty directory where the result goes: the rename fails.
	if err := os.MkdirAll(filepath.Join(root, "job2", "x"), 0o750); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err == nil || strings.Contains(err.Error(), root) {
		t.Fatalf("Commit = %v", err)
	}
	// Both failures were reported for a health check; a result over its
	// limit is the job's doing, not the store's, and is not.
	w, err = d.Create("job3", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if _, err := w.Write([]byte("too long")); !errors.Is(err, blob.ErrTooLarge) {
		t.Fatalf("Write = %v", err)
	}
	if len(faults) != 2 {
		t.Fatalf("OnWriteError saw %v, want the Create and the Commit failures", faults)
	}
}
