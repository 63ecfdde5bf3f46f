// Command chaos is claimcheck's fault harness. It builds the claimcheck
// binary, starts a private redis-server (AOF, appendfsync everysec,
// noeviction) and the real services as separate OS processes — api,
// progress and N workers — submits jobs over HTTP with API keys, follows
// them with job tokens, downloads and checks every result, and injects
// faults: workers SIGKILLed, Redis SIGKILLed and restarted from its AOF,
// Redis frozen (SIGSTOP) and away, asynq leases deleted, results stores
// full or read-only, workers SIGTERMed mid-job, and a soak. It prints a
// table of figures per scenario and exits 1 when an invariant breaks (a job
// lost or stuck, a result whose bytes differ, an unexpected failure, a 5xx
// other than 503, a 503 without Retry-After, a request slower than the
// bound during a fault).
//
//	go run ./bench/chaos -short                 # the CI variant, ~60–90 s
//	go run ./bench/chaos                        # every scenario, long
//	go run ./bench/chaos -scenarios r1 -jobs 1000
//	go run ./bench/chaos -scenarios soak -soak 30m -png docs/reliability-soak.png
//
// docs/RELIABILITY.md describes each scenario and the figures of a run.
// It needs redis-server on PATH; the results-store scenarios mount a tmpfs
// and a read-only bind mount, which needs root (they are skipped, and say
// so, without it).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options are the harness's flags.
type Options struct {
	Short     bool
	Jobs      int
	Soak      time.Duration
	Sample    time.Duration
	Outage    time.Duration
	CSV, PNG  string
	Keep      bool
	Root      string
	Bin       string
	Scenarios []string
	Strict    bool
	Parallel  bool
}

// Scenario is one named experiment.
type Scenario struct {
	Name string
	// What it does, for -list.
	Doc string
	Run func(ctx context.Context, opt Options) (*Outcome, error)
}

var scenarios = []Scenario{
	{"r1", "mixed jobs while a worker is SIGKILLed every 2 s and restarted", runR1},
	{"r2", "Redis SIGKILLed mid-run and restarted from its AOF", runR2},
	{"aofloss", "Redis's last second of AOF lost (a machine crash under appendfsync everysec)", runAOFLoss},
	{"stop", "Redis frozen with SIGSTOP, then SIGCONT", runStop},
	{"down", "Redis killed and kept away, then restarted", runDown},
	{"lease", "an asynq lease deleted while its worker is SIGKILLed (asynq #1144)", runLease},
	{"readonly", "the results store turns read-only mid-run", runReadOnly},
	{"full", "the results store fills up mid-run", runFull},
	{"sigterm", "a worker SIGTERMed mid-job", runSigterm},
	{"soak", "mixed submit/poll/SSE/download/cancel load, RSS and goroutines sampled", runSoak},
	{"scale", "2 gateways, 2 apis, 2 progress, 3 workers on a 3-primary Redis Cluster with results in S3; one of each SIGKILLed", runScale},
}

// longOnly are left out of -short unless named: aofloss's rolled-back
// records wait for Asynq's recoverer (a minute or two), which would double
// the CI run.
var longOnly = map[string]bool{"aofloss": true}

func main() {
	var opt Options
	var names string
	var list bool
	flag.BoolVar(&opt.Short, "short", false, "the CI variant: fewer jobs, shorter faults and soak (~60–90 s in all)")
	flag.StringVar(&names, "scenarios", "", "comma-separated scenarios to run (default all; -list names them)")
	flag.BoolVar(&list, "list", false, "list the scenarios and exit")
	flag.IntVar(&opt.Jobs, "jobs", 0, "r1: jobs to submit (default 1000, -short 100)")
	flag.DurationVar(&opt.Soak, "soak", 0, "soak: how long (default 30m, -short 8s)")
	flag.DurationVar(&opt.Sample, "sample", 0, "soak: sampling interval (default 10s, -short 1s)")
	flag.DurationVar(&opt.Outage, "outage", 0, "stop, down: how long Redis is away (default 30s, -short 5s)")
	flag.StringVar(&opt.CSV, "csv", "", "soak: write the samples here (default: in the run's temp dir)")
	flag.StringVar(&opt.PNG, "png", "", "soak: plot the samples here (default: in the run's temp dir)")
	flag.BoolVar(&opt.Keep, "keep", false, "keep the temp dir (logs, data) even when every invariant holds")
	flag.StringVar(&opt.Bin, "bin", "", "use this claimcheck binary instead of building one")
	flag.IntVar(&longPollWait, "wait", 10, "seconds each of the tracker's long-polls waits for a change (Prefer: wait)")
	flag.BoolVar(&opt.Strict, "strict", false, "count the violations of known issues (known.go) as failures too")
	flag.BoolVar(&opt.Parallel, "parallel", false, "run the scenarios at once, each on its own stack (default with -short: it keeps the CI run near a minute)")
	flag.Parse()
	if list {
		for _, s := range scenarios {
			fmt.Printf("%-9s %s\n", s.Name, s.Doc)
		}
		return
	}
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "parallel" })
	if opt.Short && !parallelSet {
		opt.Parallel = true
	}
	opt.defaults()
	if names != "" {
		opt.Scenarios = strings.Split(names, ",")
	}
	os.Exit(run(opt))
}

