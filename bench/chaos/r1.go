package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// submitAll submits n jobs from gen with a few concurrent submitters and
// hands each accepted one to tr. It returns the submissions that were
// never accepted.
func submitAll(ctx context.Context, c *Client, tr *Tracker, run string, n, workers int, gen func(i int) Spec) []error {
	var next atomic.Int64
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				s, err := c.Submit(ctx, gen(i), fmt.Sprintf("%s-%d", run, i), w, time.Now().Add(2*time.Minute))
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					continue
				}
				tr.Add(s)
			}
		}()
	}
	wg.Wait()
	return errs
}

// pending counts tracked jobs not yet final (nor lost).
func pending(tr *Tracker) int {
	n := 0
	for _, j := range tr.Jobs() {
		j.mu.Lock()
		if j.Final == nil && !j.Lost {
			n++
		}
		j.mu.Unlock()
	}
	return n
}

// killer SIGKILLs one worker every interval (round robin) and restarts it
// at once, until stop is closed. It returns the kill times.
func killer(ctx context.Context, workers []*Proc, interval time.Duration, stop <-chan struct{}) []time.Time {
	var kills []time.Time
	t := time.NewTicker(interval)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return kills
		case <-stop:
			return kills
		case <-t.C:
		}
		w := workers[i%len(workers)]
		kills = append(kills, time.Now())
		w.Kill()
		if err := w.Start(); err != nil {
			logf("restart %s: %v", w.Name, err)
		}
	}
}

// runR1: mixed jobs while a worker is SIGKILLed every 2 s and restarted.
// Expected: every job ends; a job fails only with "worker lost" (its
// worker was killed on its last attempt: max_retry 0, or four kills in a
// row); every result's bytes match its record and every other job of the
// same input. Every other job has a webhook (completed only) to a receiver
// on loopback: every ended one gets a completed event showing its final
// state, under one webhook-id, validly signed, and no other job gets any.
func runR1(ctx context.Context, opt Options) (*Outcome, error) {
	o := &Outcome{}
	s, err := NewStack(ctx, opt.Bin, opt.Root, "r1", StackConfig{Workers: 3, Concurrency: 4, Users: 4, Webhooks: true})
	if err != nil {
		return o, err
	}
	defer s.Close()
	hooks, err := NewReceiver(s.APIURL + "/.well-known/jwks.json")
	if err != nil {
		return o, err
	}
	defer hooks.Close()
	c := newClient(s)
	tr := NewTracker(ctx, c)
	r := rand.New(rand.NewPCG(1, 2))
	var genMu sync.Mutex
	// Every other job has a webhook for its completed event.
	gen := func(i int) Spec {
		genMu.Lock()
		defer genMu.Unlock()
		sp := MixedSpec(r)
		if i%2 == 0 {
			sp.Webhook = hooks.URL
		}
		return sp
	}

	stopKills := make(chan struct{})
	killsDone := make(chan []time.Time)
	go func() { killsDone <- killer(ctx, s.Workers, 2*time.Second, stopKills) }()
	t0 := time.Now()
	errs := submitAll(ctx, c, tr, "r1-"+randHex(4), opt.Jobs, 8, gen)
	for _, e := range errs {
		o.Notes = append(o.Notes, "not accepted: "+e.Error())
	}
	// Kills go on while the backlog runs, up to a limit, so that jobs meet
	// the fault at every stage (queued, running, retrying).
	limit := 150 * time.Second
	if opt.Short {
		limit = 15 * time.Second
	}
	_ = waitFor(ctx, limit-time.Since(t0), "backlog", func() bool { return pending(tr) == 0 })
	close(stopKills)
	kills := <-killsDone
	o.Notes = append(o.Notes, fmt.Sprintf("%d worker SIGKILLs over %s (one every 2 s, restarted at once)", len(kills), time.Since(t0).Round(time.Second)))
	for _, w := range s.Workers {
		if err := WaitReady(ctx, w, 30*time.Second); err != nil {
			return o, err
		}
	}
	// Asynq re-runs a killed worker's task 60–116 s after the kill.
	tr.Drain(180 * time.Second)
	// A completed event's first retry comes 5 s after a failed attempt; a
	// delivery whose worker was killed is re-run when its lease ends, as
	// the jobs' tasks are (so up to ~120 s after the last kill).
	wait := 30 * time.Second
	if len(kills) > 0 {
		wait = max(wait, time.Until(kills[len(kills)-1].Add(125*time.Second)))
	}
	hooks.CheckWebhooks(ctx, o, tr, wait)
	tr.Account(ctx, o, workerLost)
	tr.VerifyResults(ctx, o)
	tr.Retried(o)
	o.Recoveries = tr.Recoveries(kills)
	o.Faults = append(o.Faults, wholeRun(c, t0))
	return o, nil
}

// wholeRun is every answer of the scenario as one window: no route may
// answer a 5xx other than 503, nor a 503 without Retry-After, at any time.
func wholeRun(c *Client, from time.Time) Fault {
	to := time.Now()
	return Fault{Name: "whole run", From: from, To: to, Routes: SummarizeStatuses(c.Seen.Window(from, to))}
}
