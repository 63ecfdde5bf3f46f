package redistest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClusterEnv, set to "cluster", makes Main start a Redis Cluster of three
// primaries for the package instead of one server: Client then returns a
// cluster client and URL a redis+cluster:// URL, so the package's tests run
// every script and transaction they reach against a real cluster, where a
// script whose keys span hash slots fails (CROSSSLOT) instead of in
// production. CI runs the core suites a second time this way.
const ClusterEnv = "CLAIMCHECK_TEST_REDIS"

// OnCluster reports whether the package runs against a Redis Cluster.
func OnCluster() bool { return os.Getenv(ClusterEnv) == "cluster" }

// SkipOnCluster skips a test that needs a single server (a fault test that
// freezes "the" Redis, a count of one server's commands) when the package
// runs against a cluster; the single-server run covers it.
func SkipOnCluster(tb testing.TB, why string) {
	tb.Helper()
	if OnCluster() {
		tb.Skip("single-server test on a cluster run: " + why)
	}
}

// Cluster starts a Redis Cluster of three primaries (no replicas) on free
// loopback ports for one test, stopped when the test ends, and returns its
// nodes' addresses. It needs redis-server and redis-cli: it skips without
// them, or fails in strict mode.
func Cluster(tb testing.TB) []string { tb.Helper(); return ClusterWith(tb, nil) }

// ClusterWith is Cluster with extra redis-server arguments for every node
// (an --aclfile, say) and the redis-cli arguments that sign in to create
// the cluster (["--user", u, "-a", pw]) when the default user is off.
func ClusterWith(tb testing.TB, cliAuth []string, extra ...string) []string {
	tb.Helper()
	server, cli := clusterTools(tb)
	addrs, stop, err := launchCluster(server, cli, 3, cliAuth, extra...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(stop)
	return addrs
}

// ClusterURL is the redis+cluster:// URL of a cluster's nodes.
func ClusterURL(addrs []string) string { return "redis+cluster://" + strings.Join(addrs, ",") }

func clusterTools(tb testing.TB) (server, cli string) {
	tb.Helper()
	server, err1 := exec.LookPath("redis-server")
	cli, err2 := exec.LookPath("redis-cli")
	if err1 != nil || err2 != nil {
		if Strict() {
			tb.Fatal("redis-server or redis-cli not found; strict mode (CI) requires them")
		}
		tb.Skip("redis-server or redis-cli not found")
	}
	return server, cli
}

// launchCluster starts n cluster-enabled redis-servers, joins them with
// redis-cli --cluster create, and waits until every node says the cluster
// is ok (every slot served).
func launchCluster(server, cli string, n int, cliAuth []string, extra ...string) ([]string, func(), error) {
	var addrs []string
	var stops []func()
	stop := func() {
		for _, s := range stops {
			s()
		}
	}
	for range n {
		a, s, err := launch(server, append([]string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "5000", "--databases", "1"}, extra...))
		if err != nil {
			stop()
			return nil, nil, err
		}
		addrs, stops = append(addrs, a), append(stops, s)
	}
	args := append(append(slices.Clone(cliAuth), "--no-auth-warning", "--cluster", "create"), addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		stop()
		return nil, nil, fmt.Errorf("redis-cli --cluster create: %w\n%s", err, tail(string(out)))
	}
	for _, a := range addrs {
		if err := waitClusterOK(a, cliAuth, 20*time.Second); err != nil {
			stop()
			return nil, nil, err
		}
	}
	return addrs, stop, nil
}

func waitClusterOK(a string, cliAuth []string, within time.Duration) error {
	opt := &redis.Options{Addr: a}
	for i := 0; i+1 < len(cliAuth); i++ {
		switch cliAuth[i] {
		case "--user":
			opt.Username = cliAuth[i+1]
		case "-a":
			opt.Password = cliAuth[i+1]
		}
	}
	c := redis.NewClient(opt)
	defer c.Close()
	deadline := time.Now().Add(within)
	for {
		info, err := c.ClusterInfo(context.Background()).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster node %s not ok after %s: %v %s", a, within, err, tail(info))
		}
		time.Sleep(50 * time.Millisecond) // polling a starting cluster, not waiting on a test condition
	}
}

// flushCluster empties every primary of a cluster client.
func flushCluster(ctx context.Context, c *redis.ClusterClient) error {
	return c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		return n.FlushAll(ctx).Err()
	})
}
