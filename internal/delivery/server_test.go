package delivery_test

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/delivery"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/internal/webhook"
)

// rawReceiver listens on loopback and answers every connection with
// answer, raw bytes that need not be HTTP, after reading the request's
// first line.
func rawReceiver(t *testing.T, answer string) string {
	t.Helper()
	return rawReceiverFunc(t, func(c net.Conn) { _, _ = c.Write([]byte(answer)) })
}

// rawReceiverFunc is rawReceiver answering with answer(conn).
func rawReceiverFunc(t *testing.T, answer func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = bufio.NewReader(c).ReadString('\n')
				answer(c)
			}()
		}
	}()
	return "http://" + ln.Addr().String() + "/hook/s3cr3t-path?token=s3cr3t-query"
}

// TestDeliveryErrorsNeverQuoteTheReceiver: a receiver (or any service a
// submitter points the webhook at) that answers something other than HTTP
// sees none of its bytes in the attempt's error, which every holder of the
// job's token reads at GET /v1/jobs/{id}/deliveries: the deliverer must
// not be a banner grabber that reports what it found back to the
// submitter.
func TestDeliveryErrorsNeverQuoteTheReceiver(t *testing.T) {
	const banner = "SSH-2.0-OpenSSH_9.6p1 internal-banner-0xfeed"
	for _, tc := range []struct{ name, answer string }{
		{"no space", "BANNER-internal-banner-0xfeed\r\n\r\n"},
		{"bad version", banner + "\r\n\r\n"},
		{"bad status", "HTTP/1.1 internal-banner-0xfeed OK\r\n\r\n"},
		{"bad header", "HTTP/1.1 200 OK\r\ninternal-banner-0xfeed\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := firstAttempt(t, rawReceiver(t, tc.answer), nil)
			if d.Outcome != jobs.DeliveryRetrying || d.StatusCode != 0 || d.Error == "" {
				t.Fatalf("attempt %+v, want a retrying one with an error", d)
			}
			for _, leak := range []string{"internal-banner", "0xfeed", "BANNER", "SSH-2.0", "s3cr3t", "127.0.0.1:"} {
				if strings.Contains(d.Error, leak) {
					t.Fatalf("attempt error %q quotes %q", d.Error, leak)
				}
			}
		})
	}
}

// TestDeliveryDoesNotWaitForTheBody: a receiver that answers its status
// at once and then trickles (or never ends) its body holds the delivery
// slot for no longer than BodyGrace: the status is the answer, and every
// receiver's slot is shared by every other job's events. The timeouts are
// an hour here, so only the body grace can end the attempt.
func TestDeliveryDoesNotWaitForTheBody(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	target := rawReceiverFunc(t, func(c net.Conn) {
		_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nx"))
		<-release
	})
	d := firstAttempt(t, target, func(c *delivery.Config) {
		c.ConnectTimeout, c.ResponseTimeout = time.Hour, time.Hour
		c.BodyGrace = 50 * time.Millisecond
	})
	if d.Outcome != jobs.DeliveryDelivered || d.StatusCode != 200 {
		t.Fatalf("attempt %+v, want delivered 200 while the body still trickles", d)
	}
}

// firstAttempt records a job whose webhook (started events) leads to
// target, runs a deliverer tuned by tune (nil: defaults, one slot, retries
// an hour away) and returns the first attempt it records.
func firstAttempt(t *testing.T, target string, tune func(*delivery.Config)) jobs.Delivery {
	t.Helper()
	rdb := redistest.Client(t)
	ctx := context.Background()
	store := jobs.NewStore(rdb, nil)
	spec := &webhook.Spec{URL: target, Events: []string{webhook.EventStarted}}
	if _, err := store.Create(ctx, jobs.NewJob{ID: "j1", Type: "t", Owner: "ann", Queue: "default",
		Timeout: time.Minute, TTL: time.Hour, Webhook: spec}); err != nil {
		t.Fatal(err)
	}
	cfg := delivery.Config{
		Concurrency: 1, ProgressURL: "http://progress.invalid",
		Sign:     func([]byte) ([]byte, error) { return make([]byte, 64), nil },
		MintLink: func(string, int64, time.Time) (string, time.Time, error) { return "", time.Time{}, nil },
		Guard:    &webhook.Guard{AllowPrivate: true},
		// Long: the tests read the first attempt only.
		RetryDelay:        func(int) time.Duration { return time.Hour },
		TaskCheckInterval: 10 * time.Millisecond,
	}
	if tune != nil {
		tune(&cfg)
	}
	srv, err := delivery.New(cfg, rdb)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	delivery.NewEvents(rdb, nil).Started(ctx, "j1", 1, spec)
	var ds []jobs.Delivery
	waitfor.True(t, 10*time.Second, func() bool {
		ds, err = store.Deliveries(ctx, "j1")
		return err == nil && len(ds) > 0
	})
	return ds[0]
}
