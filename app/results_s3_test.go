package app_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/s3test"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/tokens"
	"github.com/claimcheck/claimcheck/worker"
)

// s3Stack is an api, a progress service and a worker that share Redis and
// an S3 bucket and nothing else: each has its own app.Config and data
// directory, and the progress service knows the api only by its JWKS.
type s3Stack struct {
	api, progress  *httptest.Server
	apiKey         string
	url            string // the results URL
	progDir, wkDir string
}

// blobType makes a result of n bytes of a pattern.
var blobType = worker.Type{
	Name: "blob", Description: "writes n bytes", Timeout: time.Minute,
	InputSchema: []byte(`{"type":"object","properties":{"n":{"type":"integer"}}}`),
	Handle: func(ctx context.Context, t *worker.Task) error {
		var in struct{ N int }
		if err := t.Decode(&in); err != nil {
			return err
		}
		w, err := t.Result("application/octet-stream")
		if err != nil {
			return err
		}
		_, err = w.Write(blobBytes(in.N))
		return err
	},
}

func blobBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*13 + i/509)
	}
	return b
}

func newS3Stack(t testing.TB, resultsURL string, retention time.Duration, redirect bool) *s3Stack {
	t.Helper()
	return newS3StackOn(t, redistest.Client(t), resultsURL, retention, redirect)
}

// newS3StackOn is newS3Stack on rdb, for a benchmark that runs two stacks
// side by side, each in a Redis database of its own.
func newS3StackOn(t testing.TB, rdb redis.UniversalClient, resultsURL string, retention time.Duration, redirect bool) *s3Stack {
	t.Helper()
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	s := &s3Stack{url: resultsURL, progDir: t.TempDir(), wkDir: t.TempDir()}

	apiCfg := app.Config{DataDir: t.TempDir(), Argon2: cheapArgon2, Logger: quiet, Retention: time.Hour}.WithDefaults()
	keys, _, err := tokens.EnsureDir(apiCfg.JobKeyDir)
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := identity.NewAPIKeys(rdb, nil).Create(ctx, "ann", "test", "")
	if err != nil {
		t.Fatal(err)
	}
	s.apiKey = key.Reveal()
	h, err := app.APIHandler(apiCfg, rdb, keys)
	if err != nil {
		t.Fatal(err)
	}
	s.api = httptest.NewServer(h)
	t.Cleanup(s.api.Close)

	progCfg := app.Config{DataDir: s.progDir, ResultsURL: resultsURL, ResultsRedirect: redirect, Logger: quiet,
		JWKSURL: s.api.URL + "/.well-known/jwks.json", Retention: time.Hour}.WithDefaults()
	pkeys, err := app.ProgressKeys(ctx, progCfg)
	if err != nil {
		t.Fatal(err)
	}
	prog, err := app.Progress(progCfg, rdb, pkeys)
	if err != nil {
		t.Fatal(err)
	}
	s.progress = httptest.NewServer(app.Handler(progCfg, prog))
	t.Cleanup(s.progress.Close)

	wkCfg := app.Config{DataDir: s.wkDir, ResultsURL: resultsURL, Logger: quiet, Types: []worker.Type{blobType},
		Worker: worker.Config{Concurrency: 2, Retention: retention, ReapInterval: 100 * time.Millisecond}}.WithDefaults()
	startWorker(t, wkCfg, rdb)
	return s
}

func (s *s3Stack) run(t testing.TB, n int) submitted {
	t.Helper()
	var sub submitted
	waitfor.True(t, 20*time.Second, func() bool {
		// The api learns the type from the worker's announcement.
		resp := do(t, "POST", s.api.URL+"/v1/jobs", s.apiKey, strings.NewReader(`{"type":"blob","input":{"n":`+strconv.Itoa(n)+`}}`))
		if resp.StatusCode != http.StatusAccepted {
			return false
		}
		sub = decode[submitted](t, resp)
		return true
	})
	waitfor.True(t, 20*time.Second, func() bool {
		resp := do(t, "GET", s.progress.URL+"/v1/jobs/"+sub.ID, sub.Token, nil)
		j := decode[jobs.Job](t, resp)
		if j.State.Final() && j.State != jobs.StateSucceeded {
			t.Fatalf("job ended %s: %v", j.State, j.Error)
		}
		return j.State == jobs.StateSucceeded
	})
	return sub
}

// TestResultsInS3NoSharedDisk: a worker and a progress service that share
// only an S3 bucket (no directory) complete a job, serve its result whole
// and by Range through the progress service, and the worker's reaper
// deletes it once its record has expired. Neither data directory holds a
// result.
func TestResultsInS3NoSharedDisk(t *testing.T) {
	for _, tc := range []struct {
		name  string
		store func(t *testing.T) (url, endpoint string)
	}{
		{"gofakes3", func(t *testing.T) (string, string) { f := s3test.StartFake(t); return f.Bucket(t), f.Endpoint }},
		{"seaweedfs", func(t *testing.T) (string, string) { w := s3test.StartWeed(t); return w.Bucket(t), w.Endpoint }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, endpoint := tc.store(t)
			testResultsInS3(t, u, endpoint)
		})
	}
}

