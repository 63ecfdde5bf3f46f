// Package s3test gives tests real S3-protocol servers to keep results in:
// an in-process one (gofakes3 on a loopback httptest server, always there)
// and, when the `weed` binary of SeaweedFS is on PATH, a real object store
// run as a child process on loopback. Each test gets a bucket of its own
// and an s3:// URL for blob.Open.
//
// Credentials reach the SDK the way they do in production, through the
// AWS_* environment variables, which SetCredentials sets once per test
// process to throwaway values (Secret, so tests can look for it in logs
// and errors).
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// AccessKey and Secret are the credentials SetCredentials puts in the
// environment. Secret must never show in a log or an error.
const (
	AccessKey = "claimcheck-test-access"
	Secret    = "claimcheck-test-SECRET-d0n0tl0g"
)

var credOnce sync.Once

// SetCredentials puts AccessKey and Secret in the process's environment
// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), for every test of the
// package; it does not use t.Setenv, which would forbid parallel tests.
func SetCredentials() {
	credOnce.Do(func() {
		os.Setenv("AWS_ACCESS_KEY_ID", AccessKey)
		os.Setenv("AWS_SECRET_ACCESS_KEY", Secret)
		os.Unsetenv("AWS_SESSION_TOKEN")
		os.Unsetenv("AWS_PROFILE")
		// No shared config or credentials file of the machine's user.
		os.Setenv("AWS_CONFIG_FILE", os.DevNull)
		os.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
		os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	})
}

// Fake is an in-process S3 server.
type Fake struct {
	// Endpoint is its base URL (http://127.0.0.1:port).
	Endpoint string
	backend  *s3mem.Backend
}

// StartFake starts an in-process S3 server (gofakes3, memory backend) for
// tb, closed at its cleanup.
func StartFake(tb testing.TB) *Fake {
	tb.Helper()
	SetCredentials()
	be := s3mem.New()
	srv := httptest.NewServer(gofakes3.New(be, gofakes3.WithLogger(gofakes3.DiscardLog())).Server())
	tb.Cleanup(srv.Close)
	return &Fake{Endpoint: srv.URL, backend: be}
}

// CreateBucket creates the bucket name, for a test that starts without
// it.
func (f *Fake) CreateBucket(tb testing.TB, name string) {
	tb.Helper()
	if err := f.backend.CreateBucket(name); err != nil {
		tb.Fatalf("create bucket: %v", err)
	}
}

// Bucket creates a new bucket and returns its results URL.
func (f *Fake) Bucket(tb testing.TB) string {
	tb.Helper()
	name := bucketName()
	if err := f.backend.CreateBucket(name); err != nil {
		tb.Fatalf("create bucket: %v", err)
	}
	return URL(name, f.Endpoint)
}

// URL is the results URL of bucket at endpoint.
func URL(bucket, endpoint string) string {
	return "s3://" + bucket + "?endpoint=" + url.QueryEscape(endpoint) + "&region=us-east-1"
}

func bucketName() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "cc-" + hex.EncodeToString(b[:])
}

// Weed is a SeaweedFS server (master, volume, filer and S3 gateway in one
// process) on loopback.
type Weed struct {
	// Endpoint is its S3 gateway's base URL.
	Endpoint string
	once     sync.Once
	bucket   string
	err      error
}

var (
	weedOnce sync.Once
	weed     *Weed
	weedErr  error
	weedStop func()
)

// StartWeed returns the package's SeaweedFS server, starting it at the
// first call, or skips tb when `weed` is not on PATH. The server lives
// until StopWeed (call it from TestMain).
func StartWeed(tb testing.TB) *Weed {
	tb.Helper()
	bin, err := exec.LookPath("weed")
	if err != nil {
		tb.Skip("weed (SeaweedFS) not on PATH")
	}
	SetCredentials()
	weedOnce.Do(func() { weed, weedStop, weedErr = startWeed(bin) })
	if weedErr != nil {
		tb.Fatalf("start SeaweedFS: %v", weedErr)
	}
	return weed
}

