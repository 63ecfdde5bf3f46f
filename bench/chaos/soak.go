package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"image/color"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Sample is one process's memory and goroutines at one time.
type Sample struct {
	At         time.Duration // since the soak started
	Proc       string
	RSS        int64
	Goroutines float64 // -1: not exposed (redis)
	// HeapInuse is go_memstats_heap_inuse_bytes (-1: not exposed): live
	// heap, to tell a growing RSS that is the Go heap's from one that is not.
	HeapInuse float64
}

// sampleProcs reads every process's VmRSS and go_goroutines.
func sampleProcs(ctx context.Context, procs []*Proc, at time.Duration) []Sample {
	hc := &http.Client{Timeout: 3 * time.Second}
	var out []Sample
	for _, p := range procs {
		pid := p.PID()
		if pid == 0 {
			continue
		}
		s := Sample{At: at, Proc: p.Name, Goroutines: -1, HeapInuse: -1}
		if f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
			s.RSS, _ = ParseVmRSS(f)
			f.Close()
		}
		if p.Metrics != "" {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.Metrics+"/metrics", nil)
			if resp, err := hc.Do(req); err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if g, err := ParseMetric(bytes.NewReader(body), "go_goroutines"); err == nil {
					s.Goroutines = g
				}
				if h, err := ParseMetric(bytes.NewReader(body), "go_memstats_heap_inuse_bytes"); err == nil {
					s.HeapInuse = h
				}
			}
		}
		out = append(out, s)
	}
	return out
}

// soakClient is one simulated client: it submits a job, follows it one of
// four ways (poll, long-poll, event stream, or cancel), and downloads and
// checks a succeeded job's result.
func soakClient(ctx context.Context, c *Client, id int, until time.Time, o *Outcome, mu *sync.Mutex, sums map[string][]string) {
	r := rand.New(rand.NewPCG(uint64(id), 7))
	for i := 0; time.Now().Before(until) && ctx.Err() == nil; i++ {
		mode := (id + i) % 4
		spec := MixedSpec(r)
		spec.MaxRetry = nil
		if mode == 3 {
			spec = SleepSpec(3)
		}
		sub, err := c.Submit(ctx, spec, fmt.Sprintf("soak-%d-%d-%s", id, i, randHex(3)), id, time.Now().Add(time.Minute))
		if err != nil {
			mu.Lock()
			o.Notes = append(o.Notes, "not accepted: "+err.Error())
			mu.Unlock()
			continue
		}
		deadline := time.Now().Add(90 * time.Second)
		var final *JobView
		switch mode {
		case 0: // poll
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if v, _ := c.Get(ctx, sub); v != nil && Terminal(v.State) {
					final = v
					break
				}
				time.Sleep(300 * time.Millisecond)
			}
		case 1: // long-poll
			etag := ""
			for time.Now().Before(deadline) && ctx.Err() == nil {
				v, a := c.LongPoll(ctx, sub, etag, 10)
				if v != nil {
					etag = a.Header.Get("ETag")
					if Terminal(v.State) {
						final = v
						break
					}
				} else if a.Status != http.StatusNotModified {
					time.Sleep(retryWait(a))
				}
			}
		case 2: // event stream, then the record
			c.Events(ctx, sub, 60*time.Second)
		case 3: // cancel a running sleep
			time.Sleep(time.Duration(200+r.IntN(800)) * time.Millisecond)
			c.Cancel(ctx, sub)
		}
		for final == nil && time.Now().Before(deadline) && ctx.Err() == nil {
			if v, _ := c.Get(ctx, sub); v != nil && Terminal(v.State) {
				final = v
				break
			}
			time.Sleep(300 * time.Millisecond)
		}
		sum, size := "", int64(0)
		status := 0
		if final != nil && final.State == "succeeded" {
			var a Answer
			sum, size, a = c.Download(ctx, sub)
			status = a.Status
		}
		mu.Lock()
		o.Accepted++
		switch {
		case ctx.Err() != nil:
		case final == nil:
			o.Stuck++
			o.Notes = append(o.Notes, fmt.Sprintf("stuck: job %s (%s)", sub.ID, spec.Variant))
		case final.State == "succeeded":
			o.Succeeded++
			if status != http.StatusOK || final.Result == nil || sum != final.Result.SHA256 || size != final.Result.Size {
				o.Differing++
				o.Notes = append(o.Notes, fmt.Sprintf("result of job %s: download %d sha256 %s", sub.ID, status, sum))
			} else {
				o.Downloaded++
				sums[spec.Variant] = append(sums[spec.Variant], sum)
			}
		case final.State == "canceled":
			o.Canceled++
		case final.State == "failed":
			o.Failed++
			msg := ""
			if final.Error != nil {
				msg = *final.Error
			}
			o.Notes = append(o.Notes, fmt.Sprintf("unexpected failure: job %s: %q", sub.ID, msg))
		}
		mu.Unlock()
	}
}

