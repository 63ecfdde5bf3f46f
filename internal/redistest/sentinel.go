package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelGroup is a master, one replica and one Sentinel watching them
// (quorum 1), each a private process: enough to watch a failover happen.
type SentinelGroup struct {
	Master, Replica *Process
	// Addr is the Sentinel's host:port.
	Addr string
	// MasterName is the name the Sentinel knows the master by.
	MasterName string
}

// URL is the group as a redis+sentinel:// URL.
func (g *SentinelGroup) URL() string {
	return "redis+sentinel://" + g.Addr + "?master=" + g.MasterName
}

// Sentinel starts a SentinelGroup for one test, stopped when it ends. The
// Sentinel calls a master down after 500 ms without an answer and fails
// over at once. It needs redis-server (skips without it, or fails in
// strict mode).
func Sentinel(tb testing.TB) *SentinelGroup {
	tb.Helper()
	master := Start(tb)
	replica := Start(tb, "--replicaof", "127.0.0.1", strconv.Itoa(master.port))
	g := &SentinelGroup{Master: master, Replica: replica, MasterName: "claimcheck"}
	dir := tb.TempDir()
	port, err := freePort()
	if err != nil {
		tb.Fatal(err)
	}
	conf := filepath.Join(dir, "sentinel.conf") // Sentinel rewrites it: it must be its own
	body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n"+
		"sentinel monitor %s 127.0.0.1 %d 1\n"+
		"sentinel down-after-milliseconds %[4]s 500\nsentinel failover-timeout %[4]s 5000\n",
		port, dir, filepath.Join(dir, "sentinel.log"), g.MasterName, master.port)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(master.path, conf, "--sentinel")
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start sentinel: %v", err)
	}
	tb.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	g.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	// Ready when the Sentinel has found the replica through the master.
	sc := redis.NewSentinelClient(&redis.Options{Addr: g.Addr})
	defer sc.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		rs, err := sc.Replicas(context.Background(), g.MasterName).Result()
		if err == nil && len(rs) == 1 {
			return g
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "sentinel.log"))
			tb.Fatalf("sentinel did not see the replica: %v %v\n%s", rs, err, tail(string(log)))
		}
		time.Sleep(50 * time.Millisecond) // polling a starting Sentinel, not waiting on a test condition
	}
}