func (o *Options) defaults() {
	pick := func(d *time.Duration, long, short time.Duration) {
		if *d == 0 {
			*d = long
			if o.Short {
				*d = short
			}
		}
	}
	if o.Jobs == 0 {
		o.Jobs = 1000
		if o.Short {
			o.Jobs = 100
		}
	}
	pick(&o.Soak, 30*time.Minute, 8*time.Second)
	pick(&o.Sample, 10*time.Second, time.Second)
	// Short: under the reconciler's 10 s heartbeat cutoff, so that a
	// running job does not lose its attempt and the run stays near a
	// minute (the long run shows what a longer outage costs).
	pick(&o.Outage, 30*time.Second, 5*time.Second)
}

func run(opt Options) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer killAll()
	go func() {
		<-ctx.Done()
		killAll()
		// The scenarios notice and print what they have; if one does
		// not in time, leave anyway (every child is already gone).
		time.Sleep(20 * time.Second)
		fmt.Fprintln(os.Stderr, "chaos: interrupted")
		os.Exit(130)
	}()
	root, err := os.MkdirTemp("", "claimcheck-chaos-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return 2
	}
	opt.Root = root
	if opt.CSV == "" {
		opt.CSV = filepath.Join(root, "soak.csv")
	}
	if opt.PNG == "" {
		opt.PNG = filepath.Join(root, "soak.png")
	}
	if opt.Bin == "" {
		opt.Bin = filepath.Join(root, "claimcheck")
		logf("building claimcheck into %s", opt.Bin)
		build := exec.CommandContext(ctx, "go", "build", "-o", opt.Bin, "./cmd/claimcheck")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "chaos: build claimcheck (run from the repository root):", err)
			return 2
		}
	}
	var todo []Scenario
	for _, s := range scenarios {
		named := slices.Contains(opt.Scenarios, s.Name)
		if len(opt.Scenarios) == 0 && !(opt.Short && longOnly[s.Name]) || named {
			todo = append(todo, s)
		}
	}
	outs := make([]*Outcome, len(todo))
	one := func(i int) {
		s := todo[i]
		logf("scenario %s: %s", s.Name, s.Doc)
		t0 := time.Now()
		o, err := s.Run(ctx, opt)
		if o == nil {
			o = &Outcome{}
		}
		o.Name, o.Duration = s.Name, time.Since(t0)
		if err != nil {
			o.Violations = append(o.Violations, "harness: "+err.Error())
		}
		o.Check()
		if !opt.Strict {
			applyKnown(o, knownIssues)
		}
		logf("scenario %s done in %s: %d violation(s)", s.Name, o.Duration.Round(time.Second), len(o.Violations))
		outs[i] = o
	}
	start := time.Now()
	if opt.Parallel {
		var wg sync.WaitGroup
		for i := range todo {
			wg.Add(1)
			go func() { defer wg.Done(); one(i) }()
		}
		wg.Wait()
	} else {
		for i := range todo {
			if ctx.Err() != nil {
				outs = outs[:i]
				break
			}
			one(i)
		}
	}
	failed := false
	for _, o := range outs {
		failed = failed || len(o.Violations) > 0
	}
	fmt.Println()
	WriteTable(os.Stdout, outs)
	if ctx.Err() != nil {
		fmt.Printf("\nchaos: interrupted: the figures above are incomplete; data and logs in %s\n", root)
		return 130
	}
	fmt.Printf("\ntotal %s; data and logs in %s\n", time.Since(start).Round(time.Second), root)
	if failed {
		fmt.Println("chaos: FAIL (an invariant broke; logs kept)")
		return 1
	}
	if !opt.Keep {
		os.RemoveAll(root)
	}
	fmt.Println("chaos: ok")
	return 0
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s chaos: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}
