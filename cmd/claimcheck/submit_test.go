package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/app/devstack"
	"github.com/claimcheck/claimcheck/internal/redistest"
)

// devServer runs the all-in-one handler and a worker on the package's
// Redis and returns its URL and an API key.
func devServer(t *testing.T) (string, string) {
	t.Helper()
	s := devstack.Start(t, redistest.Client(t), devstack.Options{})
	return s.URL, s.APIKey
}

func TestSubmitAndJobsCommands(t *testing.T) {
	url, key := devServer(t)
	ctx := context.Background()
	t.Setenv("CLAIMCHECK_URL", url) // the environment works like the flags
	out := filepath.Join(t.TempDir(), "slept.json")

	printed, err := run(t, ctx, "", "submit", "sleep", "--api-key", key, "--input", `{"seconds":0.2,"steps":2}`, "--out", out)
	if err != nil {
		t.Fatalf("submit: %v\n%s", err, printed)
	}
	m := regexp.MustCompile(`(?m)^job\s+(\S+)\ntoken\s+(\S+)$`).FindStringSubmatch(printed)
	if m == nil || !strings.Contains(printed, "running    50% step 1/2") || !strings.Contains(printed, "succeeded") || !strings.Contains(printed, "saved ") {
		t.Fatalf("submit printed:\n%s", printed)
	}
	id, tok := m[1], m[2]
	if b, err := os.ReadFile(out); err != nil || !strings.Contains(string(b), `"slept_seconds":0.2`) {
		t.Fatalf("saved result %q %v", b, err)
	}

	if printed, err := run(t, ctx, "", "jobs", "list", "--api-key", key, "--state", "succeeded"); err != nil || !strings.Contains(printed, id) {
		t.Fatalf("jobs list: %v\n%s", err, printed)
	}
	if printed, err := run(t, ctx, "", "jobs", "get", id, "--token", tok); err != nil || !strings.Contains(printed, `"state": "succeeded"`) {
		t.Fatalf("jobs get: %v\n%s", err, printed)
	}

	printed, err = run(t, ctx, "", "submit", "sleep", "--api-key", key, "--input", `{"seconds":60,"steps":60}`)
	m = regexp.MustCompile(`(?m)^job\s+(\S+)\ntoken\s+(\S+)$`).FindStringSubmatch(printed)
	if err != nil || m == nil {
		t.Fatalf("submit without --wait: %v\n%s", err, printed)
	}
	if printed, err := run(t, ctx, "", "jobs", "cancel", m[1], "--token", m[2]); err != nil || !regexp.MustCompile(`^\S+ (queued|running|canceled)\n$`).MatchString(printed) {
		t.Fatalf("jobs cancel: %v\n%s", err, printed)
	}

	// Refused submissions fail the command, saying why.
	if _, err := run(t, ctx, "", "submit", "sleep", "--api-key", key, "--input", `{"seconds":-1}`, "--wait"); err == nil || !strings.Contains(err.Error(), "422") {
		t.Fatalf("invalid input: %v", err)
	}
	if _, err := run(t, ctx, "", "submit", "nope", "--api-key", key); err == nil || !strings.Contains(err.Error(), "Unknown job type") {
		t.Fatalf("unknown type: %v", err)
	}
}

// TestSubmitWebhook: --webhook and --webhook-events reach the api, which
// refuses a loopback URL unless its operator allows private addresses, and
// the command prints the subscribed events (never the URL).
func TestSubmitWebhook(t *testing.T) {
	ctx := context.Background()
	url, key := devServer(t)
	_, err := run(t, ctx, "", "submit", "sleep", "--url", url, "--api-key", key, "--webhook", "http://127.0.0.1:9/hook")
	if err == nil || !strings.Contains(err.Error(), "422") || !strings.Contains(err.Error(), "webhook.url: is a loopback address") ||
		!strings.Contains(err.Error(), "--webhook-allow-private") {
		t.Fatalf("loopback webhook: %v", err)
	}
	if _, err := run(t, ctx, "", "submit", "sleep", "--url", url, "--api-key", key, "--webhook-events", "log"); err == nil ||
		!strings.Contains(err.Error(), "--webhook-events needs --webhook") {
		t.Fatalf("events without a URL: %v", err)
	}

	s := devstack.Start(t, redistest.Client(t), devstack.Options{Config: app.Config{WebhookAllowPrivate: true}})
	printed, err := run(t, ctx, "", "submit", "sleep", "--url", s.URL, "--api-key", s.APIKey,
		"--webhook", "http://127.0.0.1:9/hook-s3cr3t", "--webhook-events", "completed,started")
	if err != nil || !strings.Contains(printed, "webhook started,completed\n") || strings.Contains(printed, "s3cr3t") {
		t.Fatalf("allowed webhook: %v\n%s", err, printed)
	}
}
