package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/syncbuf"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
	"github.com/claimcheck/claimcheck/tokens"
)

// syncBuffer is a running process's output, read while it runs.
type syncBuffer = syncbuf.Buffer

func run(t *testing.T, ctx context.Context, stdin string, args ...string) (string, error) {
	t.Helper()
	var out syncBuffer
	cmd := newRoot()
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(io.Discard)
	cmd.SetIn(strings.NewReader(stdin))
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

// TestDevServesAJobWithEmbeddedRedis runs `claimcheck dev` exactly as a new
// user would, with no REDIS_URL: it must boot on the embedded Redis, print a
// working URL and API key, and carry a job from submission to its result.
func TestDevServesAJobWithEmbeddedRedis(t *testing.T) {
	t.Setenv("REDIS_URL", "")
	t.Setenv("CLAIMCHECK_DEV_API_KEY", "")
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		cmd := newRoot()
		cmd.SetArgs([]string{"dev", "--addr", "127.0.0.1:0", "--data-dir", dir, "--log-level", "warn", "--session-lifetime", "90m"})
		cmd.SetOut(&out)
		cmd.SetErr(io.Discard)
		done <- cmd.ExecuteContext(ctx)
	}()
	urlRE := regexp.MustCompile(`URL:\s+(http://\S+)`)
	keyRE := regexp.MustCompile(`API key:\s+(cck_\S+)`)
	waitfor.True(t, 20*time.Second, func() bool { return keyRE.MatchString(out.String()) })
	printed := out.String()
	if !strings.Contains(printed, "memory only") {
		t.Fatalf("no memory-only warning in:\n%s", printed)
	}
	base, key := urlRE.FindStringSubmatch(printed)[1], keyRE.FindStringSubmatch(printed)[1]

	// The printed dev password signs in to the web UI.
	pw := regexp.MustCompile(`password (\S+)\)`).FindStringSubmatch(printed)
	if pw == nil {
		t.Fatalf("no dev password in:\n%s", printed)
	}
	signedIn := time.Now()
	login, err := http.Post(base+"/v1/sessions", "application/json", strings.NewReader(`{"username":"dev","password":"`+pw[1]+`"}`))
	if err != nil || login.StatusCode != http.StatusCreated {
		t.Fatalf("dev sign-in: %v %v", login.StatusCode, err)
	}
	var session struct {
		ExpiresAt time.Time `json:"expires_at"`
	}
	json.NewDecoder(login.Body).Decode(&session)
	login.Body.Close()
	// --session-lifetime 90m (shorter than the 12 h idle timeout) ends it.
	if d := session.ExpiresAt.Sub(signedIn); d < 89*time.Minute || d > 91*time.Minute {
		t.Fatalf("session expires %v after sign-in, want 90m (--session-lifetime)", d)
	}

	req, _ := http.NewRequest("POST", base+"/v1/jobs", strings.NewReader(`{"type":"sleep","input":{"seconds":0.2,"steps":2}}`))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var sub struct{ ID, Token string }
	json.NewDecoder(resp.Body).Decode(&sub)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || sub.Token == "" {
		t.Fatalf("submit: %d", resp.StatusCode)
	}
	get := func(path string) (*http.Response, []byte) {
		req, _ := http.NewRequest("GET", base+"/v1/jobs/"+sub.ID+path, nil)
		req.Header.Set("Authorization", "Bearer "+sub.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	waitfor.True(t, 20*time.Second, func() bool {
		_, b := get("")
		return strings.Contains(string(b), `"state":"succeeded"`)
	})
	resp, body := get("/result")
	if resp.StatusCode != 200 || !strings.Contains(string(body), "slept_seconds") {
		t.Fatalf("result: %d %s", resp.StatusCode, body)
	}
	// The signing key was created under the data dir, private part 0600.
	matches, _ := filepath.Glob(filepath.Join(dir, "keys", "jobs", "*.pem"))
	var sawPrivate bool
	for _, m := range matches {
		if !strings.HasSuffix(m, ".pub.pem") {
			sawPrivate = true
			if fi, _ := os.Stat(m); fi.Mode().Perm() != 0o600 {
				t.Errorf("%s mode %v", m, fi.Mode().Perm())
			}
		}
	}
	if !sawPrivate {
		t.Fatalf("no private key in %v", matches)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("dev exited with %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("dev did not shut down")
	}
}

func TestEveryCommandHasHelp(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"dev", "--help"}, {"api", "--help"}, {"worker", "--help"}, {"progress", "--help"},
		{"keys", "--help"}, {"keys", "generate", "--help"}, {"apikeys", "--help"}, {"apikeys", "create", "--help"},
		{"token", "inspect", "--help"}, {"users", "--help"}, {"users", "add", "--help"}, {"users", "block", "--help"},
	} {
		out, err := run(t, context.Background(), "", args...)
		if err != nil || !strings.Contains(out, "Usage:") {
			t.Errorf("%v: %v\n%s", args, err, out)
		}
	}
	out, _ := run(t, context.Background(), "", "api", "--help")
	if !strings.Contains(out, "$REDIS_URL") || !strings.Contains(out, "$CLAIMCHECK_DATA_DIR") {
		t.Errorf("api --help does not name the environment variables:\n%s", out)
	}
}

func TestServicesNeedARealRedis(t *testing.T) {
	t.Setenv("REDIS_URL", "")
	for _, cmd := range []string{"api", "worker", "progress"} {
		if _, err := run(t, context.Background(), "", cmd, "--data-dir", t.TempDir()); err == nil || !strings.Contains(err.Error(), "REDIS_URL") {
			t.Errorf("%s without Redis: %v", cmd, err)
		}
	}
}

func TestEnvironmentFillsUnsetFlags(t *testing.T) {
	t.Setenv("CLAIMCHECK_LOG_FORMAT", "yaml")
	if _, err := run(t, context.Background(), "", "worker"); err == nil || !strings.Contains(err.Error(), "yaml") {
		t.Fatalf("env value not applied: %v", err)
	}
	// The command line wins over the environment.
	t.Setenv("REDIS_URL", "")
	if _, err := run(t, context.Background(), "", "worker", "--log-format", "json"); err == nil || !strings.Contains(err.Error(), "REDIS_URL") {
		t.Fatalf("flag did not win: %v", err)
	}
}

func TestLogFormatDefaults(t *testing.T) {
	for cmd, want := range map[string]string{"api": "json", "worker": "json", "progress": "json", "gateway": "json", "dev": "text", "users": "text", "keys": "text"} {
		if got := defaultLogFormat(cmd); got != want {
			t.Errorf("%s logs %s by default, want %s", cmd, got, want)
		}
	}
	// Without a flag or CLAIMCHECK_LOG_FORMAT a service logs JSON lines.
	t.Setenv("CLAIMCHECK_LOG_FORMAT", "")
	var logs syncBuffer
	cmd := newRoot()
	cmd.SetArgs([]string{"gateway", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--redis-url", "redis://" + redistest.Addr()})
	cmd.SetOut(io.Discard)
	cmd.SetErr(&logs)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	waitfor.True(t, 10*time.Second, func() bool { return strings.Contains(logs.String(), "listening") })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(logs.String(), "\n")
	var line map[string]any
	if err := json.Unmarshal([]byte(first), &line); err != nil || line["msg"] == nil {
		t.Fatalf("gateway's first log line is not JSON: %q (%v)", first, err)
	}
}

func TestKeysGenerateAndTokenInspect(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	out, err := run(t, context.Background(), "", "keys", "generate", "--out", dir)
	if err != nil || !strings.Contains(out, "generated key") {
		t.Fatalf("generate: %v %s", err, out)
	}
	keys, err := tokens.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := (&tokens.Minter{Keys: keys}).MintJob("job-1", "ann", tokens.JobScopes, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	out, err = run(t, context.Background(), tok+"\n", "token", "inspect", "-", "--key-dir", dir)
	var report struct {
		Verified bool
		Claims   struct{ Job, Sub string }
		Header   map[string]any
	}
	if err != nil || json.Unmarshal([]byte(out), &report) != nil || !report.Verified || report.Claims.Job != "job-1" || report.Header["typ"] != tokens.TypeJob {
		t.Fatalf("inspect: %v\n%s", err, out)
	}
	if strings.Contains(out, "PRIVATE") || strings.Contains(out, `"d"`) {
		t.Fatal("inspect printed key material")
	}
	other := filepath.Join(t.TempDir(), "other")
	run(t, context.Background(), "", "keys", "generate", "--out", other)
	out, err = run(t, context.Background(), "", "token", "inspect", tok, "--key-dir", other)
	if err == nil || !strings.Contains(out, `"verified": false`) || !strings.Contains(out, "unverified_claims") {
		t.Fatalf("inspect with the wrong keys: %v\n%s", err, out)
	}
}
