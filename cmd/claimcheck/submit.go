package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/claimcheck/claimcheck/client"
	"github.com/claimcheck/claimcheck/internal/config"
)

// remote holds the flags of the commands that talk to a running claimcheck
// over HTTP (through the SDK) rather than to Redis.
type remote struct {
	url, progressURL, apiKey string
}

func (r *remote) bind(fs *pflag.FlagSet) {
	fs.StringVar(&r.url, "url", "http://127.0.0.1:8080", "the api's base URL")
	fs.StringVar(&r.progressURL, "progress-url", "", "the progress service's base URL (default: the api's)")
	fs.StringVar(&r.apiKey, "api-key", "", "API key (cck_…) or session (ccs_…)")
}

func (r *remote) client(cmd *cobra.Command) (*client.Client, error) {
	if err := config.ApplyEnv(cmd.Flags()); err != nil {
		return nil, err
	}
	opts := []client.Option{client.WithCredential(r.apiKey)}
	if r.progressURL != "" {
		opts = append(opts, client.WithProgressURL(r.progressURL))
	}
	return client.New(r.url, opts...), nil
}

func newSubmit() *cobra.Command {
	var r remote
	var input, out, webhookURL string
	var webhookEvents []string
	var wait bool
	cmd := &cobra.Command{
		Use:   "submit TYPE",
		Short: "Submit a job; with --wait follow it to the end, with --out save its result",
		Long: `submit sends a job to a running claimcheck and prints its id and job token.
With --wait it follows the job (a progress bar on a terminal, plain lines
otherwise) and fails if the job does; --out FILE also downloads the result.`,
		Example: `  claimcheck submit primes --input '{"n":10000000}' --wait
  claimcheck submit mandelbrot --input '{"width":1280,"height":960}' --out fractal.png
  claimcheck submit primes --input '{"n":1000}' --webhook https://hooks.example.org/cc --webhook-events started,completed`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := r.client(cmd)
			if err != nil {
				return err
			}
			if !json.Valid([]byte(input)) {
				return fmt.Errorf("--input is not JSON: %s", input)
			}
			req := client.SubmitRequest{Type: args[0], Input: json.RawMessage(input)}
			switch {
			case webhookURL != "":
				req.Webhook = &client.Webhook{URL: webhookURL, Events: webhookEvents}
			case len(webhookEvents) > 0:
				return errors.New("--webhook-events needs --webhook URL")
			}
			ctx := cmd.Context()
			sub, err := c.Submit(ctx, req)
			if err != nil {
				return err
			}
			stdout := cmd.OutOrStdout()
			fmt.Fprintf(stdout, "job   %s\ntoken %s\n", sub.ID, sub.Token)
			if sub.Webhook != nil {
				fmt.Fprintf(stdout, "webhook %s\n", strings.Join(sub.Webhook.Events, ","))
			}
			if !wait && out == "" {
				return nil
			}
			show := progressLines(stdout)
			if f, ok := stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
				show = progressBar(f)
			}
			final, err := c.Wait(ctx, sub.ID, sub.Token, show)
			if err != nil {
				return err
			}
			show(final)
			if final.State != "succeeded" {
				msg := final.State
				if final.Error != nil {
					msg += ": " + termSafe(*final.Error)
				}
				return errors.New("job " + msg)
			}
			if out == "" {
				return nil
			}
			f, err := os.Create(out)
			if err != nil {
				return err
			}
			n, err := c.Download(ctx, sub.ID, sub.Token, f)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "saved %d bytes to %s\n", n, out)
			return nil
		},
	}
	r.bind(cmd.Flags())
	cmd.Flags().StringVar(&input, "input", "{}", "the job's input, JSON")
	cmd.Flags().BoolVar(&wait, "wait", false, "follow the job until it ends")
	cmd.Flags().StringVar(&out, "out", "", "download the result to this file (implies --wait)")
	cmd.Flags().StringVar(&webhookURL, "webhook", "", "POST the job's events to this http(s) `URL` (it must lead to a public address unless the server's operator allows private ones)")
	cmd.Flags().StringSliceVar(&webhookEvents, "webhook-events", nil, "the `events` the webhook gets, comma-separated: started, progress, log, completed (default completed)")
	config.AnnotateEnv(cmd.Flags())
	return cmd
}

// progressLines prints a line whenever the state or whole percent changes:
// for logs and pipes.
func progressLines(w io.Writer) func(*client.Job) {
	last := ""
	return func(j *client.Job) {
		line := fmt.Sprintf("%-9s %3.0f%% %s", j.State, j.Progress.Percent, termSafe(j.Progress.Message))
		if line != last {
			fmt.Fprintln(w, strings.TrimSpace(line))
			last = line
		}
	}
}

