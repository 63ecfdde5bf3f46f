package main

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/claimcheck/claimcheck/worker"
)

// TestWorkerReadsTheSDKFlags: `claimcheck worker` and every worker.Main
// program read the same flags (both bind worker.BindFlags), so a flag added
// to one cannot be missing from the other.
func TestWorkerReadsTheSDKFlags(t *testing.T) {
	sdk := pflag.NewFlagSet("sdk", pflag.ContinueOnError)
	worker.BindFlags(sdk)
	var want, got []string
	sdk.VisitAll(func(f *pflag.Flag) { want = append(want, f.Name+"="+f.DefValue) })
	newWorker().Flags().VisitAll(func(f *pflag.Flag) { got = append(got, f.Name+"="+f.DefValue) })
	if !slices.Equal(got, want) {
		t.Errorf("claimcheck worker flags\n %v\nworker.BindFlags flags\n %v", got, want)
	}
	for _, name := range []string{"pools", "types", "redis-url", "metrics-addr", "max-running-jobs"} {
		if sdk.Lookup(name) == nil {
			t.Errorf("no --%s", name)
		}
	}
	out, err := run(t, context.Background(), "", "worker", "--help")
	if err != nil || !strings.Contains(out, "--pools") || !strings.Contains(out, "[$CLAIMCHECK_TYPES]") {
		t.Errorf("worker --help: %v\n%s", err, out)
	}
}

// TestTypesFileRefusedAtStart: a --types file that does not load stops dev
// and worker before they serve, naming the flag and the file.
func TestTypesFileRefusedAtStart(t *testing.T) {
	t.Setenv("REDIS_URL", "")
	for _, args := range [][]string{{"dev", "--addr", "127.0.0.1:0"}, {"worker", "--redis-url", "redis://127.0.0.1:1/0"}} {
		ended, cancel := context.WithCancel(context.Background())
		cancel() // a command that wrongly starts ends at once
		_, err := run(t, ended, "", append(args, "--data-dir", t.TempDir(), "--log-level", "error", "--types", "/nonexistent/types.yaml")...)
		if err == nil || !strings.Contains(err.Error(), "--types /nonexistent/types.yaml") {
			t.Errorf("%v: %v", args, err)
		}
	}
}

// TestWebhookAllowPrivateFlag: api, dev and worker each take
// --webhook-allow-private (CLAIMCHECK_WEBHOOK_ALLOW_PRIVATE), off by
// default: the api checks webhook URLs at submit, the worker at connect
// time, and an operator must be able to set both the same way.
func TestWebhookAllowPrivateFlag(t *testing.T) {
	for name, cmd := range map[string]*cobra.Command{"api": newAPI(), "dev": newDev(), "worker": newWorker()} {
		f := cmd.Flags().Lookup("webhook-allow-private")
		if f == nil || f.DefValue != "false" || !strings.Contains(f.Usage, "[$CLAIMCHECK_WEBHOOK_ALLOW_PRIVATE]") {
			t.Errorf("%s: --webhook-allow-private = %+v", name, f)
		}
	}
}
