// Command sse is the load harness for the progress service's event streams:
// it runs one progress process (a child of this one, so its memory is its
// own), opens many concurrent SSE streams to it, publishes progress the way
// workers do, and reports memory per stream and fan-out latency from the
// worker's write to the client's receipt.
//
//	go run ./bench/sse -streams 10000 -jobs 1000 -rounds 5
//
// It needs redis-server on PATH (a private one is started on a free port).
// It raises its own open-file limit; the product does not.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/api/progress"
	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/internal/config"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/tokens"
)

func main() {
	serve := flag.Bool("serve", false, "internal: run the progress service (the child process)")
	redisURL := flag.String("redis", "", "internal: the child's Redis URL")
	dataDir := flag.String("data", "", "internal: the child's data dir")
	streams := flag.Int("streams", 10000, "concurrent event streams")
	jobCount := flag.Int("jobs", 1000, "jobs the streams watch (streams/jobs watchers each)")
	rounds := flag.Int("rounds", 5, "progress updates per job")
	flag.Parse()
	raiseFileLimit()
	var err error
	if *serve {
		err = serveProgress(*redisURL, *dataDir)
	} else {
		err = run(*streams, *jobCount, *rounds)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sse:", err)
		os.Exit(1)
	}
}

func raiseFileLimit() {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}

// serveProgress is the child: the progress service alone, as
// `claimcheck progress` runs it, printing its address when ready.
func serveProgress(redisURL, dataDir string) error {
	ctx := context.Background()
	cfg := app.Config{DataDir: dataDir, RedisURL: redisURL, Logger: slog.New(slog.DiscardHandler),
		// Every stream comes from this one address, ten per token: the
		// harness measures the streams' cost, not the caps.
		Streams: progress.StreamLimits{PerToken: -1, PerJob: -1, PerAddress: -1},
	}.WithDefaults()
	r, err := config.OpenRedis(ctx, redisURL)
	if err != nil {
		return err
	}
	keys, err := tokens.LoadDir(cfg.JobKeyDir)
	if err != nil {
		return err
	}
	prog, err := app.Progress(cfg, r.Client, keys)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/", app.Handler(cfg, prog))
	// The harness's own window into the child's memory, by kind.
	mux.HandleFunc("/debug/memstats", func(w http.ResponseWriter, _ *http.Request) {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		fmt.Fprintf(w, "%d %d %d", m.HeapInuse, m.StackInuse, runtime.NumGoroutine())
	})
	return app.Serve(ctx, "127.0.0.1:0", mux, func(addr string) { fmt.Println(addr) })
}

