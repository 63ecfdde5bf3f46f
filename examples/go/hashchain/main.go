// Command hashchain is a claimcheck worker for one job type of its own,
// "hashchain": it iterates SHA-256 over a seed, streams a checkpoint line to
// the result every so many rounds, reports progress and writes the job's
// log as it goes, and saves where it got to (Task.SaveCheckpoint), so that
// a job stopped by a worker's shutdown goes on from there on the next. It is a separate Go module that uses only claimcheck's
// public packages; build and run it against claimcheck's Redis:
//
//	REDIS_URL=redis://127.0.0.1:6379/0 go run . --results-dir ../../../.claimcheck/results
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

// progress is the job's checkpoint (Task.SaveCheckpoint): how many rounds
// are done, the digest after them, and the lines the result holds so far.
// A job handed back at shutdown, or retried after its worker died, starts
// again from here instead of from the seed.
type progress struct {
	Round int      `json:"round"`
	Hash  string   `json:"hash"`
	Lines []string `json:"lines"`
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
	// h is the digest after round rounds.
	round, h := 1, sha256.Sum256([]byte(in.Seed))
	var lines []string
	resumed := false
	if p, ok := restore(t.Checkpoint(), in.Rounds); ok {
		round, lines, resumed = p.Round, p.Lines, true
		hex.Decode(h[:], []byte(p.Hash))
		for _, line := range lines {
			if _, err := io.WriteString(out, line); err != nil {
				return err
			}
		}
		t.Logf("resuming at round %d of %d", round, in.Rounds)
	} else {
		t.Logf("hashing %q for %d rounds, a checkpoint every %d", in.Seed, in.Rounds, every)
	}
	save := func() {
		b, _ := json.Marshal(progress{Round: round, Hash: hex.EncodeToString(h[:]), Lines: lines})
		if len(b) > worker.MaxCheckpointBytes {
			return // many long lines: this job starts over if it is stopped
		}
		if err := t.SaveCheckpoint(b); err != nil {
			t.Logf("checkpoint not saved: %v", err)
		}
	}
	line := func() error {
		l := fmt.Sprintf("%d %s\n", round, hex.EncodeToString(h[:]))
		if _, err := io.WriteString(out, l); err != nil {
			return err
		}
		lines = append(lines, l)
		t.Progress(100*float64(round)/float64(in.Rounds), fmt.Sprintf("round %d of %d", round, in.Rounds))
		t.Logf("checkpoint at round %d", round)
		save()
		return nil
	}
	if !resumed && (round%every == 0 || round == in.Rounds) {
		if err := line(); err != nil {
			return err
		}
	}
	for round < in.Rounds {
		// A cancel, timeout or shutdown ends ctx; look every 64Ki rounds
		// (~20 ms), not only at checkpoints, which may be a job apart.
		if round%(1<<16) == 0 {
			if err := ctx.Err(); err != nil {
				if errors.Is(context.Cause(ctx), worker.ErrShuttingDown) {
					save() // the next attempt starts from this round
				}
				return err
			}
		}
		round++
		h = sha256.Sum256(h[:])
		if round%every == 0 || round == in.Rounds {
			if err := line(); err != nil {
				return err
			}
		}
	}
	return nil
}

// restore reads a checkpoint of an earlier attempt, if it is one of this
// job's.
func restore(b []byte, rounds int) (progress, bool) {
	var p progress
	if b == nil || json.Unmarshal(b, &p) != nil || p.Round < 1 || p.Round > rounds || len(p.Hash) != 2*sha256.Size {
		return p, false
	}
	if _, err := hex.DecodeString(p.Hash); err != nil {
		return p, false
	}
	return p, true
}