func testResultsInS3(t *testing.T, u, endpoint string) {
	// Five seconds: the downloads below must fit before the record
	// expires, and then the reaper is waited for.
	s := newS3Stack(t, u, 5*time.Second, false)
	const n = 300_000
	want := blobBytes(n)
	sub := s.run(t, n)

	r := do(t, "GET", s.progress.URL+"/v1/jobs/"+sub.ID+"/result", sub.Token, nil)
	got, _ := io.ReadAll(r.Body)
	if r.StatusCode != 200 || !bytes.Equal(got, want) {
		t.Fatalf("download: %d, %d bytes (want %d)", r.StatusCode, len(got), n)
	}
	etag := r.Header.Get("ETag")
	r = do(t, "GET", s.progress.URL+"/v1/jobs/"+sub.ID+"/result", sub.Token, nil, "Range", "bytes=100000-101023")
	got, _ = io.ReadAll(r.Body)
	if r.StatusCode != http.StatusPartialContent || !bytes.Equal(got, want[100000:101024]) ||
		r.Header.Get("Content-Range") != "bytes 100000-101023/300000" {
		t.Fatalf("range: %d %q, %d bytes", r.StatusCode, r.Header.Get("Content-Range"), len(got))
	}
	r = do(t, "GET", s.progress.URL+"/v1/jobs/"+sub.ID+"/result", sub.Token, nil, "If-None-Match", etag)
	if r.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match with the ETag: %d", r.StatusCode)
	}

	for _, dir := range []string{s.progDir, s.wkDir} {
		if _, err := os.Stat(filepath.Join(dir, "results")); !os.IsNotExist(err) {
			t.Errorf("a results directory was made in %s: %v", dir, err)
		}
	}

	c := s3test.Client(endpoint)
	bucket, prefix := s3test.BucketOf(u), s3test.PrefixOf(u)
	keys := func() []string {
		out, err := c.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: &bucket, Prefix: &prefix})
		if err != nil {
			t.Fatal(err)
		}
		var ks []string
		for _, o := range out.Contents {
			ks = append(ks, strings.TrimPrefix(*o.Key, prefix))
		}
		return ks
	}
	if ks := keys(); len(ks) != 1 || ks[0] != sub.ID {
		t.Fatalf("bucket holds %v, want just the result", ks)
	}
	waitfor.True(t, 30*time.Second, func() bool { return len(keys()) == 0 })
	r = do(t, "GET", s.progress.URL+"/v1/jobs/"+sub.ID+"/result", sub.Token, nil)
	if r.StatusCode != http.StatusNotFound {
		t.Fatalf("after retention: %d", r.StatusCode)
	}
}

// TestResultRedirect: with ResultsRedirect, a download answers 307 to a URL
// the store signed, living no longer than the link that asked, and the
// URL fetches the result (Range too); HEAD and conditional requests are
// served by the progress service. A directory store refuses the setting.
func TestResultRedirect(t *testing.T) {
	fake := s3test.StartFake(t)
	s := newS3Stack(t, fake.Bucket(t), time.Hour, true)
	const n = 50_000
	want := blobBytes(n)
	sub := s.run(t, n)

	noFollow := &http.Client{Transport: http.DefaultClient.Transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(url, bearer string, hdr ...string) *http.Response {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	r := get(s.progress.URL+"/v1/jobs/"+sub.ID+"/result", sub.Token)
	loc := r.Header.Get("Location")
	if r.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(loc, fake.Endpoint+"/") ||
		!strings.Contains(loc, "X-Amz-Expires=900") || r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("job-token download: %d Location %q", r.StatusCode, loc)
	}
	if strings.Contains(loc, s3test.Secret) {
		t.Fatal("the signed URL carries the secret")
	}
	got, _ := io.ReadAll(get(loc, "").Body)
	if !bytes.Equal(got, want) {
		t.Fatalf("the signed URL fetched %d bytes, want %d", len(got), n)
	}
	part, _ := io.ReadAll(get(loc, "", "Range", "bytes=10-19").Body)
	if !bytes.Equal(part, want[10:20]) {
		t.Fatalf("the signed URL with a Range fetched %q", part)
	}

	// A 60 s link: the signed URL lives no longer.
	lr := do(t, "POST", s.progress.URL+"/v1/jobs/"+sub.ID+"/links", sub.Token, strings.NewReader(`{"expires_in":"60s"}`))
	link := decode[struct {
		URL string `json:"url"`
	}](t, lr)
	r = get(s.progress.URL+link.URL, "")
	loc = r.Header.Get("Location")
	if r.StatusCode != http.StatusTemporaryRedirect || !strings.Contains(loc, "X-Amz-Expires=") {
		t.Fatalf("link download: %d %q", r.StatusCode, loc)
	}
	if i := strings.Index(loc, "X-Amz-Expires="); i >= 0 {
		v := loc[i+len("X-Amz-Expires="):]
		v, _, _ = strings.Cut(v, "&")
		if v != "60" && v != "59" {
			t.Fatalf("a 60 s link redirected to a URL that lives %s s", v)
		}
	}

	// Conditional and HEAD requests are answered here.
	r = get(s.progress.URL+"/v1/jobs/"+sub.ID+"/result", sub.Token, "If-None-Match", `"sha256:nope"`)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("conditional download: %d", r.StatusCode)
	}

	if _, err := app.Progress(app.Config{DataDir: t.TempDir(), ResultsRedirect: true}.WithDefaults(), redistest.Client(t), nil); err == nil ||
		!strings.Contains(err.Error(), "object store") {
		t.Fatalf("redirects with a results directory: %v", err)
	}
}
