package builtin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"image/color"
	"image/png"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/worker"
	"github.com/claimcheck/claimcheck/worker/builtin"
)

func handler(t *testing.T, name string) worker.Handler {
	t.Helper()
	for _, typ := range builtin.Types() {
		if typ.Name == name {
			return typ.Handle
		}
	}
	t.Fatalf("no type %s", name)
	return nil
}

// run runs a built-in type locally and returns its progress reports,
// content type and result.
func run(t *testing.T, ctx context.Context, name, input string) ([]float64, string, []byte, error) {
	t.Helper()
	var progress []float64
	var out bytes.Buffer
	ct, err := worker.RunLocal(ctx, handler(t, name), json.RawMessage(input), func(p float64, _ string) { progress = append(progress, p) }, &out)
	return progress, ct, out.Bytes(), err
}

func assertMonotonicTo100(t *testing.T, progress []float64) {
	t.Helper()
	if len(progress) == 0 || progress[len(progress)-1] != 100 {
		t.Fatalf("progress %v does not end at 100", progress)
	}
	for i := 1; i < len(progress); i++ {
		if progress[i] < progress[i-1] {
			t.Fatalf("progress went back: %v", progress)
		}
	}
}

func TestSchemasValidate(t *testing.T) {
	types := map[string]worker.Type{}
	for _, typ := range builtin.Types() {
		types[typ.Name] = typ
	}
	for _, tc := range []struct {
		typ, input string
		ok         bool
	}{
		{"sleep", `{}`, true},
		{"sleep", `{"seconds": 2.5, "steps": 5}`, true},
		{"sleep", `{"seconds": -1}`, false},
		{"sleep", `{"seconds": 4000}`, false},
		{"sleep", `{"steps": 0}`, false},
		{"sleep", `{"minutes": 1}`, false},
		{"primes", `{"n": 1000000}`, true},
		{"primes", `{}`, false},
		{"primes", `{"n": 1.5}`, false},
		{"primes", `{"n": "10"}`, false},
		{"primes", `{"n": 20000000000}`, false},
		{"mandelbrot", `{}`, true},
		{"mandelbrot", `{"width": 640, "height": 480, "max_iter": 500, "x_min": -1, "x_max": 0}`, true},
		{"mandelbrot", `{"width": 0}`, false},
		{"mandelbrot", `{"width": 5000}`, false},
		{"mandelbrot", `{"max_iter": 0}`, false},
		{"mandelbrot", `{"zoom": 2}`, false},
	} {
		err := types[tc.typ].Validate(json.RawMessage(tc.input))
		if (err == nil) != tc.ok {
			t.Errorf("%s %s: %v", tc.typ, tc.input, err)
		}
	}
}

func naiveCount(n int64) int64 {
	var count int64
	composite := make([]bool, max(n, 2))
	for i := int64(2); i < n; i++ {
		if !composite[i] {
			count++
			for j := i * i; j < n; j += i {
				composite[j] = true
			}
		}
	}
	return count
}

func TestCountPrimes(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ n, count, largest int64 }{
		{0, 0, 0}, {1, 0, 0}, {2, 0, 0}, {3, 1, 2}, {4, 2, 3}, {10, 4, 7}, {100, 25, 97}, {1000, 168, 997},
		{1_000_000, 78498, 999983}, {10_000_000, 664579, 9999991},
		// around the first segment boundary (3 + 2·262144 = 524291)
		{524290, naiveCount(524290), 0}, {524291, naiveCount(524291), 0}, {524292, naiveCount(524292), 0},
	} {
		count, largest, err := builtin.CountPrimes(ctx, tc.n, nil)
		if err != nil || count != tc.count || (tc.largest != 0 && largest != tc.largest) {
			t.Errorf("CountPrimes(%d) = %d, %d, %v; want %d, %d", tc.n, count, largest, err, tc.count, tc.largest)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		n := r.Int64N(200_000)
		if got, _, _ := builtin.CountPrimes(ctx, n, nil); got != naiveCount(n) {
			t.Fatalf("CountPrimes(%d) = %d, naive %d", n, got, naiveCount(n))
		}
	}
}