func run(streams, jobCount, rounds int) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "claimcheck-sse-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	redisURL, stopRedis, err := startRedis(dir)
	if err != nil {
		return err
	}
	defer stopRedis()
	keys, _, err := tokens.EnsureDir(filepath.Join(dir, "keys", "jobs"))
	if err != nil {
		return err
	}
	child := exec.Command(os.Args[0], "-serve", "-redis", redisURL, "-data", dir)
	child.Stderr = os.Stderr
	out, _ := child.StdoutPipe()
	if err := child.Start(); err != nil {
		return err
	}
	defer child.Process.Kill()
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return fmt.Errorf("child: %w", err)
	}
	base := "http://" + strings.TrimSpace(addr)

	rdb := redis.NewClient(&redis.Options{Addr: strings.TrimPrefix(redisURL, "redis://"), PoolSize: 64})
	store := jobs.NewStore(rdb, nil)
	minter := &tokens.Minter{Keys: keys}
	ids, toks := make([]string, jobCount), make([]string, jobCount)
	for i := range ids {
		ids[i] = uuid.Must(uuid.NewV7()).String()
		if _, err := store.Create(ctx, jobs.NewJob{ID: ids[i], Type: "bench", Owner: "bench", Queue: "default", Timeout: time.Hour, TTL: time.Hour}); err != nil {
			return err
		}
		if _, err := store.Start(ctx, ids[i], 1); err != nil {
			return err
		}
		if toks[i], _, err = minter.MintJob(ids[i], "bench", tokens.JobScopes, time.Now().Add(time.Hour)); err != nil {
			return err
		}
	}
	// Warm the child up (first requests allocate pools), then take its
	// resident memory as the baseline.
	for i := range min(jobCount, 50) {
		req, _ := http.NewRequest("GET", base+"/v1/jobs/"+ids[i], nil)
		req.Header.Set("Authorization", "Bearer "+toks[i])
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	time.Sleep(200 * time.Millisecond) // let the child settle before measuring (harness, not a test)
	rssBefore := rss(child.Process.Pid)
	heapBefore, stackBefore, gBefore := memstats(base)

	var (
		exited   sync.WaitGroup
		opened   sync.WaitGroup
		mu       sync.Mutex
		lat      []time.Duration
		received atomic.Int64
		failures atomic.Int64
	)
	transport := &http.Transport{MaxIdleConnsPerHost: -1, DisableCompression: true,
		DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext}
	client := &http.Client{Transport: transport}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	opened.Add(streams)
	exited.Add(streams)
	for i := range streams {
		job := i % jobCount
		go func() {
			defer exited.Done()
			var mine []time.Duration
			defer func() {
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
			req, _ := http.NewRequestWithContext(sctx, "GET", base+"/v1/jobs/"+ids[job]+"/events", nil)
			req.Header.Set("Authorization", "Bearer "+toks[job])
			resp, err := client.Do(req)
			if err != nil || resp.StatusCode != 200 {
				failures.Add(1)
				opened.Done()
				return
			}
			defer resp.Body.Close()
			r := bufio.NewReaderSize(resp.Body, 512)
			first := true
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if first && strings.HasPrefix(line, "event: state") {
					first = false
					opened.Done()
				}
				if d, ok := strings.CutPrefix(line, "data: "); ok && strings.Contains(d, `"message":"t=`) {
					var p struct{ Message string }
					if json.Unmarshal([]byte(d), &p) == nil {
						sent, _ := strconv.ParseInt(strings.TrimPrefix(p.Message, "t="), 10, 64)
						mine = append(mine, time.Since(time.Unix(0, sent)))
						received.Add(1)
					}
				}
			}
		}()
	}
	opened.Wait()
	if n := failures.Load(); n > 0 {
		return fmt.Errorf("%d streams failed to open", n)
	}
	runtime.GC()
	time.Sleep(500 * time.Millisecond) // let the child's RSS settle (harness, not a test)
	rssAfter := rss(child.Process.Pid)
	heapAfter, stackAfter, gAfter := memstats(base)

	perJob := streams / jobCount
	for round := 1; round <= rounds; round++ {
		want := received.Load() + int64(streams)
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := w; j < jobCount; j += 8 {
					msg := "t=" + strconv.FormatInt(time.Now().UnixNano(), 10)
					if _, err := store.Progress(ctx, ids[j], float64(round*100/(rounds+1)), msg); err != nil {
						failures.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		deadline := time.Now().Add(30 * time.Second)
		for received.Load() < want && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if received.Load() < want {
			return fmt.Errorf("round %d: %d of %d deliveries arrived", round, received.Load()-(want-int64(streams)), streams)
		}
	}
	cancel()
	exited.Wait()
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }
	fmt.Printf("streams %d on %d jobs (%d watchers each), %d rounds, %d deliveries, GOMAXPROCS %d\n",
		streams, jobCount, perJob, rounds, len(lat), runtime.GOMAXPROCS(0))
	fmt.Printf("progress process RSS: %.1f MiB idle, %.1f MiB with the streams open: %.1f KiB per stream\n",
		float64(rssBefore)/(1<<20), float64(rssAfter)/(1<<20), float64(rssAfter-rssBefore)/float64(streams)/1024)
	fmt.Printf("  of which Go heap in use %.1f KiB, goroutine stacks %.1f KiB per stream (%.1f goroutines per stream)\n",
		float64(heapAfter-heapBefore)/float64(streams)/1024, float64(stackAfter-stackBefore)/float64(streams)/1024,
		float64(gAfter-gBefore)/float64(streams))
	fmt.Printf("fan-out latency (worker's write → client's receipt): p50 %v, p99 %v, max %v\n",
		pct(0.5).Round(10*time.Microsecond), pct(0.99).Round(10*time.Microsecond), pct(1).Round(10*time.Microsecond))
	return nil
}

func memstats(base string) (heap, stack, goroutines int64) {
	resp, err := http.Get(base + "/debug/memstats")
	if err != nil {
		return 0, 0, 0
	}
	defer resp.Body.Close()
	_, _ = fmt.Fscan(resp.Body, &heap, &stack, &goroutines)
	return heap, stack, goroutines
}

// rss reads a process's resident set size in bytes.
func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func startRedis(dir string) (string, func(), error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", nil, errors.New("redis-server not found on PATH")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--maxclients", "20000")
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	url := "redis://127.0.0.1:" + strconv.Itoa(port)
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(port)})
	defer c.Close()
	for i := 0; ; i++ {
		if c.Ping(context.Background()).Err() == nil {
			break
		}
		if i > 200 {
			cmd.Process.Kill()
			return "", nil, errors.New("redis-server did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return url, func() { cmd.Process.Kill(); _ = cmd.Wait() }, nil
}
