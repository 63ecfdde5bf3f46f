package main

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
)

// TestReceiptCommands: `jobs receipt` saves a succeeded job's receipt and
// `receipt verify` checks it offline against the api's JWKS (URL or saved
// file) and the result file; a result file changed by one byte, a receipt
// changed by one claim and a JWKS without receipt keys each fail the
// command, saying what is wrong.
func TestReceiptCommands(t *testing.T) {
	url, key := devServer(t)
	ctx := context.Background()
	dir := t.TempDir()
	resultFile, receiptFile, jwksFile := filepath.Join(dir, "primes.json"), filepath.Join(dir, "job.receipt"), filepath.Join(dir, "jwks.json")

	printed, err := run(t, ctx, "", "submit", "primes", "--url", url, "--api-key", key, "--input", `{"n":1000}`, "--out", resultFile)
	if err != nil {
		t.Fatalf("submit: %v\n%s", err, printed)
	}
	m := regexp.MustCompile(`(?m)^job\s+(\S+)\ntoken\s+(\S+)$`).FindStringSubmatch(printed)
	if m == nil {
		t.Fatalf("submit printed:\n%s", printed)
	}
	id, tok := m[1], m[2]
	if printed, err := run(t, ctx, "", "jobs", "receipt", id, "--url", url, "--token", tok, "--out", receiptFile); err != nil || !strings.Contains(printed, "saved the receipt") {
		t.Fatalf("jobs receipt: %v\n%s", err, printed)
	}
	// Without --out it prints the receipt itself.
	receipt, _ := os.ReadFile(receiptFile)
	if printed, err := run(t, ctx, "", "jobs", "receipt", id, "--url", url, "--token", tok); err != nil || printed != string(receipt) {
		t.Fatalf("jobs receipt to stdout: %v\n%q\nwant %q", err, printed, receipt)
	}

	// The worker's keys are in the api's JWKS within a second of its start.
	jwksURL := url + "/.well-known/jwks.json"
	var doc []byte
	waitfor.True(t, 5*time.Second, func() bool {
		resp, err := http.Get(jwksURL)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		doc, _ = io.ReadAll(resp.Body)
		return strings.Contains(string(doc), `"kind":"receipt"`)
	})
	os.WriteFile(jwksFile, doc, 0o600)

	for _, src := range []string{jwksURL, jwksFile} {
		printed, err := run(t, ctx, "", "receipt", "verify", receiptFile, "--jwks", src, "--result", resultFile)
		if err != nil {
			t.Fatalf("verify against %s: %v\n%s", src, err, printed)
		}
		for _, want := range []string{`^receipt verified`, `\n  job\s+` + id + `\n`, `\n  type\s+primes\n`, `\n  attempt\s+1\n`,
			`\n  result sha256\s+[0-9a-f]{64}\n`, `\n  finished\s+\d{4}-\d\d-\d\dT[\d:.]+Z\n`, `matches the receipt\n$`} {
			if !regexp.MustCompile(want).MatchString(printed) {
				t.Errorf("verify printed no %s:\n%s", want, printed)
			}
		}
	}

	// A result file one byte off is refused.
	result, _ := os.ReadFile(resultFile)
	forgedResult := filepath.Join(dir, "forged.json")
	changed := append([]byte{}, result...)
	changed[len(changed)-2] ^= 1
	os.WriteFile(forgedResult, changed, 0o600)
	printed, err = run(t, ctx, "", "receipt", "verify", receiptFile, "--jwks", jwksFile, "--result", forgedResult)
	if !errors.Is(err, errResultMismatch) || !strings.Contains(err.Error(), "sha256") || strings.Contains(printed, "matches") {
		t.Fatalf("forged result: %v\n%s", err, printed)
	}
	// So is one with a byte more (size and digest both differ).
	os.WriteFile(forgedResult, append(result, '\n'), 0o600)
	if _, err := run(t, ctx, "", "receipt", "verify", receiptFile, "--jwks", jwksFile, "--result", forgedResult); !errors.Is(err, errResultMismatch) || !strings.Contains(err.Error(), "size") {
		t.Fatalf("longer result: %v", err)
	}

	// With --job the exit code also says the receipt is that job's: job
	// A's receipt shown as job B's fails, as a script that checks only the
	// exit code needs it to (the printed job id is no use to it).
	if printed, err := run(t, ctx, "", "receipt", "verify", receiptFile, "--jwks", jwksFile, "--job", id); err != nil || !strings.Contains(printed, "receipt verified") {
		t.Fatalf("--job of its own job: %v\n%s", err, printed)
	}
	printed, err = run(t, ctx, "", "receipt", "verify", receiptFile, "--jwks", jwksFile, "--job", "01a2339e-0000-7000-8000-000000000000", "--result", resultFile)
	if !errors.Is(err, errReceiptOtherJob) || strings.Contains(printed, "receipt verified") || strings.Contains(printed, "matches") {
		t.Fatalf("a receipt shown as another job's: %v\n%s", err, printed)
	}

	// A receipt with one claim changed does not verify, and prints nothing.
	parts := strings.Split(strings.TrimSpace(string(receipt)), ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	forged := strings.Replace(string(payload), `"attempts":1`, `"attempts":0`, 1)
	forgedReceipt := filepath.Join(dir, "forged.receipt")
	os.WriteFile(forgedReceipt, []byte(parts[0]+"."+base64.RawURLEncoding.EncodeToString([]byte(forged))+"."+parts[2]), 0o600)
	printed, err = run(t, ctx, "", "receipt", "verify", forgedReceipt, "--jwks", jwksFile)
	if err == nil || !strings.Contains(err.Error(), "does not verify") || printed != "" {
		t.Fatalf("forged receipt: %v\n%s", err, printed)
	}

	// A JWKS without receipt keys (the job keys alone) verifies nothing.
	jobOnly := filepath.Join(dir, "jobs-jwks.json")
	os.WriteFile(jobOnly, []byte(regexp.MustCompile(`,?\{[^{}]*"kind":"receipt"[^{}]*\}`).ReplaceAllString(string(doc), "")), 0o600)
	if _, err := run(t, ctx, "", "receipt", "verify", receiptFile, "--jwks", jobOnly); err == nil || !strings.Contains(err.Error(), "no Ed25519 keys of kind receipt") {
		t.Fatalf("JWKS without receipt keys: %v", err)
	}
}
