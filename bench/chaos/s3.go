package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// S3Server is the object store the scale scenario keeps results in: a
// SeaweedFS server (weed server -s3) when weed is on PATH, else an
// S3-protocol server inside the harness (gofakes3, in memory) that the
// services reach over HTTP like any other.
type S3Server struct {
	// ResultsURL is the --results-url of the bucket.
	ResultsURL string
	// Kind is "seaweedfs" or "gofakes3".
	Kind  string
	close func()
}

const s3Bucket = "claimcheck-results"

// StartS3 starts the store with one bucket and waits until it answers.
func StartS3(ctx context.Context, dir string) (*S3Server, error) {
	if weed, err := exec.LookPath("weed"); err == nil {
		return startWeed(ctx, weed, dir)
	}
	backend := s3mem.New()
	if err := backend.CreateBucket(s3Bucket); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: gofakes3.New(backend).Server(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return &S3Server{ResultsURL: s3URL(l.Addr().String()), Kind: "gofakes3", close: func() { _ = srv.Close() }}, nil
}

func s3URL(hostPort string) string {
	return "s3://" + s3Bucket + "?endpoint=http://" + hostPort + "&region=us-east-1&use_path_style=true"
}

// startWeed runs SeaweedFS's all-in-one server with its S3 gateway and
// makes the bucket through the S3 API (weed accepts any credentials when
// none are configured).
func startWeed(ctx context.Context, weed, dir string) (*S3Server, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ports := make([]int, 5)
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	p := &Proc{Name: "seaweedfs", Path: weed, Log: filepath.Join(dir, "weed.log"),
		Args: []string{"server", "-dir", dir, "-ip", "127.0.0.1", "-ip.bind", "127.0.0.1",
			"-master.port", strconv.Itoa(ports[0]), "-volume.port", strconv.Itoa(ports[1]),
			"-filer.port", strconv.Itoa(ports[2]), "-s3", "-s3.port", strconv.Itoa(ports[3]),
			"-master.port.grpc", strconv.Itoa(ports[4] + 10000)}}
	if err := p.Start(); err != nil {
		return nil, err
	}
	endpoint := "http://" + addr(ports[3])
	err := waitFor(ctx, 60*time.Second, "seaweedfs s3 bucket", func() bool {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut, endpoint+"/"+s3Bucket, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusConflict
	})
	if err != nil {
		p.Kill()
		return nil, errors.Join(err, fmt.Errorf("see %s", p.Log))
	}
	return &S3Server{ResultsURL: s3URL(addr(ports[3])), Kind: "seaweedfs", close: p.Kill}, nil
}

// Env is what the services need to sign their requests: the store checks
// no signature, but the SDK wants credentials to sign with.
func (s *S3Server) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=claimcheck", "AWS_SECRET_ACCESS_KEY=claimcheck-not-a-secret", "AWS_REGION=us-east-1"}
}

// Close stops the store.
func (s *S3Server) Close() { s.close() }
