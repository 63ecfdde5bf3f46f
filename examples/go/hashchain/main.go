// Command hashchain is a claimcheck worker for one job type of its own,
// "hashchain": it iterates SHA-256 over a seed, streams a checkpoint line to
// the result every so many rounds, reports progress and writes the job's
// log as it goes. It is a separate Go module that uses only claimcheck's
// public packages; build and run it against claimcheck's Redis:
//
//	REDIS_URL=redis://127.0.0.1:6379/0 go run . --results-dir ../../../.claimcheck/results
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/claimcheck/claimcheck/worker"
)

func main() { worker.Main(hashchain()) }

// input is what a hashchain job is given.
type input struct {
	Seed        string `json:"seed"`
	Rounds      int    `json:"rounds"`
	Checkpoints int    `json:"checkpoints"`
}

// hashchain is the job type: h₀ = SHA-256(seed), hᵢ = SHA-256(hᵢ₋₁). The
// result is text/plain, one "<round> <hex digest>" line per checkpoint,
// written as each is reached, the last being round Rounds.
func hashchain() worker.Type {
	return worker.Type{
		Name:        "hashchain",
		Description: "Iterates SHA-256 over a seed, streaming a checkpoint line every rounds/checkpoints rounds.",
		InputSchema: json.RawMessage(`{
			"type": "object",
			"properties": {
				"seed": {"type": "string", "maxLength": 1024},
				"rounds": {"type": "integer", "minimum": 1, "maximum": 100000000},
				"checkpoints": {"type": "integer", "minimum": 1, "maximum": 1000}
			},
			"required": ["seed", "rounds"],
			"additionalProperties": false
		}`),
		ContentType:    "text/plain; charset=utf-8",
		Timeout:        5 * time.Minute,
		MaxRetry:       1,
		MaxResultBytes: 1 << 20,
		// A pool of its own: a worker takes jobs from the pools of its
		// types, and every worker of a pool should run all of the pool's
		// types. In "default", dev's built-in worker would dequeue
		// hashchain jobs only to hand them back.
		Pool:   "hashchain",
		Handle: run,
	}
}

func run(ctx context.Context, t *worker.Task) error {
	var in input
	if err := t.Decode(&in); err != nil {
		return err
	}
	if in.Checkpoints == 0 {
		in.Checkpoints = 10
	}
	every := max(in.Rounds/in.Checkpoints, 1)
	out, err := t.Result("text/plain; charset=utf-8")
	if err != nil {
		return err
	}
	t.Logf("hashing %q for %d rounds, a checkpoint every %d", in.Seed, in.Rounds, every)
	h := sha256.Sum256([]byte(in.Seed))
	for round := 1; round <= in.Rounds; round++ {
		if round > 1 {
			h = sha256.Sum256(h[:])
		}
		// A cancel or timeout ends ctx; look every 64Ki rounds (~20 ms),
		// not only at checkpoints, which may be a whole job apart.
		if round%(1<<16) == 0 || round%every == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if round%every != 0 && round != in.Rounds {
			continue
		}
		if _, err := fmt.Fprintf(out, "%d %s\n", round, hex.EncodeToString(h[:])); err != nil {
			return err
		}
		t.Progress(100*float64(round)/float64(in.Rounds), fmt.Sprintf("round %d of %d", round, in.Rounds))
		t.Logf("checkpoint at round %d", round)
	}
	return nil
}
