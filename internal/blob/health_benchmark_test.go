package blob_test

import (
	"testing"

	"github.com/claimcheck/claimcheck/internal/blob"
)

// BenchmarkCheck is the worker's results-store probe (create, write, fsync,
// close, remove, statfs): its cost per ResultsCheckInterval. The fsync
// dominates; BenchmarkSpace, statfs alone, is the baseline.
func BenchmarkCheck(b *testing.B) {
	d, err := blob.NewDir(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := d.Check(blob.MinFree{Bytes: 1}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSpace(b *testing.B) {
	d, err := blob.NewDir(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Space(); err != nil {
			b.Fatal(err)
		}
	}
}
