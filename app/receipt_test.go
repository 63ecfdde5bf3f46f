package app_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/registry"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/tokens"
	"github.com/claimcheck/claimcheck/tokens/tokenstest"
)

func sha256Hex(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// fetchReceipt downloads job sub's receipt, insisting on a 200 with the
// receipt's media type.
func (s *stack) fetchReceipt(t *testing.T, sub submitted) string {
	t.Helper()
	resp := do(t, "GET", s.progress.URL+"/v1/jobs/"+sub.ID+"/receipt", sub.Token, nil)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/jwt" {
		t.Fatalf("receipt: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	return string(body)
}

// waitReceiptKeys waits until the api's JWKS lists the worker's receipt
// keys: an api that read its JWKS before the worker published lists them
// within a second (package pubkeys).
func (s *stack) waitReceiptKeys(t *testing.T) {
	t.Helper()
	waitfor.True(t, 5*time.Second, func() bool {
		resp, err := http.Get(s.api.URL + "/.well-known/jwks.json")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		doc, _ := io.ReadAll(resp.Body)
		_, err = tokens.ParseJWKSOf(doc, tokens.KindReceipt)
		return err == nil && strings.Contains(string(doc), `"kind":"receipt"`)
	})
}

// TestReceiptEndToEnd: a real worker runs a built-in job to success; its
// receipt, downloaded with the job token, verifies against the api's JWKS
// (receipt keys only) and states exactly the record, the input, the result
// bytes, the type's announced spec digest and the worker that ran it.
func TestReceiptEndToEnd(t *testing.T) {
	s := newStack(t)
	ctx := context.Background()
	input := `{"n":1000}`
	sub := s.submit(t, `{"type":"primes","input":`+input+`}`)
	rec := s.waitState(t, sub, jobs.StateSucceeded)
	receipt := s.fetchReceipt(t, sub)

	resp := do(t, "GET", s.progress.URL+"/v1/jobs/"+sub.ID+"/result", sub.Token, nil)
	result, _ := io.ReadAll(resp.Body)
	servedType := resp.Header.Get("Content-Type")
	if resp.StatusCode != http.StatusOK || len(result) == 0 {
		t.Fatalf("result: %d", resp.StatusCode)
	}

	// Verified offline, with the keys the api publishes for receipts.
	s.waitReceiptKeys(t)
	keys, err := tokens.NewRemoteKeysOf(ctx, s.api.URL+"/.well-known/jwks.json", tokens.KindReceipt, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := (&tokens.ReceiptVerifier{Keys: keys}).VerifyReceipt(receipt)
	if err != nil {
		t.Fatalf("receipt does not verify against the api's JWKS: %v", err)
	}
	// The job keys in the same document never verify a receipt.
	if _, err := (&tokens.ReceiptVerifier{Keys: s.keys}).VerifyReceipt(receipt); err == nil {
		t.Fatal("a receipt verified with the api's job keys")
	}

	resp = do(t, "GET", s.api.URL+"/v1/job-types", "", nil)
	types := decode[struct {
		Types []struct {
			Name   string `json:"name"`
			Digest string `json:"spec_digest"`
		}
	}](t, resp)
	digest := ""
	for _, ty := range types.Types {
		if ty.Name == "primes" {
			digest = ty.Digest
		}
	}
	workers, err := s.rdb.ZRange(ctx, registry.KeyPrefixWorkers+"primes", 0, -1).Result()
	if err != nil || len(workers) != 1 {
		t.Fatalf("announced workers of primes: %v %v", workers, err)
	}

	for _, check := range []struct {
		claim     string
		got, want any
	}{
		{"job", c.Job, sub.ID},
		{"type", c.Type, "primes"},
		{"spec", c.Spec, digest},
		{"input_sha256", c.InputSHA256, sha256Hex([]byte(input))},
		{"result.sha256", c.Result.SHA256, sha256Hex(result)},
		{"result.sha256 (record)", c.Result.SHA256, rec.Result.SHA256},
		{"result.size", c.Result.Size, int64(len(result))},
		{"result.size (record)", c.Result.Size, rec.Result.Size},
		{"result.content_type", c.Result.ContentType, rec.Result.ContentType},
		{"result.content_type (served)", c.Result.ContentType, servedType},
		{"attempts", c.Attempts, rec.Attempts},
		{"worker", c.Worker, workers[0]},
		{"finished_at", c.Finished().UnixMilli(), rec.FinishedAt.UnixMilli()},
		{"iss", c.Issuer, "urn:claimcheck:workers"},
		{"aud", c.Audience, "urn:claimcheck:receipts"},
		{"exp", c.ExpiresAt - c.IssuedAt, int64(tokens.ReceiptLifetime / time.Second)},
	} {
		if check.got != check.want {
			t.Errorf("%s = %v, want %v", check.claim, check.got, check.want)
		}
	}
	if digest == "" || !strings.HasPrefix(digest, "sha256:") {
		t.Errorf("job-types spec_digest = %q", digest)
	}
	if st := c.Started(); st.Before(*rec.StartedAt) || st.After(c.Finished()) {
		t.Errorf("started_at %v not between the record's started_at %v and finished_at %v", st, rec.StartedAt, c.Finished())
	}
	if iat := time.Unix(c.IssuedAt, 0); iat.Before(rec.FinishedAt.Truncate(time.Second)) || iat.After(time.Now()) {
		t.Errorf("iat %v, finished %v", iat, rec.FinishedAt)
	}
	// The receipt expires with the record, no sooner, no later.
	recTTL, _ := s.rdb.PTTL(ctx, jobs.JobKey(sub.ID)).Result()
	rcTTL, _ := s.rdb.PTTL(ctx, jobs.JobKey(sub.ID)+jobs.KeySuffixReceipt).Result()
	if rcTTL <= 0 || rcTTL > recTTL+time.Second || recTTL > rcTTL+time.Second {
		t.Errorf("receipt ttl %v, record ttl %v", rcTTL, recTTL)
	}

	// An independent JOSE implementation agrees.
	payload := verifyWithJose(t, s, receipt)
	if payload["job"] != sub.ID || payload["input_sha256"] != sha256Hex([]byte(input)) {
		t.Errorf("jose payload = %v", payload)
	}
	if res, _ := payload["result"].(map[string]any); res["sha256"] != sha256Hex(result) || res["size"] != float64(len(result)) {
		t.Errorf("jose result = %v", payload["result"])
	}
}

// TestReceiptRefusals: the route follows the result's rules (401 without
// a valid token, 403 for another job or without job:result, 404 for a
// record that is gone) and answers 404 no-receipt for a job that has not
// succeeded; none of them reveals a receipt.
func TestReceiptRefusals(t *testing.T) {
	s := newStack(t)
	ok := s.submit(t, `{"type":"primes","input":{"n":100}}`)
	s.waitState(t, ok, jobs.StateSucceeded)
	failed := s.submit(t, `{"type":"flaky","max_retry":0}`)
	s.waitState(t, failed, jobs.StateFailed)
	running := s.submit(t, `{"type":"block"}`)
	defer do(t, "POST", s.progress.URL+"/v1/jobs/"+running.ID+"/cancel", running.Token, nil)
	receipt := s.fetchReceipt(t, ok)

	now := time.Now()
	readOnly, _, err := (&tokens.Minter{Keys: s.keys}).MintJob(ok.ID, "ann", []string{tokens.ScopeJobRead}, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	workerKeys, err := tokens.LoadDir(s.cfg.WorkerKeyDir)
	if err != nil {
		t.Fatal(err)
	}
	gone := tokenstest.Valid(t, s.keys, "0190e5c1-0000-7000-8000-000000000000", now, nil)
	for _, tc := range []struct {
		name, id, token string
		status          int
		kind            string
	}{
		{"no token", ok.ID, "", 401, "unauthorized"},
		{"the receipt as a job token", ok.ID, receipt, 401, "invalid-token"},
		{"a job token signed by a worker key", ok.ID, tokenstest.Valid(t, workerKeys, ok.ID, now, nil), 401, "invalid-token"},
		{"another job's token", ok.ID, failed.Token, 403, "wrong-job"},
		{"without job:result", ok.ID, readOnly, 403, "insufficient-scope"},
		{"record gone", "0190e5c1-0000-7000-8000-000000000000", gone, 404, "not-found"},
		{"failed job", failed.ID, failed.Token, 404, "no-receipt"},
		{"running job", running.ID, running.Token, 404, "no-receipt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := do(t, "GET", s.progress.URL+"/v1/jobs/"+tc.id+"/receipt", tc.token, nil)
			body, _ := io.ReadAll(resp.Body)
			var p problemBody
			json.Unmarshal(body, &p)
			if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != "application/problem+json" ||
				!strings.HasSuffix(p.Type, ":"+tc.kind) || strings.Contains(string(body), receipt) {
				t.Fatalf("%d %s %s; want %d %s", resp.StatusCode, resp.Header.Get("Content-Type"), body, tc.status, tc.kind)
			}
		})
	}
	// Refusals changed nothing: the failed and running jobs still have
	// no receipt, the succeeded one the same one.
	for _, id := range []string{failed.ID, running.ID} {
		if n, _ := s.rdb.Exists(context.Background(), jobs.JobKey(id)+jobs.KeySuffixReceipt).Result(); n != 0 {
			t.Errorf("job %s has a receipt", id)
		}
	}
	if again := s.fetchReceipt(t, ok); again != receipt {
		t.Error("the receipt changed")
	}
}

// joseModules installs the npm package jose 6 once per machine, under the
// user's cache directory, and returns its node_modules' parent. Without
// node or npm, or when the install fails, the test is skipped with the
// reason, or fails under CLAIMCHECK_TEST_STRICT=1.
func joseModules(t *testing.T) string {
	t.Helper()
	unavailable := func(format string, args ...any) {
		t.Helper()
		if redistest.Strict() {
			t.Fatalf(format, args...)
		}
		t.Skipf(format, args...)
	}
	if _, err := exec.LookPath("node"); err != nil {
		unavailable("node not found: %v", err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		unavailable("no cache dir: %v", err)
	}
	dir := filepath.Join(cache, "claimcheck-test", "jose6")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "jose", "package.json")); err == nil {
		return dir
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		unavailable("npm not found: %v", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		unavailable("cache dir: %v", err)
	}
	out, err := exec.Command(npm, "install", "--no-save", "--no-audit", "--no-fund", "--prefix", dir, "jose@6").CombinedOutput()
	if err != nil {
		unavailable("npm install jose@6: %v\n%s", err, out)
	}
	return dir
}

// verifyWithJose runs testdata/verify-receipt.mjs on receipt against the
// api's JWKS document and returns the payload jose verified. It also
// checks that jose refuses the receipt with one claim changed.
func verifyWithJose(t *testing.T, s *stack, receipt string) map[string]any {
	t.Helper()
	modules := joseModules(t)
	s.waitReceiptKeys(t)
	resp := do(t, "GET", s.api.URL+"/.well-known/jwks.json", "", nil)
	doc, _ := io.ReadAll(resp.Body)
	dir := t.TempDir()
	jwksFile, receiptFile := filepath.Join(dir, "jwks.json"), filepath.Join(dir, "receipt.jwt")
	os.WriteFile(jwksFile, doc, 0o600)
	run := func(tok string) ([]byte, error) {
		os.WriteFile(receiptFile, []byte(tok), 0o600)
		cmd := exec.Command("node", "testdata/verify-receipt.mjs", modules, jwksFile, receiptFile)
		return cmd.CombinedOutput()
	}
	out, err := run(receipt)
	if err != nil {
		t.Fatalf("jose refused the receipt: %v\n%s", err, out)
	}
	var got struct {
		Payload         map[string]any    `json:"payload"`
		ProtectedHeader map[string]string `json:"protectedHeader"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("jose output: %v\n%s", err, out)
	}
	if got.ProtectedHeader["typ"] != tokens.TypeReceipt || got.ProtectedHeader["alg"] != "EdDSA" {
		t.Errorf("jose header = %v", got.ProtectedHeader)
	}
	parts := strings.Split(receipt, ".")
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	forged := strings.Replace(string(raw), `"attempts":1`, `"attempts":2`, 1)
	if forged == string(raw) {
		t.Fatalf("no attempts claim to tamper with in %s", raw)
	}
	if out, err := run(parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(forged)) + "." + parts[2]); err == nil ||
		!strings.Contains(string(out), "ERR_JWS_SIGNATURE_VERIFICATION_FAILED") {
		t.Errorf("jose accepted a tampered receipt: %v\n%s", err, out)
	}
	return got.Payload
}
