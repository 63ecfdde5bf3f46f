package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/claimcheck/claimcheck/internal/config"
	"github.com/claimcheck/claimcheck/tokens"
)

// newJobsReceipt is `claimcheck jobs receipt ID`: it downloads a succeeded
// job's signed receipt with the job token (r and token are the jobs
// command's flags).
func newJobsReceipt(r *remote, token *string) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "receipt ID",
		Short: "Download a succeeded job's signed result receipt (needs --token)",
		Long: `receipt downloads the job's result receipt: the worker fleet's signed
statement (a JWT, typ receipt+jwt) of the job's type and spec digest, the
SHA-256 of its input, its result's SHA-256, size and content type, and when
and on which worker it ran. Keep it: it verifies offline, with
"claimcheck receipt verify" or any JOSE library, long after the job's
record and result have expired.`,
		Example: `  claimcheck jobs receipt 01a2… --token eyJ… --out job.receipt
  claimcheck receipt verify job.receipt --jwks http://127.0.0.1:8080/.well-known/jwks.json --result result.json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := r.client(cmd)
			if err != nil {
				return err
			}
			receipt, err := c.Receipt(cmd.Context(), args[0], *token)
			if err != nil {
				return err
			}
			if out == "" {
				fmt.Fprintln(cmd.OutOrStdout(), receipt)
				return nil
			}
			if err := os.WriteFile(out, []byte(receipt+"\n"), 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "saved the receipt of job %s to %s\n", args[0], out)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "write the receipt to this file instead of standard output")
	return cmd
}

// maxReceiptFile bounds what `receipt verify` reads as a receipt: a token
// over tokens.MaxTokenSize is refused anyway.
const maxReceiptFile = 16 << 10

func newReceipt() *cobra.Command {
	cmd := &cobra.Command{Use: "receipt", Short: "Verify result receipts offline"}
	var jwks, result, job string
	verify := &cobra.Command{
		Use:   "verify FILE",
		Short: "Verify a result receipt against the api's JWKS, and with --result the result file",
		Long: `verify checks a result receipt (from "claimcheck jobs receipt") offline: its
signature against the receipt keys (kind "receipt", and only those) of the
api's JWKS, given as a URL or a saved file, its typ, issuer, audience and
expiry; then it prints what the receipt states. With --result FILE it also
checks that the file's SHA-256 and size are the ones the receipt states,
and with --job ID that the receipt is that job's: a receipt verifies for
the job it names, whichever job its holder says it is for. Any mismatch is an error and a non-zero exit.`,
		Example: `  claimcheck receipt verify job.receipt --jwks http://127.0.0.1:8080/.well-known/jwks.json
  claimcheck receipt verify job.receipt --jwks jwks.json --result fractal.png`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := config.ApplyEnv(cmd.Flags()); err != nil {
				return err
			}
			receipt, err := readReceipt(args[0])
			if err != nil {
				return err
			}
			keys, err := receiptKeys(cmd.Context(), jwks)
			if err != nil {
				return err
			}
			c, err := (&tokens.ReceiptVerifier{Keys: keys}).VerifyReceipt(receipt)
			if err != nil {
				return fmt.Errorf("receipt %s does not verify: %w", args[0], err)
			}
			// Before anything is printed: a receipt of another job
			// verifies, and only the exit code tells a script it is not
			// the one it asked about.
			if job != "" && c.Job != job {
				return fmt.Errorf("%w: receipt %s is job %s's, not %s's", errReceiptOtherJob, args[0], termSafe(c.Job), termSafe(job))
			}
			printReceipt(cmd.OutOrStdout(), c)
			if result == "" {
				return nil
			}
			if err := checkResult(result, c); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "result file %s matches the receipt\n", result)
			return nil
		},
	}
	verify.Flags().StringVar(&jwks, "jwks", "", "the api's JWKS: its URL (…/.well-known/jwks.json) or a saved copy of it")
	_ = verify.MarkFlagRequired("jwks")
	verify.Flags().StringVar(&result, "result", "", "also check that this file is the result the receipt states (SHA-256 and size)")
	verify.Flags().StringVar(&job, "job", "", "also check that the receipt is this job's (its id)")
	config.AnnotateEnv(verify.Flags())
	cmd.AddCommand(verify)
	return cmd
}

func readReceipt(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxReceiptFile+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxReceiptFile {
		return "", fmt.Errorf("%s: over %d bytes: not a receipt", path, maxReceiptFile)
	}
	return strings.TrimSpace(string(b)), nil
}

// receiptKeys reads the receipt keys of the JWKS at src, a URL or a file.
func receiptKeys(ctx context.Context, src string) (*tokens.KeySet, error) {
	var doc []byte
	if strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://") {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
		if err != nil {
			return nil, fmt.Errorf("--jwks: %w", err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, fmt.Errorf("--jwks: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("--jwks %s: %s", src, resp.Status)
		}
		// ParseReceiptJWKS refuses a document over its own bound.
		if doc, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20)); err != nil {
			return nil, fmt.Errorf("--jwks: %w", err)
		}
	} else {
		var err error
		if doc, err = os.ReadFile(src); err != nil {
			return nil, fmt.Errorf("--jwks: %w", err)
		}
	}
	ks, err := tokens.ParseReceiptJWKS(doc)
	if err != nil {
		return nil, fmt.Errorf("--jwks %s: %w", src, err)
	}
	return ks, nil
}

// printReceipt shows a verified receipt's claims, one per line. Strings
// come from a verified signer but still go through termSafe: a receipt is
// a file someone handed you.
func printReceipt(w io.Writer, c *tokens.ReceiptClaims) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "receipt verified: signed by the claimcheck worker fleet")
	row := func(k, v string) { fmt.Fprintf(tw, "  %s\t%s\n", k, v) }
	row("job", termSafe(c.Job))
	row("type", termSafe(c.Type))
	row("spec", termSafe(c.Spec))
	row("input sha256", c.InputSHA256)
	row("result sha256", c.Result.SHA256)
	row("result size", fmt.Sprintf("%d bytes", c.Result.Size))
	row("content type", termSafe(c.Result.ContentType))
	row("attempt", fmt.Sprintf("%d", c.Attempts))
	row("worker", termSafe(c.Worker))
	row("started", c.StartedAt)
	row("finished", c.FinishedAt)
	row("issued", time.Unix(c.IssuedAt, 0).UTC().Format(time.RFC3339))
	row("expires", c.Expires().Format(time.RFC3339))
	row("receipt id", termSafe(c.ID))
	tw.Flush()
}

// errReceiptOtherJob is what a receipt of a job other than --job's fails with.
var errReceiptOtherJob = errors.New("receipt is another job's")

// errResultMismatch is what a result file that is not the receipt's result
// fails with.
var errResultMismatch = errors.New("result file does not match the receipt")

// checkResult compares the file at path with the result c states.
func checkResult(path string, c *tokens.ReceiptClaims) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("--result: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("--result: %w", err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	var diffs []string
	if n != c.Result.Size {
		diffs = append(diffs, fmt.Sprintf("size %d bytes, the receipt states %d", n, c.Result.Size))
	}
	if sum != c.Result.SHA256 {
		diffs = append(diffs, fmt.Sprintf("sha256 %s, the receipt states %s", sum, c.Result.SHA256))
	}
	if len(diffs) > 0 {
		return fmt.Errorf("%w: %s has %s", errResultMismatch, path, strings.Join(diffs, "; "))
	}
	return nil
}
