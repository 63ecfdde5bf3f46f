package worker_test

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/claimcheck/claimcheck/internal/s3test"
	"github.com/claimcheck/claimcheck/internal/testutil/syncbuf"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/worker"
)

// TestMissingBucketPausesWorker: a worker whose results bucket does not
// exist (a typo, a bucket not made yet, credentials without rights) starts
// paused, as one whose directory is unwritable: the probe object cannot be
// written. /readyz says why without naming the endpoint or the bucket, no
// log line carries the store's credentials, and once the bucket exists the
// queued jobs succeed with their results in it.
func TestMissingBucketPausesWorker(t *testing.T) {
	h := newHarness(t)
	fake := s3test.StartFake(t)
	url := s3test.URL("results-later", fake.Endpoint)
	var logs syncbuf.Buffer
	w := h.startWorker(t, h.s3WorkerConfig(url, &logs))
	waitfor.True(t, 10*time.Second, func() bool { return w.Ready() != nil })
	code, body := h.readyz(t, w)
	host := strings.TrimPrefix(fake.Endpoint, "http://")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "results-store-writable") ||
		strings.Contains(body, host) || strings.Contains(body, "results-later") {
		t.Fatalf("paused worker: readyz %d %s", code, body)
	}
	ids := h.submitMany(t, 3)
	h.assertStaysQueued(t, w, ids)

	fake.CreateBucket(t, "results-later")
	h.assertAllSucceed(t, ids)
	if code, body := h.readyz(t, w); code != http.StatusOK {
		t.Fatalf("resumed worker: readyz %d %s", code, body)
	}
	c := s3test.Client(fake.Endpoint)
	for _, id := range ids {
		out, err := c.GetObject(t.Context(), s3GetInput("results-later", id))
		if err != nil {
			t.Fatalf("result %s not in the bucket: %v", id, err)
		}
		out.Body.Close()
	}
	for _, secret := range []string{s3test.Secret, s3test.AccessKey} {
		if strings.Contains(logs.String(), secret) {
			t.Fatalf("the worker's log carries a credential:\n%s", logs.String())
		}
	}
	if strings.Contains(logs.String(), fake.Endpoint) {
		t.Errorf("the log repeats the results URL's query:\n%s", logs.String())
	}
}

func s3GetInput(bucket, key string) *s3.GetObjectInput {
	return &s3.GetObjectInput{Bucket: &bucket, Key: &key}
}

// s3WorkerConfig is storeWorker's configuration with the results in the
// bucket of url.
func (h *harness) s3WorkerConfig(url string, logs io.Writer) worker.Config {
	return worker.Config{
		ResultsURL:               url,
		ResultsCheckInterval:     10 * time.Millisecond,
		Concurrency:              2,
		DelayedTaskCheckInterval: 50 * time.Millisecond,
		RetryDelay:               func(int, error) time.Duration { return 10 * time.Millisecond },
		Logger:                   slog.New(slog.NewJSONHandler(logs, nil)),
	}
}
