package deploy_test

import (
	"cmp"
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/internal/config"
)

// testPasswords are what the Redis passwords are set to when a test loads
// compose.yaml (it refuses to load without them). They hold the characters
// a shell or sed would trip on, so the redis container's rendering of
// users.acl is proved safe for any password that may stand in a URL's
// userinfo unescaped.
var testPasswords = map[string]string{
	"api":      `api-p&ss$w*rd!1`,
	"worker":   `worker-p&ss$w*rd!2`,
	"progress": `progress-p&ss$w*rd!3`,
	"gateway":  `gateway-p&ss$w*rd!4`,
}

// loadCompose loads compose.yaml as `docker compose` would, with the Redis
// passwords set in the environment (as an operator's .env would).
func loadCompose(t *testing.T, extraEnv ...string) *types.Project {
	t.Helper()
	env := extraEnv
	for user, pw := range testPasswords {
		env = append(env, "CLAIMCHECK_REDIS_PASSWORD_"+strings.ToUpper(user)+"="+pw)
	}
	opts, err := cli.NewProjectOptions([]string{"../compose.yaml"}, cli.WithName("claimcheck"), cli.WithWorkingDirectory(".."), cli.WithEnv(env))
	if err != nil {
		t.Fatal(err)
	}
	project, err := cli.ProjectFromOptions(context.Background(), opts)
	if err != nil {
		t.Fatalf("compose.yaml does not load: %v", err)
	}
	return project
}

// serviceFlag is the value claimcheck would read for flag in svc: from its
// command line, else from its environment (CLAIMCHECK_<FLAG>), else "".
func serviceFlag(svc types.ServiceConfig, flag string) string {
	for i, arg := range svc.Command {
		if arg == "--"+flag && i+1 < len(svc.Command) {
			return svc.Command[i+1]
		}
		if v, ok := strings.CutPrefix(arg, "--"+flag+"="); ok {
			return v
		}
	}
	if v := svc.Environment["CLAIMCHECK_"+strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))]; v != nil {
		return *v
	}
	return ""
}

// reachableDirs is, for one service as compose runs it, every directory
// claimcheck will read or write keys or results in, by what it holds. It
// follows cmd/claimcheck: each command's --key-dir means a different
// directory, the rest fall back to DATA_DIR.
func reachableDirs(t *testing.T, name string, svc types.ServiceConfig) map[string]string {
	t.Helper()
	cfg := app.Config{
		DataDir:    serviceFlag(svc, "data-dir"),
		ResultsDir: serviceFlag(svc, "results-dir"),
		LinkKeyDir: serviceFlag(svc, "link-key-dir"),
	}
	if cfg.DataDir == "" {
		cfg.DataDir = ".claimcheck"
	}
	cmd := svc.Command[0]
	switch cmd {
	case "api", "progress":
		cfg.JobKeyDir = serviceFlag(svc, "key-dir")
	case "gateway":
		cfg.GatewayKeyDir = serviceFlag(svc, "key-dir")
	}
	cfg = cfg.WithDefaults()
	dirs := map[string]string{}
	switch cmd {
	case "api":
		dirs["job keys"] = cfg.JobKeyDir
		if serviceFlag(svc, "trust-gateway") != "" || slices.Contains(svc.Command, "--trust-gateway") {
			if serviceFlag(svc, "gateway-jwks-url") == "" {
				dirs["gateway keys"] = cfg.GatewayKeyDir
			}
		}
	case "gateway":
		dirs["gateway keys"] = cfg.GatewayKeyDir
	case "progress":
		dirs["link keys"] = cfg.LinkKeyDir
		dirs["results"] = cfg.ResultsDir
		if serviceFlag(svc, "jwks-url") == "" {
			dirs["job keys"] = cfg.JobKeyDir
		}
	case "worker":
		dirs["results"] = cfg.ResultsDir
		dirs["receipt keys"] = cmp.Or(serviceFlag(svc, "receipt-key-dir"), cfg.WorkerKeyDir)
		w := config.Worker{DataDir: cfg.DataDir, WebhookKeyDir: serviceFlag(svc, "webhook-key-dir"), WebhookLinkKeyDir: serviceFlag(svc, "webhook-link-key-dir")}
		dirs["webhook keys"], dirs["webhook link keys"] = w.WebhookKeys()
	default:
		t.Fatalf("%s runs %q, which this test does not know", name, cmd)
	}
	return dirs
}

// mountOf is the volume mount of svc that contains dir, if any.
func mountOf(svc types.ServiceConfig, dir string) (types.ServiceVolumeConfig, bool) {
	for _, v := range svc.Volumes {
		if dir == v.Target || strings.HasPrefix(dir, v.Target+"/") {
			return v, true
		}
	}
	return types.ServiceVolumeConfig{}, false
}

