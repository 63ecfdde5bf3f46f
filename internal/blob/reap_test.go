package blob_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/blob"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
)

func TestReapDeletesOnlyExpiredData(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Client(t)
	store := jobs.NewStore(rdb, nil)
	blobs, err := blob.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	put := func(key string) {
		w, err := blobs.Create(key, 0)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, "result of "+key)
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"live", "expired"} {
		if _, err := store.Create(ctx, jobs.NewJob{ID: id, Type: "t", Owner: "ann", Queue: "default", Timeout: time.Minute, TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
		put(id)
	}
	put("never-recorded")
	// The expired job's record is gone, as its TTL would make it.
	if err := rdb.Del(ctx, "cc:job:{expired}").Err(); err != nil {
		t.Fatal(err)
	}
	// An old file, but its record lives: within retention, it stays.
	old := time.Now().Add(-30 * 24 * time.Hour)
	if err := os.Chtimes(filepath.Join(blobs.Root(), "live"), old, old); err != nil {
		t.Fatal(err)
	}
	// A writer still writing, and one that crashed a day ago.
	writing, _ := blobs.Create("live2", 0)
	defer writing.Abort()
	crashed, _ := blobs.Create("crashed", 0)
	crashedName := tempName(t, blobs)
	_ = crashed
	for _, e := range mustList(t, blobs) {
		if e.Temp && e.Key == crashedName {
			if err := os.Chtimes(filepath.Join(blobs.Root(), e.Key), old, old); err != nil {
				t.Fatal(err)
			}
		}
	}

	st, err := blobs.Reap(ctx, store.Exist, 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if st.Results != 2 || st.Temps != 1 || st.Kept != 1 {
		t.Fatalf("reaped %+v, want 2 results, 1 temp file, 1 kept", st)
	}
	if f, err := blobs.Open("live"); err != nil {
		t.Fatalf("live result reaped: %v", err)
	} else {
		f.Close()
	}
	for _, gone := range []string{"expired", "never-recorded"} {
		if _, err := blobs.Open(gone); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("%s: %v", gone, err)
		}
	}
	// The writer still writing commits fine afterwards.
	io.WriteString(writing, "late")
	if err := writing.Commit(); err != nil {
		t.Fatalf("in-flight write after a reap: %v", err)
	}
}

func mustList(t *testing.T, d *blob.Dir) []blob.Entry {
	t.Helper()
	es, err := d.List()
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// tempName finds the temp file of the blob "crashed".
func tempName(t *testing.T, d *blob.Dir) string {
	t.Helper()
	for _, e := range mustList(t, d) {
		if e.Temp && len(e.Key) > len(".tmp-crashed") && e.Key[:len(".tmp-crashed")] == ".tmp-crashed" {
			return e.Key
		}
	}
	t.Fatal("no temp file for crashed")
	return ""
}
