package main

import (
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/app/devstack"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/worker"
	"github.com/claimcheck/claimcheck/worker/builtin"
)

// TestJobsLogsCommand: `jobs logs` prints a job's log; with --follow it
// prints lines while the job runs and returns when it ends.
func TestJobsLogsCommand(t *testing.T) {
	release := make(chan struct{})
	talk := worker.Type{
		Name: "talk", Timeout: time.Minute, InputSchema: json.RawMessage(`{"type":"object"}`),
		Handle: func(ctx context.Context, t *worker.Task) error {
			t.Logf("hello from %s", t.ID())
			t.Logf("waiting")
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
			t.Logger().Info("released", "n", 1)
			return nil
		},
	}
	s := devstack.Start(t, redistest.Client(t), devstack.Options{Config: app.Config{Types: append(builtin.Types(), talk)}})
	ctx := context.Background()
	printed, err := run(t, ctx, "", "submit", "talk", "--url", s.URL, "--api-key", s.APIKey, "--input", `{}`)
	m := regexp.MustCompile(`(?m)^job\s+(\S+)\ntoken\s+(\S+)$`).FindStringSubmatch(printed)
	if err != nil || m == nil {
		t.Fatalf("submit: %v\n%s", err, printed)
	}
	id, tok := m[1], m[2]

	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		cmd := newRoot()
		cmd.SetArgs([]string{"jobs", "logs", id, "--url", s.URL, "--token", tok, "--follow"})
		cmd.SetOut(&out)
		done <- cmd.ExecuteContext(ctx)
	}()
	// Lines show up while the job still runs.
	waitfor.True(t, 10*time.Second, func() bool { return strings.Contains(out.String(), "waiting\n") })
	if got := out.String(); got != "hello from "+id+"\nwaiting\n" {
		t.Fatalf("followed so far:\n%q", got)
	}
	close(release)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("jobs logs --follow: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("jobs logs --follow did not return after the job ended")
	}
	if got := out.String(); got != "hello from "+id+"\nwaiting\nlevel=INFO msg=released n=1\n" {
		t.Fatalf("followed:\n%q", got)
	}

	// Without --follow: the log as it is, here with times.
	printed, err = run(t, ctx, "", "jobs", "logs", id, "--url", s.URL, "--token", tok, "--timestamps")
	if err != nil || !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z hello from `+id+"\n.*Z waiting\n.*Z level=INFO msg=released n=1\n$").MatchString(printed) {
		t.Fatalf("jobs logs --timestamps: %v\n%q", err, printed)
	}
	// Someone else's token is refused.
	if _, err := run(t, ctx, "", "jobs", "logs", id, "--url", s.URL, "--token", tok[:len(tok)-4]+"AAAA"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("bad token: %v", err)
	}
}

// TestRedteamJobOutputCannotDriveTheTerminal: a job's log lines, progress
// message and error are its program's output — shaped by whoever wrote the
// input — and the CLI prints them to a person's terminal, where an escape
// sequence could set the window title, write the clipboard (OSC 52), or
// hide and rewrite what was printed. The CLI shows control characters
// escaped; the text stays readable.
func TestRedteamJobOutputCannotDriveTheTerminal(t *testing.T) {
	const evil = "a\x1b]52;c;ZXZpbA==\x07b\x1b[2J\u009bc\x7fd\te\u202e"
	talk := worker.Type{
		Name: "evil", Timeout: time.Minute, InputSchema: json.RawMessage(`{"type":"object"}`),
		Handle: func(ctx context.Context, t *worker.Task) error {
			t.Logf("%s", evil)
			t.Progress(50, evil)
			return errors.New(evil + ": " + worker.ErrPermanent.Error())
		},
	}
	s := devstack.Start(t, redistest.Client(t), devstack.Options{Config: app.Config{Types: append(builtin.Types(), talk)}})
	ctx := context.Background()
	printed, err := run(t, ctx, "", "submit", "evil", "--url", s.URL, "--api-key", s.APIKey, "--input", `{}`, "--wait")
	m := regexp.MustCompile(`(?m)^job\s+(\S+)\ntoken\s+(\S+)$`).FindStringSubmatch(printed)
	if m == nil {
		t.Fatalf("submit: %v\n%s", err, printed)
	}
	id, tok := m[1], m[2]
	outs := []string{printed}
	if err != nil {
		outs = append(outs, err.Error())
	}
	for _, follow := range []string{"--follow=false", "--follow"} {
		got, err := run(t, ctx, "", "jobs", "logs", id, "--url", s.URL, "--token", tok, follow)
		outs = append(outs, got)
		if err != nil {
			outs = append(outs, err.Error())
		}
		if !strings.Contains(got, `a\x1b]52;c;ZXZpbA==\x07b\x1b[2J\u009bc\x7fd`+"\te"+`\u202e`) {
			t.Errorf("jobs logs %s: the line is not shown escaped: %q", follow, got)
		}
	}
	for _, o := range outs {
		if strings.ContainsAny(o, "\x1b\x07\x7f\u009b\u202e") {
			t.Errorf("raw control characters reach the terminal: %q", o)
		}
	}
}