// TestFinding2EachServiceMountsOnlyItsKeys: a compromised container must not
// find another process's private key (the review read the gateway's and the
// api's signing keys from a worker and could mint an at+jwt for anyone).
// Per service, the exact set of mounts, that every directory claimcheck
// uses there lies on the right one, that no private key directory is
// mounted where it is not needed, and that progress reads results
// read-only; and each long-running service runs as its own non-root user.
func TestFinding2EachServiceMountsOnlyItsKeys(t *testing.T) {
	project := loadCompose(t)
	type mount struct {
		volume   string
		readOnly bool
	}
	// Named volume → what it holds. The private key volumes are the ones
	// that let their holder mint tokens.
	private := map[string]string{"jobkeys": "job keys", "gwkeys": "gateway keys", "linkkeys": "link keys", "workerkeys": "receipt keys",
		"whkeys": "webhook keys", "whlinkkeys": "webhook link keys"}
	want := map[string]map[string]mount{
		"api":      {"job keys": {"jobkeys", false}},
		"gateway":  {"gateway keys": {"gwkeys", false}},
		"progress": {"link keys": {"linkkeys", false}, "results": {"results", true}},
		"worker":   {"results": {"results", false}, "receipt keys": {"workerkeys", false}, "webhook keys": {"whkeys", false}, "webhook link keys": {"whlinkkeys", false}},
	}
	for name, wantDirs := range want {
		svc, ok := project.Services[name]
		if !ok {
			t.Errorf("service %s missing", name)
			continue
		}
		// Exactly these volumes, nothing else (no shared data volume).
		var gotVolumes, wantVolumes []string
		for _, v := range svc.Volumes {
			gotVolumes = append(gotVolumes, v.Type+":"+v.Source)
		}
		for _, m := range wantDirs {
			wantVolumes = append(wantVolumes, "volume:"+m.volume)
		}
		slices.Sort(gotVolumes)
		slices.Sort(wantVolumes)
		if !slices.Equal(gotVolumes, wantVolumes) {
			t.Errorf("%s mounts %v, want exactly %v", name, gotVolumes, wantVolumes)
		}
		for _, v := range svc.Volumes {
			if holds, ok := private[v.Source]; ok {
				if _, needed := wantDirs[holds]; !needed {
					t.Errorf("%s can reach %s (%s), which it does not need", name, holds, v.Target)
				}
			}
		}
		// What claimcheck will use there is on the right volume.
		dirs := reachableDirs(t, name, svc)
		var gotKinds, wantKinds []string
		for kind := range dirs {
			gotKinds = append(gotKinds, kind)
		}
		for kind := range wantDirs {
			wantKinds = append(wantKinds, kind)
		}
		slices.Sort(gotKinds)
		slices.Sort(wantKinds)
		if !slices.Equal(gotKinds, wantKinds) {
			t.Errorf("%s uses directories for %v, want %v", name, gotKinds, wantKinds)
		}
		for kind, dir := range dirs {
			m, ok := wantDirs[kind]
			if !ok {
				continue
			}
			v, ok := mountOf(svc, filepath.Clean(dir))
			if !ok {
				t.Errorf("%s keeps its %s in %s, which is on no volume (lost on restart, or the image's)", name, kind, dir)
				continue
			}
			if got := v.Source; got != m.volume || v.ReadOnly != m.readOnly {
				t.Errorf("%s: %s at %s is on %s (read-only %v), want %s (read-only %v)", name, kind, dir, got, v.ReadOnly, m.volume, m.readOnly)
			}
		}
	}
	// The api verifies the gateway's tokens with its public JWKS only.
	if got := serviceFlag(project.Services["api"], "gateway-jwks-url"); !strings.HasPrefix(got, "http://gateway:") {
		t.Errorf("api --gateway-jwks-url = %q, want the gateway's JWKS", got)
	}
	// Progress verifies job tokens with the api's public JWKS only.
	if got := serviceFlag(project.Services["progress"], "jwks-url"); !strings.HasPrefix(got, "http://api:") {
		t.Errorf("progress --jwks-url = %q, want the api's JWKS", got)
	}
	// Each process kind its own non-root uid. Worker and progress share one:
	// results are written mode 0600 and progress must read them; neither
	// holds the other's keys, since their volumes differ.
	uids := map[string]string{}
	for _, name := range []string{"api", "gateway", "progress", "worker"} {
		u := project.Services[name].User
		uid, _, _ := strings.Cut(u, ":")
		if uid == "" || uid == "0" || uid == "root" {
			t.Errorf("%s runs as %q, want its own non-root uid", name, u)
		}
		uids[name] = uid
	}
	if uids["api"] == uids["gateway"] || uids["api"] == uids["worker"] || uids["gateway"] == uids["worker"] {
		t.Errorf("api, gateway and worker share a uid: %v", uids)
	}
	if uids["progress"] != uids["worker"] {
		t.Errorf("progress (%s) cannot read results written by worker (%s) mode 0600", uids["progress"], uids["worker"])
	}
	if _, ok := project.Volumes["data"]; ok {
		t.Error("the shared data volume is still declared")
	}
}
