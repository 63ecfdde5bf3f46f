package jobs_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
)

// benchSchema is the built-in mandelbrot type's input schema (copied, so this
// domain package's tests do not import the worker): seven bounded number
// fields, the shape that made one 162-byte body cost ~0.3 CPU-s (issue 10,
// finding 3). Three fields are added so hostile inputs can be large: an
// array whose every item is compared exactly, an array of strings, and a
// field that takes anything.
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
    "y_max": {"type": "number", "minimum": -4, "maximum": 4, "default": 1.25},
    "points": {"type": "array", "items": {"type": "number", "minimum": -4, "maximum": 4}},
    "labels": {"type": "array", "items": {"type": "string", "maxLength": 20000}},
    "tree": {}
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

// BenchmarkValidateHostile1MiB validates inputs built to cost the most: the
// largest the request body allows (1 MiB), and the largest that pass the
// default 64 KiB input limit, of the costliest shapes within the other
// limits: numbers of the longest length with large exponents, each
// compared exactly against a minimum and a maximum; the most values;
// deepest nesting; longest strings. The worst of these is the validation
// CPU one request can cost.
//
//	go test -run '^$' -bench 'Validate(Normal|Hostile)' -benchtime 2s -count 3 ./internal/jobs/
func BenchmarkValidateHostile1MiB(b *testing.B) {
	const mib, limit = 1 << 20, jobs.DefaultMaxInputBytes
	// fill repeats item in {"<field>":[item,item,…]} up to size bytes or
	// n items.
	fill := func(field, item string, size, n int) string {
		var sb strings.Builder
		sb.WriteString(`{"` + field + `":[` + item)
		for i := 1; i < n && sb.Len()+len(item)+3 <= size; i++ {
			sb.WriteString("," + item)
		}
		sb.WriteString("]}")
		return sb.String()
	}
	// The longest number allowed (24 characters), exponent near the bound
	// but within float64, inside the schema's -4..4.
	longNumber := "-1.2345678901234567890123456e-300"[:19] + "e-300"
	// Values left for array items once the input object and its array
	// are counted.
	const items = jobs.DefaultMaxInputValues - 2
	const d = jobs.DefaultMaxInputDepth - 2 // the input object and "tree"
	nest := strings.Repeat("[", d) + strings.Repeat("]", d)
	for _, tc := range []struct {
		name, input string
		wantErr     bool
	}{
		{"1MiB-long-numbers", fill("points", longNumber, mib, mib), true},
		{"1MiB-exponent-1e1000000", fill("points", "1e1000000", mib, mib), true},
		{"64KiB-long-numbers-accepted", fill("points", longNumber, limit, items), false},
		{"64KiB-most-numbers-accepted", fill("points", "1e-99", limit, items), false},
		{"64KiB-one-value-too-many", fill("points", "1e-99", limit, items+1), true},
		{"64KiB-deep-nesting-accepted", fill("tree", nest, limit, items/d), false},
		{"64KiB-long-strings-accepted", fill("labels", `"`+strings.Repeat("a", jobs.DefaultMaxInputStringBytes)+`"`, limit, items), false},
	} {
		b.Run(tc.name, func(b *testing.B) { benchValidate(b, benchCatalog(b), tc.input, tc.wantErr) })
	}
}