func TestPrimesJob(t *testing.T) {
	progress, ct, out, err := run(t, context.Background(), "primes", `{"n": 2000000}`)
	if err != nil || ct != "application/json" {
		t.Fatalf("%v %s", err, ct)
	}
	var res struct{ N, Count, Largest int64 }
	if err := json.Unmarshal(out, &res); err != nil || res.N != 2000000 || res.Count != 148933 || res.Largest != 1999993 {
		t.Fatalf("result %s: %v", out, err)
	}
	assertMonotonicTo100(t, progress)
	if len(progress) > 101 {
		t.Fatalf("%d progress reports; want at most one per percent", len(progress))
	}
}

func TestSleepJob(t *testing.T) {
	progress, ct, out, err := run(t, context.Background(), "sleep", `{"seconds": 0.05, "steps": 5}`)
	if err != nil || ct != "application/json" || !bytes.Contains(out, []byte(`"slept_seconds":0.05`)) {
		t.Fatalf("%v %s %s", err, ct, out)
	}
	if len(progress) != 5 {
		t.Fatalf("progress %v: want 5 reports", progress)
	}
	assertMonotonicTo100(t, progress)
}

func TestCancellationStopsPromptly(t *testing.T) {
	for _, tc := range []struct{ name, input string }{
		{"primes", `{"n": 10000000000}`},
		{"mandelbrot", `{"width": 4096, "height": 4096, "max_iter": 100000}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			start := time.Now()
			var out bytes.Buffer
			_, err := worker.RunLocal(ctx, handler(t, tc.name), json.RawMessage(tc.input), func(float64, string) { cancel() }, &out)
			if !errors.Is(err, context.Canceled) || time.Since(start) > 5*time.Second || out.Len() != 0 {
				t.Fatalf("err %v after %v, %d result bytes", err, time.Since(start), out.Len())
			}
		})
	}
}

// sleep reports only after each step, so it is cancelled from outside.
func TestSleepCancelledFromOutside(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		_, _, _, err := run(t, ctx, "sleep", `{"seconds": 30}`)
		done <- err
	}()
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) || time.Since(start) > 5*time.Second {
		t.Fatalf("err %v after %v", err, time.Since(start))
	}
}

func TestMandelbrotJob(t *testing.T) {
	progress, ct, out, err := run(t, context.Background(), "mandelbrot", `{"width": 64, "height": 48, "max_iter": 200}`)
	if err != nil || ct != "image/png" {
		t.Fatalf("%v %s", err, ct)
	}
	img, err := png.Decode(bytes.NewReader(out))
	if err != nil || img.Bounds().Dx() != 64 || img.Bounds().Dy() != 48 {
		t.Fatalf("png: %v %v", err, img.Bounds())
	}
	black := color.RGBAModel.Convert(color.Black)
	// Default region x ∈ [-2.5, 1], y ∈ [-1.25, 1.25]: (-0.5, 0) is pixel
	// (36, 24) and inside the set; the top-left corner escapes at once.
	if got := color.RGBAModel.Convert(img.At(36, 24)); got != black {
		t.Errorf("(-0.5, 0) is %v, want black", got)
	}
	if got := color.RGBAModel.Convert(img.At(0, 0)); got == black {
		t.Error("corner (-2.5, 1.25) is black")
	}
	assertMonotonicTo100(t, progress)
	if len(progress) > 50 {
		t.Fatalf("%d progress reports; want at most 50", len(progress))
	}
}

func TestMandelbrotRefusesBadRegions(t *testing.T) {
	for _, in := range []string{
		`{"x_min": 1, "x_max": -1}`,
		`{"y_min": 0.5, "y_max": 0.5}`,
		`{"width": 4096, "height": 4097}`,
		`{"colour": "red"}`,
	} {
		if _, _, _, err := run(t, context.Background(), "mandelbrot", in); !errors.Is(err, worker.ErrPermanent) {
			t.Errorf("%s: %v, want ErrPermanent", in, err)
		}
	}
}

func BenchmarkCountPrimes1e7(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		builtin.CountPrimes(context.Background(), 10_000_000, nil)
	}
}

func BenchmarkMandelbrot640x480(b *testing.B) {
	in := builtin.MandelbrotInput{Width: 640, Height: 480, MaxIter: 500, XMin: -2.5, XMax: 1, YMin: -1.25, YMax: 1.25}
	b.ReportAllocs()
	for b.Loop() {
		builtin.RenderMandelbrot(context.Background(), in, nil)
	}
}
