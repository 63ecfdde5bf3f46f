package app_test

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/blob"
	"github.com/claimcheck/claimcheck/internal/s3test"
)

// BenchmarkResultDownload downloads a 64 MiB result through the progress
// service, from a results directory and from an S3 bucket (the in-process
// S3 server, so the network is loopback and the store's own cost is
// small): what reading through range requests costs against a file.
// BenchmarkResultRange1KiB reads 1 KiB from the middle of the same
// result: the latency an object store adds to a Range request (one
// ranged GET, after a HEAD for the size). docs/BENCHMARKS.md has the
// command and a run.
func BenchmarkResultDownload(b *testing.B) {
	const size = 64 << 20
	for _, be := range resultBackends(b) {
		b.Run(be.name, func(b *testing.B) {
			s, sub := be.stack(b, size)
			url := s.progress.URL + "/v1/jobs/" + sub.ID + "/result"
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				if n := fetch(b, url, sub.Token, ""); n != size {
					b.Fatalf("downloaded %d bytes", n)
				}
			}
		})
	}
}

func BenchmarkResultRange1KiB(b *testing.B) {
	const size = 64 << 20
	for _, be := range resultBackends(b) {
		b.Run(be.name, func(b *testing.B) {
			s, sub := be.stack(b, size)
			url := s.progress.URL + "/v1/jobs/" + sub.ID + "/result"
			b.ReportAllocs()
			for b.Loop() {
				if n := fetch(b, url, sub.Token, "bytes=33554432-33555455"); n != 1024 {
					b.Fatalf("range read %d bytes", n)
				}
			}
		})
	}
}

type resultBackend struct {
	name  string
	stack func(b *testing.B, size int) (*s3Stack, submitted)
}

func resultBackends(b *testing.B) []resultBackend {
	mk := func(url func(b *testing.B) string) func(b *testing.B, size int) (*s3Stack, submitted) {
		return func(b *testing.B, size int) (*s3Stack, submitted) {
			s := newS3Stack(b, url(b), time.Hour, false)
			return s, s.run(b, size)
		}
	}
	return []resultBackend{
		{"file", mk(func(b *testing.B) string { return blob.FileURL(b.TempDir()) })},
		{"s3", mk(func(b *testing.B) string { return s3test.StartFake(b).Bucket(b) })},
	}
}

// fetch GETs url with token and an optional Range and returns the body's
// length.
func fetch(b *testing.B, url, token, rng string) int64 {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := benchClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	n, _ := io.Copy(io.Discard, resp.Body)
	return n
}

// benchClient skips the contract check that http.DefaultClient does in
// this package's tests: the benchmark measures the service, not it.
var benchClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