// progressBar draws a terminal progress bar.
func progressBar(f *os.File) func(*client.Job) {
	bar := progressbar.NewOptions(100, progressbar.OptionSetWriter(f), progressbar.OptionShowDescriptionAtLineEnd(),
		progressbar.OptionSetWidth(40), progressbar.OptionThrottle(50*time.Millisecond), progressbar.OptionClearOnFinish())
	return func(j *client.Job) {
		bar.Describe(j.State + " " + termSafe(j.Progress.Message))
		_ = bar.Set(int(j.Progress.Percent))
		if j.Final() {
			_ = bar.Finish()
			fmt.Fprintln(f, j.State)
		}
	}
}

func newJobs() *cobra.Command {
	var r remote
	cmd := &cobra.Command{Use: "jobs", Short: "List your jobs, or get, cancel, read the log of or download the receipt of one with its job token"}
	r.bind(cmd.PersistentFlags())
	config.AnnotateEnv(cmd.PersistentFlags())
	var state string
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List your jobs, newest first (needs --api-key)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := r.client(cmd)
			if err != nil {
				return err
			}
			page, err := c.List(cmd.Context(), client.ListOptions{State: state, Limit: limit})
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTYPE\tSTATE\tPROGRESS\tCREATED")
			for _, j := range page.Jobs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%.0f%%\t%s\n", j.ID, j.Type, j.State, j.Progress.Percent, j.CreatedAt.Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVar(&state, "state", "", "only jobs in this state")
	list.Flags().IntVar(&limit, "limit", 20, "at most this many")
	var token string
	get := &cobra.Command{
		Use:   "get ID",
		Short: "Print a job's record (needs --token)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := r.client(cmd)
			if err != nil {
				return err
			}
			j, err := c.Get(cmd.Context(), args[0], token)
			if err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(j)
		},
	}
	cancel := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a job (needs --token)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := r.client(cmd)
			if err != nil {
				return err
			}
			j, err := c.Cancel(cmd.Context(), args[0], token)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", j.ID, j.State)
			return nil
		},
	}
	var follow, timestamps bool
	logs := &cobra.Command{
		Use:   "logs ID",
		Short: "Print a job's log (needs --token); with --follow, the lines as the job writes them, until it ends",
		Long: `logs prints the lines the job wrote to its log (a Go handler's Task.Logf, an
exec type's stderr). A job's log keeps its newest 10,000 lines and 1 MiB; a
"[… N earlier lines dropped]" line says where lines are missing. Control
characters are shown escaped (ESC as \x1b), so a log cannot drive your
terminal. With
--follow it keeps printing new lines until the job ends, and fails unless
the job succeeded.`,
		Example: `  claimcheck jobs logs 01a2… --token eyJ… --follow`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := r.client(cmd)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			print := func(l client.LogLine) {
				if timestamps && !l.Time.IsZero() && l.Dropped == 0 {
					fmt.Fprintf(out, "%s %s\n", l.Time.UTC().Format("2006-01-02T15:04:05.000Z07:00"), termSafe(l.Line))
					return
				}
				fmt.Fprintln(out, termSafe(l.Line))
			}
			if !follow {
				p, err := c.Logs(cmd.Context(), args[0], token, 0)
				if err != nil {
					return err
				}
				for _, l := range p.Lines {
					print(l)
				}
				return nil
			}
			j, err := c.FollowLogs(cmd.Context(), args[0], token, print, nil)
			if err != nil {
				return err
			}
			if j.State != "succeeded" {
				msg := ""
				if j.Error != nil {
					msg = ": " + termSafe(*j.Error)
				}
				return fmt.Errorf("job %s %s%s", j.ID, j.State, msg)
			}
			return nil
		},
	}
	logs.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing lines as the job writes them, until it ends")
	logs.Flags().BoolVar(&timestamps, "timestamps", false, "start each line with the time it was written (RFC 3339, UTC)")
	receipt := newJobsReceipt(&r, &token)
	for _, sub := range []*cobra.Command{get, cancel, logs, receipt} {
		sub.Flags().StringVar(&token, "token", "", "the job's token")
		_ = sub.MarkFlagRequired("token")
		config.AnnotateEnv(sub.Flags())
	}
	cmd.AddCommand(list, get, cancel, logs, receipt)
	return cmd
}
