package blob_test

import (
	"io"
	"testing"

	"github.com/claimcheck/claimcheck/internal/blob"
)

// TestFinishedMarker: a marker beside a committed blob is read back whole,
// is invisible to List, and goes with Delete; a marker whose blob is
// missing or of another size is not trusted.
func TestFinishedMarker(t *testing.T) {
	d, err := blob.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	commit := func(key, body string) *blob.Writer {
		w, err := d.Create(key, 0)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, body)
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		return w
	}
	w := commit("job1", "hello world")
	want := blob.Finished{ContentType: "text/plain", Size: w.Size(), SHA256: w.SHA256(), Attempt: 2}
	if _, ok, err := d.FinishedResult("job1"); ok || err != nil {
		t.Fatalf("marker before any was written: ok=%v err=%v", ok, err)
	}
	if err := d.MarkFinished("job1", want); err != nil {
		t.Fatal(err)
	}
	got, ok, err := d.FinishedResult("job1")
	if err != nil || !ok || got != want {
		t.Fatalf("FinishedResult = %+v, %v, %v; want %+v", got, ok, err, want)
	}
	entries, err := d.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Key != "job1" || entries[0].Temp {
		t.Fatalf("List = %+v, want only the blob", entries)
	}

	// Replaced by a blob of another size: the marker is stale and dropped.
	commit("job1", "hello")
	if _, ok, _ := d.FinishedResult("job1"); ok {
		t.Fatal("a marker naming another size was trusted")
	}
	if err := d.MarkFinished("job1", blob.Finished{Size: 5}); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete("job1"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := d.FinishedResult("job1"); ok {
		t.Fatal("a marker outlived its deleted blob")
	}
	if err := d.MarkFinished("../x", want); err == nil {
		t.Fatal("a key naming another directory was accepted")
	}
}
