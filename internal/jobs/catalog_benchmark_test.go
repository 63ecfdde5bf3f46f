package jobs_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
)

// benchSchema is the built-in mandelbrot type's input schema (copied, so this
// domain package's tests do not import the worker): seven bounded number
// fields, the shape that made one 162-byte body cost ~0.3 CPU-s (issue 10,
// finding 3).
const benchSchema = `{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "width": {"type": "integer", "minimum": 1, "maximum": 4096, "default": 640},
    "height": {"type": "integer", "minimum": 1, "maximum": 4096, "default": 480},
    "max_iter": {"type": "integer", "minimum": 1, "maximum": 100000, "default": 500},
    "x_min": {"type": "number", "minimum": -4, "maximum": 4, "default": -2.5},
    "x_max": {"type": "number", "minimum": -4, "maximum": 4, "default": 1.0},
    "y_min": {"type": "number", "minimum": -4, "maximum": 4, "default": -1.25},
    "y_max": {"type": "number", "minimum": -4, "maximum": 4, "default": 1.25}
  }
}`

func benchCatalog(b *testing.B) *jobs.Catalog {
	b.Helper()
	c, err := jobs.NewCatalog(jobs.TypeSpec{Name: "mandelbrot", Timeout: time.Minute, Schema: json.RawMessage(benchSchema)})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func benchValidate(b *testing.B, c *jobs.Catalog, input string, wantErr bool) {
	b.Helper()
	in := json.RawMessage(input)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Validate("mandelbrot", in); (err != nil) != wantErr {
			b.Fatalf("Validate = %v", err)
		}
	}
}

// BenchmarkValidateNormal is the baseline: an ordinary input, accepted.
//
//	go test -run '^$' -bench 'Validate(Normal|Hostile)' -benchtime 2s -count 3 ./internal/jobs/
func BenchmarkValidateNormal(b *testing.B) {
	benchValidate(b, benchCatalog(b),
		`{"width":800,"height":600,"max_iter":1000,"x_min":-2.25,"x_max":0.75,"y_min":-1.5,"y_max":1.5}`, false)
}

// BenchmarkValidateHostile162B is the review's body: seven 1e1000000 in
// the seven number fields (the input part of a 162-byte request).
func BenchmarkValidateHostile162B(b *testing.B) {
	benchValidate(b, benchCatalog(b),
		`{"width":1e1000000,"height":1e1000000,"max_iter":1e1000000,"x_min":1e1000000,"x_max":1e1000000,"y_min":1e1000000,"y_max":1e1000000}`, true)
}
