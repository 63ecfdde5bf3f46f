package builtin

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/claimcheck/claimcheck/worker"
)

// MaxPrimesN bounds the primes job's n: at 1e10 the count takes a minute or
// so here and memory stays under a megabyte.
const MaxPrimesN = 10_000_000_000

// segmentOdds is how many odd numbers one sieve segment covers: 256 KiB of
// flags, which stays in L2 cache.
const segmentOdds = 256 << 10

// PrimesInput is the primes job's input.
type PrimesInput struct {
	N *int64 `json:"n"`
}

// PrimesResult is the primes job's result.
type PrimesResult struct {
	N       int64 `json:"n"`
	Count   int64 `json:"count"`
	Largest int64 `json:"largest,omitempty"`
}

// Primes counts the primes below n with a segmented sieve.
func Primes() worker.Type {
	return worker.Type{
		Name:        "primes",
		Description: "Counts the primes below n with a segmented Sieve of Eratosthenes.",
		Timeout:     10 * time.Minute,
		MaxTimeout:  time.Hour,
		MaxRetry:    3,
		ContentType: "application/json",
		InputSchema: json.RawMessage(`{
  "type": "object",
  "additionalProperties": false,
  "required": ["n"],
  "properties": {
    "n": {"type": "integer", "minimum": 0, "maximum": 10000000000, "title": "n", "description": "Count the primes below this number."}
  }
}`),
		Handle: primes,
	}
}

func primes(ctx context.Context, t *worker.Task) error {
	var in PrimesInput
	if err := t.Decode(&in); err != nil {
		return err
	}
	if in.N == nil || *in.N < 0 || *in.N > MaxPrimesN {
		return fmt.Errorf("n must be between 0 and %d: %w", int64(MaxPrimesN), worker.ErrPermanent)
	}
	n := *in.N
	lastPct := -1
	count, largest, err := CountPrimes(ctx, n, func(done, total int64) {
		// Report when the whole percentage changes: at most ~100 writes.
		if pct := int(100 * done / max(total, 1)); pct != lastPct {
			lastPct = pct
			t.Progress(float64(pct), fmt.Sprintf("sieved %d of %d", done, total))
		}
	})
	if err != nil {
		return err
	}
	w, err := t.Result("application/json")
	if err != nil {
		return err
	}
	return json.NewEncoder(w).Encode(PrimesResult{N: n, Count: count, Largest: largest})
}

// CountPrimes counts the primes p < n and finds the largest, sieving odd
// numbers in fixed segments so memory is O(√n + segment). onSegment, if not
// nil, is called after each segment with how far the sieve got. It returns
// ctx's error, wrapped, if ctx ends first.
func CountPrimes(ctx context.Context, n int64, onSegment func(done, total int64)) (count, largest int64, err error) {
	if n <= 2 {
		if onSegment != nil {
			onSegment(n, n)
		}
		return 0, 0, nil
	}
	count, largest = 1, 2 // the only even prime
	base := smallOddPrimes(int64(math.Sqrt(float64(n-1))) + 1)
	seg := make([]bool, segmentOdds)
	// Odd numbers from lo (inclusive) to hi (exclusive); flag i is lo+2i.
	for lo := int64(3); lo < n; lo += 2 * segmentOdds {
		if err := ctx.Err(); err != nil {
			return 0, 0, fmt.Errorf("sieve stopped at %d: %w", lo, err)
		}
		hi := min(lo+2*segmentOdds, n)
		size := (hi - lo + 1) / 2
		clear(seg[:size])
		for _, p := range base {
			if p*p >= hi {
				break
			}
			start := max(p*p, (lo+p-1)/p*p)
			if start%2 == 0 {
				start += p
			}
			for m := start; m < hi; m += 2 * p {
				seg[(m-lo)/2] = true
			}
		}
		for i := int64(0); i < size; i++ {
			if !seg[i] {
				count++
				largest = lo + 2*i
			}
		}
		if onSegment != nil {
			onSegment(hi, n)
		}
	}
	return count, largest, nil
}

// smallOddPrimes returns the odd primes below limit with a plain sieve; the
// segmented sieve needs them up to √n.
func smallOddPrimes(limit int64) []int64 {
	composite := make([]bool, limit+1)
	var ps []int64
	for i := int64(3); i <= limit; i += 2 {
		if composite[i] {
			continue
		}
		ps = append(ps, i)
		for j := i * i; j <= limit; j += 2 * i {
			composite[j] = true
		}
	}
	return ps
}
