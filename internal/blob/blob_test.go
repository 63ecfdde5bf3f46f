package blob_test

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/claimcheck/claimcheck/internal/blob"
)

func TestWriteCommitOpen(t *testing.T) {
	d, err := blob.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w, err := d.Create("job1", 0)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "hello ")
	io.WriteString(w, "world")
	if _, err := d.Open("job1"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("uncommitted blob visible: %v", err)
	}
	// sha256("hello world")
	if w.Size() != 11 || w.SHA256() != "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9" {
		t.Fatalf("size %d sha %s", w.Size(), w.SHA256())
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	f, err := d.Open("job1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != "hello world" {
		t.Fatalf("read %q", b)
	}
	if err := d.Delete("job1"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Open("job1"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("deleted blob: %v", err)
	}
}

func TestAbortAndLimitLeaveNothing(t *testing.T) {
	root := t.TempDir()
	d, _ := blob.NewDir(root)
	w, _ := d.Create("big", 8)
	if _, err := w.Write([]byte("0123456789")); !errors.Is(err, blob.ErrTooLarge) {
		t.Fatalf("write over limit: %v", err)
	}
	w.Abort()
	w.Abort() // idempotent
	entries, _ := os.ReadDir(root)
	if len(entries) != 0 {
		t.Fatalf("abort left files: %v", entries)
	}
}

func TestKeysCannotEscapeRoot(t *testing.T) {
	root := t.TempDir()
	d, _ := blob.NewDir(filepath.Join(root, "blobs"))
	for _, key := range []string{"", ".", "..", "../x", "a/b", `a\b`, ".hidden"} {
		if _, err := d.Create(key, 0); err == nil || strings.Contains(err.Error(), "no such") {
			t.Errorf("Create(%q) = %v", key, err)
		}
		if _, err := d.Open(key); err == nil || errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Open(%q) = %v", key, err)
		}
	}
}