// runSoak: mixed load for opt.Soak, with every process sampled each
// opt.Sample. Expected: no failure, nothing lost or stuck, every result
// right; RSS and goroutines flat (reported: the plot shows them).
func runSoak(ctx context.Context, opt Options) (*Outcome, error) {
	o := &Outcome{}
	s, err := NewStack(ctx, opt.Bin, opt.Root, "soak", StackConfig{Workers: 2, Concurrency: 4, Users: 4})
	if err != nil {
		return o, err
	}
	defer s.Close()
	c := newClient(s)
	clients := 8
	start := time.Now()
	until := start.Add(opt.Soak)
	var mu sync.Mutex
	sums := map[string][]string{}
	var wg sync.WaitGroup
	for id := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			soakClient(ctx, c, id, until, o, &mu, sums)
		}()
	}
	var samples []Sample
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(opt.Sample)
	samples = append(samples, sampleProcs(ctx, s.Procs(), 0)...)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-done:
			break loop
		case <-tick.C:
			samples = append(samples, sampleProcs(ctx, s.Procs(), time.Since(start))...)
		}
	}
	tick.Stop()
	// One last sample once the load has stopped: what is left running.
	time.Sleep(opt.Sample)
	samples = append(samples, sampleProcs(ctx, s.Procs(), time.Since(start))...)
	o.Faults = append(o.Faults, wholeRun(c, start))
	if n := DifferingResults(sums); n > 0 {
		o.Differing += n
	}
	o.Notes = append(o.Notes, fmt.Sprintf("%d clients for %s; %d results downloaded and checked", clients, opt.Soak, o.Downloaded))
	o.Notes = append(o.Notes, flatness(samples)...)
	if err := writeCSV(opt.CSV, samples); err != nil {
		return o, err
	}
	if err := plotSamples(opt.PNG, samples, opt.Soak); err != nil {
		return o, err
	}
	o.Notes = append(o.Notes, "samples: "+opt.CSV+"; plot: "+opt.PNG)
	return o, nil
}

// series splits samples per process.
func series(samples []Sample) (names []string, by map[string][]Sample) {
	by = map[string][]Sample{}
	for _, s := range samples {
		if _, ok := by[s.Proc]; !ok {
			names = append(names, s.Proc)
		}
		by[s.Proc] = append(by[s.Proc], s)
	}
	sort.Strings(names)
	return names, by
}

// flatness reports, per process, RSS and goroutines at the start, peak and
// end, and the growth of the last quarter over the second.
func flatness(samples []Sample) []string {
	names, by := series(samples)
	var out []string
	for _, n := range names {
		ss := by[n]
		var rss, gs []float64
		peak := int64(0)
		for _, s := range ss {
			rss = append(rss, float64(s.RSS))
			gs = append(gs, s.Goroutines)
			peak = max(peak, s.RSS)
		}
		line := fmt.Sprintf("%s: RSS %.1f → %.1f MiB (peak %.1f, growth %+.0f%%)", n,
			mib(ss[0].RSS), mib(ss[len(ss)-1].RSS), mib(peak), 100*Growth(rss))
		if ss[0].Goroutines >= 0 {
			line += fmt.Sprintf("; goroutines %.0f → %.0f (growth %+.0f%%)", ss[0].Goroutines, ss[len(ss)-1].Goroutines, 100*Growth(gs))
		}
		if ss[0].HeapInuse >= 0 {
			line += fmt.Sprintf("; heap in use %.1f → %.1f MiB", ss[0].HeapInuse/(1<<20), ss[len(ss)-1].HeapInuse/(1<<20))
		}
		out = append(out, line)
	}
	return out
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func writeCSV(path string, samples []Sample) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	_ = w.Write([]string{"seconds", "process", "rss_bytes", "goroutines", "heap_inuse_bytes"})
	for _, s := range samples {
		_ = w.Write([]string{strconv.FormatFloat(s.At.Seconds(), 'f', 1, 64), s.Proc, strconv.FormatInt(s.RSS, 10),
			strconv.FormatFloat(s.Goroutines, 'f', 0, 64), strconv.FormatFloat(s.HeapInuse, 'f', 0, 64)})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// plotSamples draws RSS (MiB) and goroutines over time, one line per
// process, one panel each.
func plotSamples(path string, samples []Sample, d time.Duration) error {
	names, by := series(samples)
	minutes := d >= 3*time.Minute
	x := func(t time.Duration) float64 {
		if minutes {
			return t.Minutes()
		}
		return t.Seconds()
	}
	unit := "s"
	if minutes {
		unit = "min"
	}
	rss, gor := plot.New(), plot.New()
	rss.Title.Text = "claimcheck soak: resident memory per process"
	rss.Y.Label.Text = "RSS (MiB)"
	gor.Title.Text = "goroutines per process (go_goroutines)"
	gor.Y.Label.Text = "goroutines"
	for _, p := range []*plot.Plot{rss, gor} {
		p.X.Label.Text = "time (" + unit + ")"
		p.Y.Min = 0
		p.Legend.Top = true
		p.Legend.Left = true
		p.Add(plotter.NewGrid())
	}
	for i, n := range names {
		var m, g plotter.XYs
		for _, s := range by[n] {
			m = append(m, plotter.XY{X: x(s.At), Y: mib(s.RSS)})
			if s.Goroutines >= 0 {
				g = append(g, plotter.XY{X: x(s.At), Y: s.Goroutines})
			}
		}
		col := plotutil.Color(i)
		if l, err := plotter.NewLine(m); err == nil {
			l.Color, l.Width = col, vg.Points(1.5)
			rss.Add(l)
			rss.Legend.Add(n, l)
		}
		if len(g) > 0 {
			if l, err := plotter.NewLine(g); err == nil {
				l.Color, l.Width = col, vg.Points(1.5)
				gor.Add(l)
				gor.Legend.Add(n, l)
			}
		}
	}
	// Headroom above the lines for the legend.
	rss.Y.Max *= 1.3
	gor.Y.Max *= 1.3
	img := vgimg.NewWith(vgimg.UseWH(vg.Points(720), vg.Points(640)), vgimg.UseBackgroundColor(color.White))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadX: vg.Points(8), PadY: vg.Points(12), PadTop: vg.Points(6), PadBottom: vg.Points(6), PadLeft: vg.Points(6), PadRight: vg.Points(10)}
	canvases := plot.Align([][]*plot.Plot{{rss}, {gor}}, tiles, dc)
	rss.Draw(canvases[0][0])
	gor.Draw(canvases[1][0])
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
