package deploy_test

import (
	"context"
	"encoding/json"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/claimcheck/claimcheck/internal/config"
)

// loadClusterCompose loads deploy/compose.cluster.yaml with test passwords.
func loadClusterCompose(t *testing.T, env []string) (*types.Project, error) {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{"compose.cluster.yaml"}, cli.WithName("claimcheck-cluster"),
		cli.WithWorkingDirectory("."), cli.WithEnv(env))
	if err != nil {
		t.Fatal(err)
	}
	return cli.ProjectFromOptions(context.Background(), opts)
}

// TestClusterComposeFile checks the distributed shape (docs/SCALING.md):
// three cluster nodes loading the same users.acl, an init that joins them,
// an object store with its bucket, two api and two progress replicas and
// three workers that reach Redis as a cluster (each as its own ACL user)
// and keep results only in the bucket: no service mounts a results volume.
func TestClusterComposeFile(t *testing.T) {
	env := []string{"CLAIMCHECK_S3_SECRET=s3-test", "CLAIMCHECK_S3_SECRET_PROGRESS=s3-progress-test", "CLAIMCHECK_REDIS_PASSWORD_ADMIN=admin-test"}
	for user, pw := range testPasswords {
		env = append(env, "CLAIMCHECK_REDIS_PASSWORD_"+strings.ToUpper(user)+"="+pw)
	}
	project, err := loadClusterCompose(t, env)
	if err != nil {
		t.Fatalf("compose.cluster.yaml does not load: %v", err)
	}
	users := aclUsers(t)
	for _, node := range []string{"redis-1", "redis-2", "redis-3"} {
		svc, ok := project.Services[node]
		if !ok {
			t.Fatalf("%s missing", node)
		}
		cmd := strings.Join(svc.Command, " ")
		for _, want := range []string{"--cluster-enabled yes", "--aclfile /data/users.acl", "--appendonly yes", "--maxmemory-policy noeviction"} {
			if !strings.Contains(cmd, want) {
				t.Errorf("%s runs %q: want %s", node, cmd, want)
			}
		}
		// Every node renders the one users.acl: the same file, mounted.
		if !slices.ContainsFunc(svc.Volumes, func(v types.ServiceVolumeConfig) bool {
			return strings.HasSuffix(v.Source, "deploy/redis/users.acl") && v.Target == "/etc/redis/users.acl" && v.ReadOnly
		}) {
			t.Errorf("%s does not mount deploy/redis/users.acl read-only", node)
		}
		if svc.HealthCheck == nil {
			t.Errorf("%s has no healthcheck", node)
		}
	}
	if init, ok := project.Services["redis-init"]; !ok || !strings.Contains(strings.Join(init.Entrypoint, " "), "--cluster create") {
		t.Error("no redis-init service creating the cluster")
	}
	if init, ok := project.Services["s3-init"]; !ok || !strings.Contains(strings.Join(init.Entrypoint, " "), "s3.bucket.create") {
		t.Error("no s3-init service making the bucket")
	}
	replicas := map[string]int{"gateway": 0, "api": 2, "progress": 2, "worker": 3}
	for name, want := range replicas {
		svc, ok := project.Services[name]
		if !ok {
			t.Errorf("%s missing", name)
			continue
		}
		if want > 0 && (svc.Deploy == nil || svc.Deploy.Replicas == nil || *svc.Deploy.Replicas != want) {
			t.Errorf("%s: want %d replicas", name, want)
		}
		if _, ok := svc.DependsOn["redis-init"]; !ok {
			t.Errorf("%s starts before the cluster is made", name)
		}
		raw := svc.Environment["REDIS_URL"]
		if raw == nil || !strings.HasPrefix(*raw, "redis+cluster://") {
			t.Errorf("%s: REDIS_URL %v is not a cluster URL", name, raw)
			continue
		}
		// The URL is one claimcheck accepts (and refuses as an example
		// password only when it is one).
		if err := config.CheckRedisPassword(*raw, false); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		u, err := url.Parse(strings.Replace(*raw, "redis+cluster://", "redis://", 1))
		if err != nil || u.User == nil {
			t.Errorf("%s: REDIS_URL names no user", name)
			continue
		}
		if pw, _ := u.User.Password(); users[u.User.Username()] == "" || pw != testPasswords[u.User.Username()] {
			t.Errorf("%s signs in as %q, which users.acl does not define, or not with its password", name, u.User.Username())
		}
		if n := strings.Count(u.Host, ","); n != 2 {
			t.Errorf("%s seeds %d nodes, want all 3", name, n+1)
		}
		for _, v := range svc.Volumes {
			if strings.Contains(v.Target, "results") {
				t.Errorf("%s mounts %s: results belong in the bucket", name, v.Target)
			}
		}
		results := svc.Environment["CLAIMCHECK_RESULTS_URL"]
		switch name {
		case "worker", "progress":
			if results == nil || !strings.HasPrefix(*results, "s3://") {
				t.Errorf("%s keeps results at %v, want the bucket", name, results)
			}
			want := map[string]string{"worker": "s3-test", "progress": "s3-progress-test"}[name]
			if v := svc.Environment["AWS_SECRET_ACCESS_KEY"]; v == nil || *v != want {
				t.Errorf("%s lacks its bucket credentials from .env", name)
			}
		default:
			if results != nil || svc.Environment["AWS_SECRET_ACCESS_KEY"] != nil {
				t.Errorf("%s holds the bucket's URL or credentials, which it never uses", name)
			}
		}
	}
	checkS3Identities(t, project)
	// Without its secrets the file refuses to load, naming what to set.
	if _, err := loadClusterCompose(t, nil); err == nil || !strings.Contains(err.Error(), "CLAIMCHECK_") {
		t.Errorf("compose.cluster.yaml loads without passwords: %v", err)
	}
	if _, err := os.Stat("../Dockerfile"); err != nil {
		t.Fatal(err)
	}
}

// checkS3Identities: the object store gives the workers' key read and
// write, and progress's key (a different one) only read, so a compromised
// progress container, as docs/SECURITY.md says, cannot write results.
func checkS3Identities(t *testing.T, project *types.Project) {
	t.Helper()
	entry := strings.Join(project.Services["s3"].Entrypoint, " ")
	_, rest, ok := strings.Cut(entry, "printf '")
	conf, _, ok2 := strings.Cut(rest, "'")
	if !ok || !ok2 {
		t.Fatalf("s3 entrypoint writes no identities: %q", entry)
	}
	var c struct {
		Identities []struct {
			Credentials []struct{ AccessKey string }
			Actions     []string
		}
	}
	if err := json.Unmarshal([]byte(strings.ReplaceAll(conf, "%s", "x")), &c); err != nil {
		t.Fatalf("s3 identities: %v", err)
	}
	actions := map[string][]string{}
	for _, id := range c.Identities {
		for _, cr := range id.Credentials {
			actions[cr.AccessKey] = id.Actions
		}
	}
	key := func(svc string) string {
		if v := project.Services[svc].Environment["AWS_ACCESS_KEY_ID"]; v != nil {
			return *v
		}
		return ""
	}
	if w, p := key("worker"), key("progress"); w == p {
		t.Errorf("worker and progress share the bucket key %q", w)
	}
	if a := actions[key("progress")]; !slices.Equal(a, []string{"Read"}) {
		t.Errorf("progress's bucket key may %v, want only Read", a)
	}
	if a := actions[key("worker")]; !slices.Contains(a, "Write") {
		t.Errorf("the workers' bucket key may %v: it cannot write results", a)
	}
}
