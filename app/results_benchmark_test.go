package app_test

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/blob"
	"github.com/claimcheck/claimcheck/internal/redistest"
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

// BenchmarkResultS3VsFile interleaves the two stores, one request to each
// per iteration, so that the machine's drift hits both alike: it reports
// each store's time per request and s3/file, their ratio, for the 64 MiB
// download and for the 1 KiB Range read.
func BenchmarkResultS3VsFile(b *testing.B) {
	const size = 64 << 20
	type target struct{ url, token string }
	var ts []target
	redistest.Client(b) // flushed once; each stack then has a database of its own
	for i, url := range []string{blob.FileURL(b.TempDir()), s3test.StartFake(b).Bucket(b)} {
		rdb := redis.NewClient(&redis.Options{Addr: redistest.Addr(), DB: i + 1})
		b.Cleanup(func() { rdb.Close() })
		s := newS3StackOn(b, rdb, url, time.Hour, false)
		sub := s.run(b, size)
		ts = append(ts, target{s.progress.URL + "/v1/jobs/" + sub.ID + "/result", sub.Token})
	}
	for _, tc := range []struct {
		name, rng string
		want      int64
	}{{"download-64MiB", "", size}, {"range-1KiB", "bytes=33554432-33555455", 1024}} {
		b.Run(tc.name, func(b *testing.B) {
			var spent [2]time.Duration
			for b.Loop() {
				for i, t := range ts {
					start := time.Now()
					if n := fetch(b, t.url, t.token, tc.rng); n != tc.want {
						b.Fatalf("read %d bytes, want %d", n, tc.want)
					}
					spent[i] += time.Since(start)
				}
			}
			n := float64(b.N)
			b.ReportMetric(float64(spent[0].Nanoseconds())/n, "file-ns/req")
			b.ReportMetric(float64(spent[1].Nanoseconds())/n, "s3-ns/req")
			b.ReportMetric(float64(spent[1])/float64(spent[0]), "s3/file")
		})
	}
}
