// Package builtin holds claimcheck's built-in job types — sleep, primes and
// mandelbrot — which really compute, report progress per meaningful step,
// stream their results, and stop promptly when their context is cancelled.
// They double as examples of the handler API.
package builtin

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/claimcheck/claimcheck/worker"
)

// Types returns the built-in job types.
func Types() []worker.Type {
	return []worker.Type{Sleep(), Primes(), Mandelbrot()}
}

// SleepInput is the sleep job's input.
type SleepInput struct {
	Seconds *float64 `json:"seconds"`
	Steps   *int     `json:"steps"`
}

// Sleep waits, reporting progress after each of its steps: the simplest
// long-running job, for trying the API out.
func Sleep() worker.Type {
	return worker.Type{
		Name:        "sleep",
		Description: "Waits for a number of seconds, reporting progress after each step.",
		Timeout:     65 * time.Minute,
		MaxTimeout:  2 * time.Hour,
		MaxRetry:    3,
		ContentType: "application/json",
		InputSchema: json.RawMessage(`{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "seconds": {"type": "number", "minimum": 0, "maximum": 3600, "default": 1, "title": "Seconds", "description": "How long to wait."},
    "steps": {"type": "integer", "minimum": 1, "maximum": 1000, "title": "Steps", "description": "How many progress reports; default: one per second."}
  }
}`),
		Handle: sleep,
	}
}

func sleep(ctx context.Context, t *worker.Task) error {
	var in SleepInput
	if err := t.Decode(&in); err != nil {
		return err
	}
	seconds := 1.0
	if in.Seconds != nil {
		seconds = *in.Seconds
	}
	if seconds < 0 || seconds > 3600 {
		return fmt.Errorf("seconds %v out of range: %w", seconds, worker.ErrPermanent)
	}
	steps := max(1, int(seconds+0.999999))
	if in.Steps != nil {
		steps = *in.Steps
	}
	if steps < 1 || steps > 1000 {
		return fmt.Errorf("steps %d out of range: %w", steps, worker.ErrPermanent)
	}
	step := time.Duration(seconds * float64(time.Second) / float64(steps))
	timer := time.NewTimer(step)
	defer timer.Stop()
	for i := 1; i <= steps; i++ {
		select {
		case <-ctx.Done():
			return fmt.Errorf("sleep interrupted at step %d/%d: %w", i, steps, ctx.Err())
		case <-timer.C:
		}
		t.Progress(100*float64(i)/float64(steps), fmt.Sprintf("step %d/%d", i, steps))
		timer.Reset(step)
	}
	w, err := t.Result("application/json")
	if err != nil {
		return err
	}
	return json.NewEncoder(w).Encode(map[string]float64{"slept_seconds": seconds})
}