// StopWeed stops the package's SeaweedFS server, if one was started.
func StopWeed() {
	if weedStop != nil {
		weedStop()
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startWeed runs `weed server -s3` bound to loopback, with a config that
// gives AccessKey/Secret admin rights, and waits until its S3 gateway
// answers.
func startWeed(bin string) (*Weed, func(), error) {
	dir, err := os.MkdirTemp("", "s3test-weed-")
	if err != nil {
		return nil, nil, err
	}
	ports := make([]int, 6)
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return nil, nil, err
		}
	}
	s3cfg := fmt.Sprintf(`{"identities":[{"name":"test","credentials":[{"accessKey":%q,"secretKey":%q}],"actions":["Admin","Read","Write","List","Tagging"]}]}`, AccessKey, Secret)
	cfgPath := filepath.Join(dir, "s3.json")
	if err := os.WriteFile(cfgPath, []byte(s3cfg), 0o600); err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(bin, "server",
		"-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-dir="+dir,
		"-master.port="+strconv.Itoa(ports[0]), "-master.port.grpc="+strconv.Itoa(ports[1]),
		"-volume.port="+strconv.Itoa(ports[2]), "-volume.port.grpc="+strconv.Itoa(ports[3]),
		"-filer.port="+strconv.Itoa(ports[4]), "-filer.port.grpc="+strconv.Itoa(ports[4]+10000),
		"-volume.max=100", "-master.volumeSizeLimitMB=64",
		"-s3", "-s3.port="+strconv.Itoa(ports[5]), "-s3.config="+cfgPath)
	log, err := os.Create(filepath.Join(dir, "weed.log"))
	if err != nil {
		return nil, nil, err
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	stop := func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		log.Close()
		os.RemoveAll(dir)
	}
	w := &Weed{Endpoint: "http://127.0.0.1:" + strconv.Itoa(ports[5])}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, w.Endpoint+"/status", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				return w, stop, nil
			}
		}
		select {
		case <-ctx.Done():
			stop()
			return nil, nil, fmt.Errorf("its S3 gateway did not answer within 60s")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Bucket returns a results URL of its own in w: a fresh prefix in the
// package's one SeaweedFS bucket (each SeaweedFS bucket takes volumes of
// its own, and a test server has few). SeaweedFS answers before its
// volumes are up, so the first call tries, for up to a minute, until an
// object can be written.
func (w *Weed) Bucket(tb testing.TB) string {
	tb.Helper()
	w.once.Do(func() { w.bucket, w.err = w.createBucket() })
	if w.err != nil {
		tb.Fatalf("SeaweedFS bucket not usable: %v", w.err)
	}
	return URL(w.bucket, w.Endpoint) + "&prefix=" + bucketName() + "/"
}

func (w *Weed) createBucket() (string, error) {
	name := bucketName()
	c := Client(w.Endpoint)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var err error
	for ctx.Err() == nil {
		if _, err = c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &name}); err == nil || isOwned(err) {
			key := ".s3test-ready"
			if _, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: &name, Key: &key, Body: strings.NewReader("x")}); err == nil {
				_, _ = c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &name, Key: &key})
				return name, nil
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	return "", err
}

func isOwned(err error) bool {
	var owned *types.BucketAlreadyOwnedByYou
	return errors.As(err, &owned)
}

// Client is an S3 client of endpoint with the test credentials, for tests
// that look at a bucket behind the store's back (multipart uploads left,
// objects' metadata).
func Client(endpoint string) *s3.Client {
	SetCredentials()
	return s3.New(s3.Options{
		Region:                     "us-east-1",
		BaseEndpoint:               aws.String(endpoint),
		UsePathStyle:               true,
		Credentials:                credentials.NewStaticCredentialsProvider(AccessKey, Secret, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

// BucketOf is the bucket name of a results URL made by URL.
func BucketOf(resultsURL string) string {
	u, err := url.Parse(resultsURL)
	if err != nil {
		return ""
	}
	return u.Host
}

// EndpointOf is the endpoint of a results URL made by URL.
func EndpointOf(resultsURL string) string {
	u, err := url.Parse(resultsURL)
	if err != nil {
		return ""
	}
	return u.Query().Get("endpoint")
}

// PrefixOf is the key prefix of a results URL ("" when it has none).
func PrefixOf(resultsURL string) string {
	u, err := url.Parse(resultsURL)
	if err != nil {
		return ""
	}
	return u.Query().Get("prefix")
}
